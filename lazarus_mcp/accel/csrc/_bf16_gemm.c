/*
 * A bfloat16 GEMM for the CPU: y[m][n] = x[m][k] @ W[n][k]^T (+ bias), with float32 x and y,
 * bfloat16 W (the checkpoint's own weights) and float32 accumulation.
 *
 * Why it exists: MLX's CPU backend computes bfloat16 and quantized matmuls without BLAS, 50-100x
 * below the hardware, so lazarus computed in float32 through MKL. That reads twice the bytes
 * (the lens of a short prompt is bound by memory bandwidth) and runs at half the rate of the
 * bfloat16 dot-product instructions (VDPBF16PS, AVX512-BF16) that PyTorch's oneDNN uses. This
 * kernel uses them on the checkpoint's bfloat16 weights, packed once at load.
 *
 * x is either rounded to bfloat16 (round to nearest even; parts = 1), as a bfloat16 model rounds
 * its activations, or split into two bfloat16 parts hi + lo (parts = 2), which carry 16
 * significant bits and make the result float32-accurate for twice the arithmetic. Products are
 * exact in float32 and summed in float32.
 *
 * Layouts:
 *  - packed W: panels of NR=32 output columns; panel j holds, for each pair of inputs p, the
 *    32 columns' (W[c][2p], W[c][2p+1]) pairs: [kp][32][2] bfloat16, 128 bytes = 2 registers.
 *    Columns past n and the odd input past k are zero.
 *  - packed x: blocks of MR rows, each [kp][MR][parts] pairs of bfloat16 (one 32-bit word per
 *    pair), so the microkernel reads its rows' pairs contiguously (row-major rows 4 KiB apart
 *    alias in L1 and halved the speed).
 *
 * Built by setup.py, with _affine_gemm.c and _threads.c, as an (empty) CPython extension so pip
 * compiles it; called through ctypes (lazarus_mcp/cpu_gemm.py), which releases the GIL for the
 * call. The AVX-512 code is compiled per function (AVX512_BF16) and only runs after
 * lz_supported() said yes; the rest is plain x86-64.
 */
#include "_gemm.h"

#define MR 14
#define MC (MR * 14) /* rows of x per pass over the weights: keeps packed x in L2/L3 */

int lz_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

size_t lz_packed_elems(int n, int k) {
    size_t panels = (size_t)(n + NR - 1) / NR;
    size_t kp = (size_t)(k + 1) / 2;
    return panels * kp * NR * 2;
}

typedef struct {
    const uint16_t *w;
    uint16_t *out;
    int n, k, panel_begin, panel_end;
} pack_job_t;

static void *pack_panels(void *arg) {
    const pack_job_t *j = (const pack_job_t *)arg;
    size_t kp = (size_t)(j->k + 1) / 2;
    for (int pi = j->panel_begin; pi < j->panel_end; pi++) {
        uint32_t *dst = (uint32_t *)(j->out + (size_t)pi * kp * NR * 2);
        for (int c = 0; c < NR; c++) {
            int col = pi * NR + c;
            const uint16_t *row = col < j->n ? j->w + (size_t)col * j->k : NULL;
            for (size_t p = 0; p < kp; p++) {
                size_t k0 = 2 * p;
                uint32_t lo = row ? row[k0] : 0;
                uint32_t hi = (row && k0 + 1 < (size_t)j->k) ? row[k0 + 1] : 0;
                dst[p * NR + c] = lo | hi << 16;
            }
        }
    }
    return NULL;
}

/* w: [n][k] bfloat16 bits, row-major, into the packed layout above. */
void lz_pack(const uint16_t *w, int n, int k, uint16_t *out, int threads) {
    if (n <= 0 || k <= 0) return; /* no panels: no job to run (and none to initialize) */
    int panels = (n + NR - 1) / NR;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    threads = threads > panels ? panels : threads;
    pack_job_t jobs[MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        jobs[t] = (pack_job_t){w, out, n, k, (int)((long)panels * t / threads),
                               (int)((long)panels * (t + 1) / threads)};
    }
    run_threads(pack_panels, jobs, sizeof(pack_job_t), threads);
}

/* mr rows of packed x times one weight panel, into c (row stride ldc), ncols <= NR valid. */
static inline __attribute__((always_inline)) AVX512_BF16 void microkernel(
    int mr, int parts, const uint32_t *a, const uint16_t *b, size_t kp, float *c, size_t ldc,
    int ncols, const float *bias) {
    __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 14
    for (int r = 0; r < mr; r++) {
        acc0[r] = _mm512_setzero_ps();
        acc1[r] = _mm512_setzero_ps();
    }
    for (size_t p = 0; p < kp; p++) {
        __m512i b0 = _mm512_loadu_si512((const void *)(b + p * 64));
        __m512i b1 = _mm512_loadu_si512((const void *)(b + p * 64 + 32));
        /* Both cache lines of the step 4 KiB ahead: few rows make the weights a stream from
         * memory, and prefetching one line per step left half of them to demand misses. */
        _mm_prefetch((const char *)(b + p * 64 + 2048), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + p * 64 + 2048 + 32), _MM_HINT_T0);
#pragma GCC unroll 14
        for (int r = 0; r < mr; r++) {
#pragma GCC unroll 2
            for (int part = 0; part < parts; part++) {
                __m512i av = _mm512_set1_epi32((int)a[(p * MR + r) * parts + part]);
                acc0[r] = _mm512_dpbf16_ps(acc0[r], (__m512bh)av, (__m512bh)b0);
                acc1[r] = _mm512_dpbf16_ps(acc1[r], (__m512bh)av, (__m512bh)b1);
            }
        }
    }
    store_tile(mr, acc0, acc1, c, ldc, ncols, bias);
}

typedef void (*kernel_fn)(const uint32_t *, const uint16_t *, size_t, float *, size_t, int,
                          const float *);
#define KERNEL(P, R)                                                                           \
    static AVX512_BF16 void kernel_##P##_##R(const uint32_t *a, const uint16_t *b, size_t kp,  \
                                             float *c, size_t ldc, int ncols, const float *bias) { \
        microkernel(R, P, a, b, kp, c, ldc, ncols, bias);                                      \
    }
#define KERNELS(P)                                                                             \
    KERNEL(P, 1) KERNEL(P, 2) KERNEL(P, 3) KERNEL(P, 4) KERNEL(P, 5) KERNEL(P, 6) KERNEL(P, 7) \
    KERNEL(P, 8) KERNEL(P, 9) KERNEL(P, 10) KERNEL(P, 11) KERNEL(P, 12) KERNEL(P, 13)          \
    KERNEL(P, 14)
KERNELS(1)
KERNELS(2)
#define TABLE(P)                                                                               \
    {NULL, kernel_##P##_1, kernel_##P##_2, kernel_##P##_3, kernel_##P##_4, kernel_##P##_5,     \
     kernel_##P##_6, kernel_##P##_7, kernel_##P##_8, kernel_##P##_9, kernel_##P##_10,          \
     kernel_##P##_11, kernel_##P##_12, kernel_##P##_13, kernel_##P##_14}
/* kernels[parts - 1][rows] */
static const kernel_fn kernels[2][MR + 1] = {TABLE(1), TABLE(2)};

static inline AVX512_BF16 __m512i to_bf16(__m512 lo, __m512 hi) {
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

static inline AVX512_BF16 __m512 widen(__m256i bits) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

/* One row of x into bfloat16: hi[i] = bf16(x[i]) and, for two parts, lo[i] = bf16(x[i] - hi[i]),
 * so that hi + lo carries 16 significant bits (x to about 2^-17 relative). k is padded to even
 * with zeros. */
static AVX512_BF16 void split_row(const float *x, int k, uint16_t *hi, uint16_t *lo) {
    int i = 0;
    for (; i + 32 <= k; i += 32) {
        __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
        __m512i h = to_bf16(x0, x1);
        _mm512_storeu_si512((void *)(hi + i), h);
        if (lo) {
            __m512 r0 = _mm512_sub_ps(x0, widen(_mm512_castsi512_si256(h)));
            __m512 r1 = _mm512_sub_ps(x1, widen(_mm512_extracti64x4_epi64(h, 1)));
            _mm512_storeu_si512((void *)(lo + i), to_bf16(r0, r1));
        }
    }
    for (; i < k; i++) {
        __m512 v = _mm512_set1_ps(x[i]);
        __m512i h = to_bf16(v, v);
        hi[i] = (uint16_t)_mm_extract_epi16(_mm512_castsi512_si128(h), 0);
        if (lo) {
            __m512 r = _mm512_sub_ps(v, widen(_mm512_castsi512_si256(h)));
            lo[i] = (uint16_t)_mm_extract_epi16(_mm512_castsi512_si128(to_bf16(r, r)), 0);
        }
    }
    if (k & 1) {
        hi[k] = 0;
        if (lo) lo[k] = 0;
    }
}

/* x[m][k] float32 -> packed bfloat16 pairs in blocks of rb rows (layout above, each pair word
 * followed by its lo word when parts == 2); scratch holds two rows of kp words. */
AVX512_BF16 void pack_x(const float *x, int m, int k, int parts, int rb, uint32_t *out, size_t kp,
                        uint16_t *scratch) {
    uint16_t *hi = scratch, *lo = parts == 2 ? scratch + 2 * kp : NULL;
    for (int r = 0; r < m; r++) {
        split_row(x + (size_t)r * k, k, hi, lo);
        uint32_t *dst = out + ((size_t)(r / rb) * rb * kp + (r % rb)) * parts;
        for (size_t p = 0; p < kp; p++) {
            /* A pair of bfloat16 as one word: through memcpy (one load), not a uint32_t alias
             * of the uint16_t rows, which strict aliasing lets the compiler reorder. */
            memcpy(&dst[p * rb * parts], hi + 2 * p, 4);
            if (lo) memcpy(&dst[p * rb * parts + 1], lo + 2 * p, 4);
        }
    }
}

typedef struct {
    const uint32_t *x;
    const uint16_t *w;
    const float *bias;
    float *y;
    int m, n, parts;
    size_t kp;
    tiles_t *tiles;
} job_t;

static AVX512_BF16 void *run_job(void *arg) {
    const job_t *j = (const job_t *)arg;
    int block, begin, end;
    while (take_tiles(j->tiles, &block, &begin, &end)) {
        int mc = block * MC, mc_end = j->m < mc + MC ? j->m : mc + MC;
        for (int pi = begin; pi < end; pi++) {
            const uint16_t *w = j->w + (size_t)pi * j->kp * NR * 2;
            int n0 = pi * NR;
            int ncols = j->n - n0 < NR ? j->n - n0 : NR;
            const float *bias = j->bias ? j->bias + n0 : NULL;
            for (int m0 = mc; m0 < mc_end; m0 += MR) {
                int mr = mc_end - m0 < MR ? mc_end - m0 : MR;
                kernels[j->parts - 1][mr](j->x + (size_t)m0 * j->kp * j->parts, w, j->kp,
                                          j->y + (size_t)m0 * j->n + n0, (size_t)j->n, ncols,
                                          bias);
            }
        }
    }
    return NULL;
}

/* y[m][n] = x[m][k] @ W^T (+ bias) with W packed by lz_pack. parts = 1 rounds x to bfloat16
 * (as a bfloat16 model does); parts = 2 splits it into two bfloat16 parts (twice the
 * arithmetic), which makes the result float32-accurate for the stored bfloat16 weights.
 * Returns 0, or 1 without memory. */
int lz_gemm(const float *x, int m, int k, const uint16_t *packed_w, int n, const float *bias,
            float *y, int parts, int threads) {
    if (m <= 0 || n <= 0) return 0; /* nothing to multiply: no job to hand the threads */
    size_t kp = (size_t)(k + 1) / 2;
    size_t blocks = (size_t)(m + MR - 1) / MR;
    parts = parts == 2 ? 2 : 1;
    uint32_t *xp =
        (uint32_t *)aligned_alloc(64, (blocks * MR * kp * 4 * parts + 63) / 64 * 64);
    uint16_t *scratch = (uint16_t *)malloc(kp * 8 + 64);
    if (!xp || !scratch) {
        free(xp);
        free(scratch);
        return 1;
    }
    pack_x(x, m, k, parts, MR, xp, kp, scratch);
    free(scratch);

    int panels = (n + NR - 1) / NR;
    /* Below ~1 MFLOP a thread costs more than it saves. */
    if ((double)m * k * n * parts < 5e5) threads = 1;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    threads = threads > panels ? panels : threads;
    tiles_t tiles = tiles_for((m + MC - 1) / MC, panels, threads);
    job_t job = {xp, packed_w, bias, y, m, n, parts, kp, &tiles};
    run_threads(run_job, &job, 0, threads); /* every thread runs the one job: it takes tiles */
    free(xp);
    return 0;
}

/* An importable (empty) module, so that pip builds this file as an extension. */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bf16_gemm",
                                    "bfloat16 GEMM, called through ctypes", -1, NULL};

PyMODINIT_FUNC PyInit__bf16_gemm(void) { return PyModule_Create(&module); }
