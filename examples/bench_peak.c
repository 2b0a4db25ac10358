/* The core's arithmetic peaks, for examples/bench_gemm.py: twelve independent chains (more than
 * the latency times the issue rate) of one instruction, nothing else in the loop. */
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))
#define TWELVE(OP) \
    OP(a0) OP(a1) OP(a2) OP(a3) OP(a4) OP(a5) OP(a6) OP(a7) OP(a8) OP(a9) OP(a10) OP(a11)
#define SUM(a) total += _mm512_reduce_add_ps(a);

/* 12 x 16 float32 FMAs (384 FLOP) per iteration. */
TARGET double lz_peak_fma(long iterations) {
    __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    __m512 a0 = _mm512_set1_ps(0), a1 = _mm512_set1_ps(1), a2 = _mm512_set1_ps(2),
           a3 = _mm512_set1_ps(3), a4 = _mm512_set1_ps(4), a5 = _mm512_set1_ps(5),
           a6 = _mm512_set1_ps(6), a7 = _mm512_set1_ps(7), a8 = _mm512_set1_ps(8),
           a9 = _mm512_set1_ps(9), a10 = _mm512_set1_ps(10), a11 = _mm512_set1_ps(11);
#define FMA(a) a = _mm512_fmadd_ps(a, x, y);
    for (long n = 0; n < iterations; n++) { TWELVE(FMA) }
    double total = 0;
    TWELVE(SUM)
    return total;
}

/* 12 x VDPBF16PS, 16 x 2 bfloat16 products each (768 FLOP) per iteration. */
TARGET double lz_peak_dpbf16(long iterations) {
    __m512i x = _mm512_set1_epi32(0x3f803f80), y = _mm512_set1_epi32(0x00010001);
    __m512 a0 = _mm512_set1_ps(0), a1 = _mm512_set1_ps(1), a2 = _mm512_set1_ps(2),
           a3 = _mm512_set1_ps(3), a4 = _mm512_set1_ps(4), a5 = _mm512_set1_ps(5),
           a6 = _mm512_set1_ps(6), a7 = _mm512_set1_ps(7), a8 = _mm512_set1_ps(8),
           a9 = _mm512_set1_ps(9), a10 = _mm512_set1_ps(10), a11 = _mm512_set1_ps(11);
#define DP(a) a = _mm512_dpbf16_ps(a, (__m512bh)x, (__m512bh)y);
    for (long n = 0; n < iterations; n++) { TWELVE(DP) }
    double total = 0;
    TWELVE(SUM)
    return total;
}
