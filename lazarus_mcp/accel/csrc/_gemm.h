/* Shared by lazarus's CPU GEMMs: _bf16_gemm.c (bfloat16 weights) and _affine_gemm.c (affine
 * quantized weights). See _bf16_gemm.c for the layouts. */
#ifndef LAZARUS_GEMM_H
#define LAZARUS_GEMM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <Python.h>
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NR 32 /* output columns per weight panel */
#define MAX_THREADS 64
#define AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

/* Writes mr rows of a tile, two registers of 16 columns each, plus the bias, to c (row stride
 * ldc); of the tile's NR columns the first ncols are written. */
static inline __attribute__((always_inline)) AVX512_BF16 void store_tile(
    int mr, const __m512 *acc0, const __m512 *acc1, float *c, size_t ldc, int ncols,
    const float *bias) {
    __mmask16 m0 = ncols >= 16 ? 0xFFFF : (__mmask16)((1u << ncols) - 1);
    __mmask16 m1 = ncols >= 32 ? 0xFFFF : ncols <= 16 ? 0 : (__mmask16)((1u << (ncols - 16)) - 1);
    __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 14
    for (int r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(c + r * ldc, m0, _mm512_add_ps(acc0[r], bias0));
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, _mm512_add_ps(acc1[r], bias1));
    }
}

/* x[m][k] float32 -> bfloat16 pairs in blocks of rb rows, [kp][rb][parts] words per block. */
AVX512_BF16 void pack_x(const float *x, int m, int k, int parts, int rb, uint32_t *out, size_t kp,
                        uint16_t *scratch);

/* The tiles of a GEMM, handed out as the threads take them: tasks are [row block][chunk of
 * panels], row block major. A static split (each thread a fixed range of panels) made every
 * GEMM wait for its slowest thread, and on a machine shared with other work a thread that lost
 * its core for a time slice (milliseconds) held the whole matmul; taken as they come, the
 * tiles of a descheduled thread go to the others. Every tile is computed alike whoever takes
 * it, so the results do not depend on the schedule. */
typedef struct {
    int next; /* the next task, taken atomically */
    int tasks, chunks, chunk, panels;
} tiles_t;

static inline tiles_t tiles_for(int row_blocks, int panels, int threads) {
    int chunk = panels / (threads * 8);
    chunk = chunk < 1 ? 1 : chunk;
    int chunks = (panels + chunk - 1) / chunk;
    return (tiles_t){0, row_blocks * chunks, chunks, chunk, panels};
}

/* Takes the next task: 0 when none is left, else its row block and panels [begin, end). */
static inline int take_tiles(tiles_t *t, int *block, int *begin, int *end) {
    int task = __atomic_fetch_add(&t->next, 1, __ATOMIC_RELAXED);
    if (task >= t->tasks) return 0;
    *block = task / t->chunks;
    *begin = task % t->chunks * t->chunk;
    *end = *begin + t->chunk < t->panels ? *begin + t->chunk : t->panels;
    return 1;
}

/* Runs fn on jobs[0..threads) (job_size bytes each; job_size 0: every thread the same job):
 * 0 on this thread, the others on the helper threads kept for the process (_threads.c). */
void run_threads(void *(*fn)(void *), void *jobs, size_t job_size, int threads);

#endif
