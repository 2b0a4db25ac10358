/*
 * The GEMM for affine-quantized weights (MLX's format: w = scale * q + bias per group of
 * group_size inputs), computed as MLX's GPU kernels compute it, without rounding w:
 *
 *   y[m][n] = sum_g  scale[n][g] * (sum_{k in g} x[m][k] * q[n][k])  +  bias[n][g] * xsum[m][g]
 *
 * where xsum[m][g] is the float32 sum of x over the group. The codes q (integers below 256) are
 * exact in bfloat16, and x is split into two bfloat16 parts (see split_row in _bf16_gemm.c), so
 * the inner sums are float32-accurate; scales and biases are applied in float32.
 *
 * Layouts: codes as bfloat16 in the weight-panel layout of _bf16_gemm.c; scales and biases per
 * panel [groups][NR] float32; x in blocks of MRQ rows, [kp][MRQ][2] words, and xsum [groups][MRQ]
 * per block. MRQ is 6: each row needs four accumulators (the group's and the total, two halves
 * of the panel), and four more registers hold the group's scales and biases.
 */
#include "_gemm.h"

#define MRQ 6
#define MCQ (MRQ * 32) /* rows of x per pass over the weights, as MC in _bf16_gemm.c */

typedef struct {
    const uint32_t *q;
    uint16_t *out;
    int n, k, bits, panel_begin, panel_end;
} codes_job_t;

static void *pack_codes_panels(void *arg) {
    const codes_job_t *j = (const codes_job_t *)arg;
    size_t kp = (size_t)j->k / 2;
    int shift = j->bits == 2 ? 4 : j->bits == 4 ? 3 : 2; /* log2 of the codes per word */
    size_t words = (size_t)j->k >> shift;
    uint32_t mask = (1u << j->bits) - 1, last = (1u << shift) - 1;
    for (int pi = j->panel_begin; pi < j->panel_end; pi++) {
        uint32_t *dst = (uint32_t *)(j->out + (size_t)pi * kp * NR * 2);
        for (int c = 0; c < NR; c++) {
            int col = pi * NR + c;
            const uint32_t *row = col < j->n ? j->q + (size_t)col * words : NULL;
            for (size_t p = 0; p < kp; p++) {
                uint32_t pair = 0;
                for (int h = 0; h < 2 && row; h++) {
                    size_t i = 2 * p + h;
                    uint32_t code = (row[i >> shift] >> (j->bits * (i & last))) & mask;
                    /* A small integer as bfloat16: its float32 bits' upper half, exactly. */
                    union { float f; uint32_t u; } v = {.f = (float)code};
                    pair |= (v.u >> 16) << (16 * h);
                }
                dst[p * NR + c] = pair;
            }
        }
    }
    return NULL;
}

/* q: [n][k * bits / 32] MLX-packed codes (bits 2, 4 or 8; k even) into bfloat16 panels. */
void lz_pack_codes(const uint32_t *q, int n, int k, int bits, uint16_t *out, int threads) {
    if (n <= 0 || k <= 0) return; /* no panels: no job to run */
    int panels = (n + NR - 1) / NR;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    threads = threads > panels ? panels : threads;
    codes_job_t jobs[MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        jobs[t] = (codes_job_t){q, out, n, k, bits, (int)((long)panels * t / threads),
                                (int)((long)panels * (t + 1) / threads)};
    }
    run_threads(pack_codes_panels, jobs, sizeof(codes_job_t), threads);
}

/* v: [n][groups] float32 (scales or biases) into [panels][groups][NR], zero past n. */
void lz_pack_groups(const float *v, int n, int groups, float *out) {
    int panels = (n + NR - 1) / NR;
    for (int pi = 0; pi < panels; pi++) {
        for (int g = 0; g < groups; g++) {
            for (int c = 0; c < NR; c++) {
                int col = pi * NR + c;
                out[((size_t)pi * groups + g) * NR + c] = col < n ? v[(size_t)col * groups + g] : 0;
            }
        }
    }
}

static inline __attribute__((always_inline)) AVX512_BF16 void microkernel_q(
    int mr, const uint32_t *a, const float *xsum, const uint16_t *b, const float *scales,
    const float *biases, int groups, int pairs, float *c, size_t ldc, int ncols,
    const float *bias) {
    __m512 tot0[MRQ], tot1[MRQ];
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
        tot0[r] = _mm512_setzero_ps();
        tot1[r] = _mm512_setzero_ps();
    }
    for (int g = 0; g < groups; g++) {
        __m512 acc0[MRQ], acc1[MRQ];
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            acc0[r] = _mm512_setzero_ps();
            acc1[r] = _mm512_setzero_ps();
        }
        for (size_t p = (size_t)g * pairs; p < (size_t)(g + 1) * pairs; p++) {
            __m512i b0 = _mm512_loadu_si512((const void *)(b + p * 64));
            __m512i b1 = _mm512_loadu_si512((const void *)(b + p * 64 + 32));
            _mm_prefetch((const char *)(b + p * 64 + 2048), _MM_HINT_T0);
            _mm_prefetch((const char *)(b + p * 64 + 2048 + 32), _MM_HINT_T0);
#pragma GCC unroll 6
            for (int r = 0; r < mr; r++) {
#pragma GCC unroll 2
                for (int part = 0; part < 2; part++) {
                    __m512i av = _mm512_set1_epi32((int)a[(p * MRQ + r) * 2 + part]);
                    acc0[r] = _mm512_dpbf16_ps(acc0[r], (__m512bh)av, (__m512bh)b0);
                    acc1[r] = _mm512_dpbf16_ps(acc1[r], (__m512bh)av, (__m512bh)b1);
                }
            }
        }
        __m512 s0 = _mm512_loadu_ps(scales + g * NR), s1 = _mm512_loadu_ps(scales + g * NR + 16);
        __m512 t0 = _mm512_loadu_ps(biases + g * NR), t1 = _mm512_loadu_ps(biases + g * NR + 16);
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            __m512 xs = _mm512_set1_ps(xsum[g * MRQ + r]);
            tot0[r] = _mm512_fmadd_ps(acc0[r], s0, _mm512_fmadd_ps(xs, t0, tot0[r]));
            tot1[r] = _mm512_fmadd_ps(acc1[r], s1, _mm512_fmadd_ps(xs, t1, tot1[r]));
        }
    }
    store_tile(mr, tot0, tot1, c, ldc, ncols, bias);
}

typedef void (*kernel_q_fn)(const uint32_t *, const float *, const uint16_t *, const float *,
                            const float *, int, int, float *, size_t, int, const float *);
#define KERNEL_Q(R)                                                                            \
    static AVX512_BF16 void kernel_q_##R(const uint32_t *a, const float *xsum, const uint16_t *b, \
                                         const float *s, const float *t, int groups, int pairs, \
                                         float *c, size_t ldc, int ncols, const float *bias) {  \
        microkernel_q(R, a, xsum, b, s, t, groups, pairs, c, ldc, ncols, bias);                 \
    }
KERNEL_Q(1) KERNEL_Q(2) KERNEL_Q(3) KERNEL_Q(4) KERNEL_Q(5) KERNEL_Q(6)
static const kernel_q_fn kernels_q[MRQ + 1] = {NULL,         kernel_q_1, kernel_q_2, kernel_q_3,
                                               kernel_q_4, kernel_q_5, kernel_q_6};

typedef struct {
    const uint32_t *x;
    const float *xsum, *scales, *biases, *bias;
    const uint16_t *codes;
    float *y;
    int m, n, groups, pairs;
    size_t kp;
    tiles_t *tiles;
} q_job_t;

static AVX512_BF16 void *run_q_job(void *arg) {
    const q_job_t *j = (const q_job_t *)arg;
    /* Blocks of MCQ rows: a long prompt's packed x stays in cache while the weights stream by,
     * instead of being read again from memory for every panel. Tiles (and so results) are the
     * same as without blocks: MCQ is a multiple of MRQ. */
    int block, begin, end;
    while (take_tiles(j->tiles, &block, &begin, &end)) {
        int mc = block * MCQ, mc_end = j->m < mc + MCQ ? j->m : mc + MCQ;
        for (int pi = begin; pi < end; pi++) {
            const uint16_t *w = j->codes + (size_t)pi * j->kp * NR * 2;
            const float *s = j->scales + (size_t)pi * j->groups * NR;
            const float *t = j->biases + (size_t)pi * j->groups * NR;
            int n0 = pi * NR;
            int ncols = j->n - n0 < NR ? j->n - n0 : NR;
            const float *bias = j->bias ? j->bias + n0 : NULL;
            for (int m0 = mc; m0 < mc_end; m0 += MRQ) {
                int mr = mc_end - m0 < MRQ ? mc_end - m0 : MRQ;
                kernels_q[mr](j->x + (size_t)m0 * j->kp * 2, j->xsum + (size_t)m0 * j->groups, w,
                              s, t, j->groups, j->pairs, j->y + (size_t)m0 * j->n + n0,
                              (size_t)j->n, ncols, bias);
            }
        }
    }
    return NULL;
}

/* y[m][n] = x[m][k] @ (scale * q + bias)^T (+ linear bias), codes packed by lz_pack_codes and
 * scales/biases by lz_pack_groups; k a multiple of the (even) group size. 0, or 1 on no memory. */
int lz_gemm_affine(const float *x, int m, int k, const uint16_t *codes, const float *scales,
                   const float *biases, int group_size, int n, const float *bias, float *y,
                   int threads) {
    if (m <= 0 || n <= 0) return 0; /* nothing to multiply: no job to hand the threads */
    size_t kp = (size_t)k / 2;
    int groups = k / group_size;
    size_t blocks = (size_t)(m + MRQ - 1) / MRQ;
    uint32_t *xp = (uint32_t *)aligned_alloc(64, (blocks * MRQ * kp * 8 + 63) / 64 * 64);
    float *xsum = (float *)calloc(blocks * MRQ * groups, sizeof(float));
    uint16_t *scratch = (uint16_t *)malloc(kp * 8 + 64);
    if (!xp || !xsum || !scratch) {
        free(xp);
        free(xsum);
        free(scratch);
        return 1;
    }
    pack_x(x, m, k, 2, MRQ, xp, kp, scratch);
    free(scratch);
    for (int r = 0; r < m; r++) {
        float *dst = xsum + (size_t)(r / MRQ) * MRQ * groups + (r % MRQ);
        for (int g = 0; g < groups; g++) {
            const float *src = x + (size_t)r * k + (size_t)g * group_size;
            float sum = 0;
            for (int i = 0; i < group_size; i++) sum += src[i];
            dst[g * MRQ] = sum;
        }
    }
    int panels = (n + NR - 1) / NR;
    if ((double)m * k * n * 2 < 5e5) threads = 1;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    threads = threads > panels ? panels : threads;
    tiles_t tiles = tiles_for((m + MCQ - 1) / MCQ, panels, threads);
    q_job_t job = {xp, xsum, scales, biases, bias, codes, y, m, n, groups, group_size / 2, kp,
                   &tiles};
    run_threads(run_q_job, &job, 0, threads); /* every thread runs the one job: it takes tiles */
    free(xp);
    free(xsum);
    return 0;
}
