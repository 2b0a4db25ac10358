/* Shared by lazarus's CPU GEMMs: _bf16_gemm.c (bfloat16 weights) and _affine_gemm.c (affine
 * quantized weights). See _bf16_gemm.c for the layouts. */
#ifndef LAZARUS_GEMM_H
#define LAZARUS_GEMM_H

#define _GNU_SOURCE
#include <Python.h>
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

#define NR 32 /* output columns per weight panel */
#define MAX_THREADS 64
#define AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

/* x[m][k] float32 -> bfloat16 pairs in blocks of rb rows, [kp][rb][parts] words per block. */
AVX512_BF16 void pack_x(const float *x, int m, int k, int parts, int rb, uint32_t *out, size_t kp,
                        uint16_t *scratch);

/* Runs fn on jobs[0..threads) (job_size bytes each): 1.. on new threads, 0 on this one. */
void run_threads(void *(*fn)(void *), void *jobs, size_t job_size, int threads);

#endif
