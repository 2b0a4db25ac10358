/*
 * The float32 GEMM on bfloat16 weights: y[m][n] = x[m][k] @ W[n][k]^T (+ bias), with x, y and
 * the arithmetic in float32 and W the packed bfloat16 weights of _bf16_gemm.c, widened to
 * float32 in registers as they are read.
 *
 * Why beside the bfloat16 kernel: the float32-accurate way to use the bfloat16 dot products
 * splits x in two (hi + lo) and computes twice the products. That costs as much arithmetic as
 * float32 FMAs on CPUs whose VDPBF16PS runs at the FMA rate (AMD Zen 4), and twice as much on
 * those where it runs on one port only (Intel Sapphire Rapids: the bfloat16x2 path was ~2.4x
 * slower than MKL's sgemm at hundreds of rows). Here the weights are read as stored (half the
 * bytes of float32 weights) and widened exactly (a bfloat16 is the top half of its float32:
 * a shift for the even input of a pair, a mask for the odd one, four register operations per
 * 32 columns and 2 inputs, shared by every row of the tile), and x is used in full float32, so
 * the result is at least as accurate as the split's and nothing extra is kept in memory.
 *
 * Layouts: W as lz_pack packs it (panels of NR = 32 columns, [kp][32][2] bfloat16 each); x in
 * blocks of MRW rows, [kp][MRW][2] floats per block, so a tile's rows are read contiguously.
 */
#include "_gemm.h"

#define MRW 12          /* rows per tile: 24 accumulators + 4 widened weight registers */
#define MCW (MRW * 16)  /* rows of x per pass over a thread's panels */

/* mr rows of packed x times one weight panel, into c (row stride ldc), ncols <= NR valid. */
static inline __attribute__((always_inline)) AVX512_BF16 void microkernel_w(
    int mr, const float *a, const uint16_t *b, size_t kp, float *c, size_t ldc, int ncols,
    const float *bias) {
    __m512 acc0[MRW], acc1[MRW];
    const __m512i odd = _mm512_set1_epi32((int)0xFFFF0000u);
#pragma GCC unroll 12
    for (int r = 0; r < mr; r++) {
        acc0[r] = _mm512_setzero_ps();
        acc1[r] = _mm512_setzero_ps();
    }
    for (size_t p = 0; p < kp; p++) {
        __m512i b0 = _mm512_loadu_si512((const void *)(b + p * 64));
        __m512i b1 = _mm512_loadu_si512((const void *)(b + p * 64 + 32));
        _mm_prefetch((const char *)(b + p * 64 + 2048), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + p * 64 + 2048 + 32), _MM_HINT_T0);
        __m512 even0 = _mm512_castsi512_ps(_mm512_slli_epi32(b0, 16));
        __m512 odd0 = _mm512_castsi512_ps(_mm512_and_si512(b0, odd));
        __m512 even1 = _mm512_castsi512_ps(_mm512_slli_epi32(b1, 16));
        __m512 odd1 = _mm512_castsi512_ps(_mm512_and_si512(b1, odd));
        const float *ap = a + p * MRW * 2;
#pragma GCC unroll 12
        for (int r = 0; r < mr; r++) {
            __m512 x0 = _mm512_set1_ps(ap[2 * r]);
            __m512 x1 = _mm512_set1_ps(ap[2 * r + 1]);
            acc0[r] = _mm512_fmadd_ps(x0, even0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(x0, even1, acc1[r]);
            acc0[r] = _mm512_fmadd_ps(x1, odd0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(x1, odd1, acc1[r]);
        }
    }
    store_tile(mr, acc0, acc1, c, ldc, ncols, bias);
}

typedef void (*kernel_w_fn)(const float *, const uint16_t *, size_t, float *, size_t, int,
                            const float *);
#define KERNEL_W(R)                                                                           \
    static AVX512_BF16 void kernel_w_##R(const float *a, const uint16_t *b, size_t kp, float *c, \
                                      size_t ldc, int ncols, const float *bias) {             \
        microkernel_w(R, a, b, kp, c, ldc, ncols, bias);                                      \
    }
KERNEL_W(1) KERNEL_W(2) KERNEL_W(3) KERNEL_W(4) KERNEL_W(5) KERNEL_W(6) KERNEL_W(7) KERNEL_W(8)
KERNEL_W(9) KERNEL_W(10) KERNEL_W(11) KERNEL_W(12)
static const kernel_w_fn kernels_w[MRW + 1] = {
    NULL, kernel_w_1, kernel_w_2, kernel_w_3, kernel_w_4, kernel_w_5, kernel_w_6,
    kernel_w_7, kernel_w_8, kernel_w_9, kernel_w_10, kernel_w_11, kernel_w_12};

/* x[m][k] -> blocks of MRW rows, [kp][MRW][2] floats each; the odd input past k is zero.
 * Written a block at a time in the order of the packed layout (each pair of a row is 8 bytes
 * copied as one), so the stores are sequential and only the block's MRW row reads interleave.
 * Against a row at a time, one thread: a call that is mostly packing (n = 32) 1.13-1.37x faster
 * (1.59 against 2.18 ms at 256 x 5632), the k/v projections (256 x 2048 -> 256, where packing
 * was ~11% of the call) 1.16x, the wide layers ~1%; results bitwise equal. */
static void pack_rows(const float *x, int m, int k, size_t kp, float *out) {
    size_t whole = (size_t)k / 2; /* pairs with both inputs inside k */
    for (int b = 0; b < m; b += MRW) {
        int rows = m - b < MRW ? m - b : MRW;
        const float *block = x + (size_t)b * k;
        float *dst = out + (size_t)b * kp * 2;
        for (size_t p = 0; p < whole; p++) {
            for (int r = 0; r < rows; r++) {
                memcpy(dst + (p * MRW + r) * 2, block + (size_t)r * k + 2 * p, 2 * sizeof(float));
            }
        }
        for (size_t p = whole; p < kp; p++) { /* k odd: the last input, then a zero */
            for (int r = 0; r < rows; r++) {
                dst[(p * MRW + r) * 2] = block[(size_t)r * k + 2 * p];
                dst[(p * MRW + r) * 2 + 1] = 0.0f;
            }
        }
    }
}

typedef struct {
    const float *x;
    const uint16_t *w;
    const float *bias;
    float *y;
    int m, n;
    size_t kp;
    tiles_t *tiles;
} job_w_t;

static AVX512_BF16 void *run_job_w(void *arg) {
    const job_w_t *j = (const job_w_t *)arg;
    int block, begin, end;
    while (take_tiles(j->tiles, &block, &begin, &end)) {
        int mc = block * MCW, mc_end = j->m < mc + MCW ? j->m : mc + MCW;
        for (int pi = begin; pi < end; pi++) {
            const uint16_t *w = j->w + (size_t)pi * j->kp * NR * 2;
            int n0 = pi * NR;
            int ncols = j->n - n0 < NR ? j->n - n0 : NR;
            const float *bias = j->bias ? j->bias + n0 : NULL;
            for (int m0 = mc; m0 < mc_end; m0 += MRW) {
                int mr = mc_end - m0 < MRW ? mc_end - m0 : MRW;
                kernels_w[mr](j->x + (size_t)m0 * j->kp * 2, w, j->kp,
                              j->y + (size_t)m0 * j->n + n0, (size_t)j->n, ncols, bias);
            }
        }
    }
    return NULL;
}

/* y[m][n] = x[m][k] @ W^T (+ bias), W packed by lz_pack, in float32. Returns 0, or 1 without
 * memory. Runs where the bfloat16 kernel runs (lz_supported). */
int lz_gemm_widened(const float *x, int m, int k, const uint16_t *packed_w, int n,
                    const float *bias, float *y, int threads) {
    if (m <= 0 || n <= 0) return 0; /* nothing to multiply: no job to hand the threads */
    size_t kp = (size_t)(k + 1) / 2;
    size_t blocks = (size_t)(m + MRW - 1) / MRW;
    float *xp = (float *)aligned_alloc(64, (blocks * MRW * kp * 2 * sizeof(float) + 63) / 64 * 64);
    if (!xp) return 1;
    pack_rows(x, m, k, kp, xp);
    int panels = (n + NR - 1) / NR;
    if ((double)m * k * n < 5e5) threads = 1; /* below ~1 MFLOP a thread costs more than it saves */
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    threads = threads > panels ? panels : threads;
    tiles_t tiles = tiles_for((m + MCW - 1) / MCW, panels, threads);
    job_w_t job = {xp, packed_w, bias, y, m, n, kp, &tiles};
    run_threads(run_job_w, &job, 0, threads); /* every thread runs the one job: it takes tiles */
    free(xp);
    return 0;
}
