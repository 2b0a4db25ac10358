/*
 * The lens's cell statistics, fused: per row of float32 logits x[V], in two passes over the row
 * (three for a row whose probabilities are written out), threaded over rows:
 *
 *   pass 1: the maximum m, the k best entries (a k-heap fed by a threshold scan: only entries
 *           above the heap's worst are looked at), and for each tracked id the count of entries
 *           strictly greater than its logit (its 1-based rank - 1); any non-finite entry marks
 *           the row "bad" and ends it (the caller computes such rows with numpy's reference);
 *   pass 2: e = exp(x - m) with a vectorized exp accurate to ~1 ulp, S = sum e, E = sum e (x - m)
 *           and, against a reference row f (the model's own output at the same cell), the sum
 *           G = sum p_f ((x_f - m_f) - (x - m));
 *   pass 3: (only where asked) p = e / S written out, with its sum.
 *
 * From these: log S, the entropy H = log S - E / S, KL(f || x) = G - (log S_f - log S) sum p_f,
 * and each tracked or top id's log-probability (x - m) - log S and probability exp(x - m) / S.
 * The sums are accumulated in double: more accurate than numpy's float32 pairwise sums, and
 * independent of how rows are split between threads, so a row's statistics are bitwise the same
 * whatever rows share its call. A row compared with itself has G = 0 and KL exactly 0.
 *
 * Ties: the top-k are best first, equal logits by the lower index; a rank counts the strictly
 * greater logits (equal logits share the best rank). Both compare the logits themselves, which
 * is what numpy's reference (lens/stats.py) compares.
 *
 * Why in C: numpy's statistics make a dozen passes over [rows, V] arrays (the shift, exp, sum,
 * division, log, products, a comparison per tracked id, argpartition), each allocating; on
 * SmolLM2's 49,152-token vocabulary they cost ~32 ms of a 110 ms generation step, and numpy's
 * top-k alone took 4.1 s of a 17 s grid. The rows of one call are L2-sized (192 KiB at 49,152).
 *
 * AVX-512F/DQ where the CPU has it (lz_stats_simd), a scalar loop with libm's expf elsewhere.
 */
#include "_gemm.h"

#include <math.h>

#define AVX512_F __attribute__((target("avx512f,avx512dq,fma")))

typedef struct {
    float value;
    int32_t index;
} entry_t;

/* a ranks below b: a lower logit, or the same logit at a higher index. */
static inline int worse(entry_t a, entry_t b) {
    return a.value < b.value || (a.value == b.value && a.index > b.index);
}

/* The k best seen so far as a min-heap on `worse`: heap[0] is the one to drop next. */
typedef struct {
    entry_t *heap;
    int size, k;
} topk_t;

static void sift_down(entry_t *heap, int size, int i) {
    entry_t item = heap[i];
    for (;;) {
        int child = 2 * i + 1;
        if (child >= size) break;
        if (child + 1 < size && worse(heap[child + 1], heap[child])) child++;
        if (!worse(heap[child], item)) break;
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = item;
}

static void sift_up(entry_t *heap, int i) {
    entry_t item = heap[i];
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!worse(item, heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = item;
}

/* Offer entry (v, i); entries come in increasing index, so once the heap is full an entry equal
 * to the worst kept one is worse than it (a higher index) and is dropped. */
static inline void offer(topk_t *t, float v, int32_t i) {
    if (t->k == 0) return;
    if (t->size < t->k) {
        t->heap[t->size] = (entry_t){v, i};
        sift_up(t->heap, t->size++);
    } else if (v > t->heap[0].value) {
        t->heap[0] = (entry_t){v, i};
        sift_down(t->heap, t->size, 0);
    }
}

static int best_first(const void *a, const void *b) {
    entry_t x = *(const entry_t *)a, y = *(const entry_t *)b;
    return worse(y, x) ? -1 : worse(x, y) ? 1 : 0;
}

/* Where one call's rows and outputs are; row r compares with reference row ref_of[r]. */
typedef struct {
    const float *x;
    int64_t rows, vocab;
    const float *ref_x, *ref_p, *ref_m; /* [cells][V], [cells][V], [cells]; ref_x NULL: no KL */
    const double *ref_logs, *ref_psum;  /* [cells] */
    const int32_t *ref_of;              /* [rows] */
    int k;
    int32_t *top_ids;
    float *top_p;
    const int32_t *ids; /* [rows][T] */
    int t;
    float *id_lp, *id_p;
    int64_t *id_rank;
    float *m_out, *entropy, *kl;
    double *logs_out;
    float *p_out;     /* [rows][V] or NULL */
    double *psum_out; /* [rows] with p_out */
    uint8_t *bad;
    int simd;
    int64_t next; /* the next row, taken atomically */
    int failed;   /* a thread could not allocate its heap */
} call_t;

typedef struct {
    double sum, weighted, against; /* S, E, G */
} sums_t;

/* ---- scalar ---------------------------------------------------------------------------- */

static int pass1_scalar(const call_t *c, const float *x, topk_t *top, const float *chosen,
                        int64_t *greater, float *m) {
    float best = -INFINITY;
    for (int64_t i = 0; i < c->vocab; i++) {
        float v = x[i];
        if (!isfinite(v)) return 1;
        best = v > best ? v : best;
        offer(top, v, (int32_t)i);
        for (int t = 0; t < c->t; t++) greater[t] += v > chosen[t];
    }
    *m = best;
    return 0;
}

static sums_t pass2_scalar(const call_t *c, const float *x, float m, const float *fx, float fm,
                           const float *fp, float *e_out) {
    sums_t s = {0, 0, 0};
    for (int64_t i = 0; i < c->vocab; i++) {
        float shifted = x[i] - m;
        float e = expf(shifted);
        if (e_out) e_out[i] = e;
        s.sum += e;
        s.weighted += (double)(e * shifted);
        if (fx) s.against += (double)(fp[i] * ((fx[i] - fm) - shifted));
    }
    return s;
}

static double pass3_scalar(int64_t vocab, float *p, float total) {
    double sum = 0;
    for (int64_t i = 0; i < vocab; i++) {
        p[i] = p[i] / total;
        sum += p[i];
    }
    return sum;
}

/* ---- AVX-512 --------------------------------------------------------------------------- */

/* exp(x), float32, ~1 ulp: x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts, so n ln2 is
 * exact), a degree-7 Taylor polynomial for e^r (truncation 5e-9 relative), then scalef by 2^n,
 * which rounds once and so gives numpy's subnormals down to exp(-103.97). */
static inline AVX512_F __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.8f)), _mm512_set1_ps(-110.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline AVX512_F __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* Adds a float vector's 16 lanes to two double accumulators. */
static inline AVX512_F void add_wide(__m512 v, __m512d *lo, __m512d *hi) {
    *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    *hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
}

static AVX512_F int pass1_simd(const call_t *c, const float *x, topk_t *top, const float *chosen,
                               int64_t *greater, float *m) {
    __m512 best = _mm512_set1_ps(-INFINITY);
    int heap_full = top->k == 0; /* with k = 0 nothing is ever above the threshold */
    __m512 threshold = _mm512_set1_ps(heap_full ? INFINITY : -INFINITY);
    for (int64_t i = 0; i < c->vocab; i += 16) {
        __mmask16 valid = tail_mask(c->vocab - i);
        __m512 v = _mm512_maskz_loadu_ps(valid, x + i);
        if (_mm512_mask_fpclass_ps_mask(valid, v, 0x99)) return 1; /* NaN or +-inf */
        best = _mm512_mask_max_ps(best, valid, best, v);
        for (int t = 0; t < c->t; t++) {
            __mmask16 gt = _mm512_mask_cmp_ps_mask(valid, v, _mm512_set1_ps(chosen[t]), _CMP_GT_OQ);
            greater[t] += __builtin_popcount(gt);
        }
        if (!heap_full) { /* the first k entries all go in */
            for (int j = 0; j < 16 && i + j < c->vocab; j++) {
                offer(top, x[i + j], (int32_t)(i + j));
            }
            heap_full = top->size == top->k;
            if (heap_full) threshold = _mm512_set1_ps(top->heap[0].value);
            continue;
        }
        __mmask16 above = _mm512_mask_cmp_ps_mask(valid, v, threshold, _CMP_GT_OQ);
        while (above) {
            int j = __builtin_ctz(above);
            offer(top, x[i + j], (int32_t)(i + j));
            threshold = _mm512_set1_ps(top->heap[0].value);
            above &= (__mmask16)(above & _mm512_cmp_ps_mask(v, threshold, _CMP_GT_OQ));
            above &= (__mmask16)~(1u << j);
        }
    }
    *m = _mm512_reduce_max_ps(best);
    return 0;
}

static AVX512_F sums_t pass2_simd(const call_t *c, const float *x, float m, const float *fx,
                                  float fm, const float *fp, float *e_out) {
    __m512d s_lo = _mm512_setzero_pd(), s_hi = s_lo, w_lo = s_lo, w_hi = s_lo;
    __m512d g_lo = s_lo, g_hi = s_lo;
    __m512 vm = _mm512_set1_ps(m), vfm = _mm512_set1_ps(fm);
    for (int64_t i = 0; i < c->vocab; i += 16) {
        __mmask16 valid = tail_mask(c->vocab - i);
        __m512 shifted = _mm512_sub_ps(_mm512_maskz_loadu_ps(valid, x + i), vm);
        __m512 e = _mm512_maskz_mov_ps(valid, exp512(shifted));
        if (e_out) _mm512_mask_storeu_ps(e_out + i, valid, e);
        add_wide(e, &s_lo, &s_hi);
        add_wide(_mm512_mul_ps(e, shifted), &w_lo, &w_hi);
        if (fx) {
            __m512 fs = _mm512_sub_ps(_mm512_maskz_loadu_ps(valid, fx + i), vfm);
            __m512 term = _mm512_mul_ps(_mm512_maskz_loadu_ps(valid, fp + i),
                                        _mm512_sub_ps(fs, shifted));
            add_wide(_mm512_maskz_mov_ps(valid, term), &g_lo, &g_hi);
        }
    }
    return (sums_t){_mm512_reduce_add_pd(_mm512_add_pd(s_lo, s_hi)),
                    _mm512_reduce_add_pd(_mm512_add_pd(w_lo, w_hi)),
                    _mm512_reduce_add_pd(_mm512_add_pd(g_lo, g_hi))};
}

static AVX512_F double pass3_simd(int64_t vocab, float *p, float total) {
    __m512d lo = _mm512_setzero_pd(), hi = lo;
    __m512 vt = _mm512_set1_ps(total);
    for (int64_t i = 0; i < vocab; i += 16) {
        __mmask16 valid = tail_mask(vocab - i);
        __m512 q = _mm512_div_ps(_mm512_maskz_loadu_ps(valid, p + i), vt);
        _mm512_mask_storeu_ps(p + i, valid, q);
        add_wide(_mm512_maskz_mov_ps(valid, q), &lo, &hi);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

/* ---- one row ---------------------------------------------------------------------------- */

static void row_stats(const call_t *c, int64_t r, entry_t *heap, float *chosen,
                      int64_t *greater) {
    const float *x = c->x + r * c->vocab;
    const int32_t *ids = c->ids + r * c->t;
    for (int t = 0; t < c->t; t++) {
        chosen[t] = x[ids[t]];
        greater[t] = 0;
    }
    topk_t top = {heap, 0, c->k};
    float m;
    int bad = c->simd ? pass1_simd(c, x, &top, chosen, greater, &m)
                      : pass1_scalar(c, x, &top, chosen, greater, &m);
    c->bad[r] = (uint8_t)bad;
    if (bad) return;

    const float *fx = NULL, *fp = NULL;
    float fm = 0;
    if (c->ref_x) {
        int64_t cell = c->ref_of[r];
        fx = c->ref_x + cell * c->vocab;
        fp = c->ref_p + cell * c->vocab;
        fm = c->ref_m[cell];
    }
    float *e_out = c->p_out ? c->p_out + r * c->vocab : NULL;
    sums_t s = c->simd ? pass2_simd(c, x, m, fx, fm, fp, e_out)
                       : pass2_scalar(c, x, m, fx, fm, fp, e_out);
    double logs = log(s.sum);
    c->m_out[r] = m;
    c->logs_out[r] = logs;
    c->entropy[r] = (float)(logs - s.weighted / s.sum);
    if (c->ref_x) {
        int64_t cell = c->ref_of[r];
        c->kl[r] = (float)(s.against - (c->ref_logs[cell] - logs) * c->ref_psum[cell]);
    }
    if (e_out) {
        c->psum_out[r] = c->simd ? pass3_simd(c->vocab, e_out, (float)s.sum)
                                 : pass3_scalar(c->vocab, e_out, (float)s.sum);
    }

    float flogs = (float)logs;
    for (int t = 0; t < c->t; t++) {
        float shifted = chosen[t] - m;
        c->id_lp[r * c->t + t] = shifted - flogs;
        c->id_p[r * c->t + t] = (float)(exp((double)shifted) / s.sum);
        c->id_rank[r * c->t + t] = 1 + greater[t];
    }
    qsort(heap, (size_t)top.size, sizeof(entry_t), best_first);
    for (int j = 0; j < top.size; j++) {
        c->top_ids[r * c->k + j] = heap[j].index;
        c->top_p[r * c->k + j] = (float)(exp((double)(heap[j].value - m)) / s.sum);
    }
}

static void *run_rows(void *arg) {
    call_t *c = (call_t *)arg;
    entry_t *heap = (entry_t *)malloc(sizeof(entry_t) * (size_t)(c->k > 0 ? c->k : 1));
    float *chosen = (float *)malloc(sizeof(float) * (size_t)(c->t > 0 ? c->t : 1));
    int64_t *greater = (int64_t *)malloc(sizeof(int64_t) * (size_t)(c->t > 0 ? c->t : 1));
    if (!heap || !chosen || !greater) {
        __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
    } else {
        int64_t r;
        while ((r = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED)) < c->rows) {
            row_stats(c, r, heap, chosen, greater);
        }
    }
    free(heap);
    free(chosen);
    free(greater);
    return NULL;
}

/* 1 where the vectorized passes run (AVX-512F and DQ), else 0. */
int lz_stats_simd(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
}

/* The statistics of rows x[rows][vocab]; see call_t for the arrays (the caller checks their
 * sizes and that every id is below vocab). Returns 0, or 1 without memory. */
int lz_cell_stats(const float *x, int64_t rows, int64_t vocab, const float *ref_x,
                  const float *ref_p, const float *ref_m, const double *ref_logs,
                  const double *ref_psum, const int32_t *ref_of, int k, int32_t *top_ids,
                  float *top_p, const int32_t *ids, int t, float *id_lp, float *id_p,
                  int64_t *id_rank, float *m_out, double *logs_out, float *entropy, float *kl,
                  float *p_out, double *psum_out, uint8_t *bad, int simd, int threads) {
    if (rows <= 0) return 0;
    call_t c = {.x = x, .rows = rows, .vocab = vocab, .ref_x = ref_x, .ref_p = ref_p,
                .ref_m = ref_m, .ref_logs = ref_logs, .ref_psum = ref_psum, .ref_of = ref_of,
                .k = k, .top_ids = top_ids, .top_p = top_p, .ids = ids, .t = t,
                .id_lp = id_lp, .id_p = id_p, .id_rank = id_rank, .m_out = m_out,
                .entropy = entropy, .kl = kl, .logs_out = logs_out, .p_out = p_out,
                .psum_out = psum_out, .bad = bad, .simd = simd && lz_stats_simd()};
    /* a row of a small vocabulary is microseconds: a thread's wake-up would cost more */
    if ((double)rows * vocab < 1 << 16) threads = 1;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    threads = threads > rows ? (int)rows : threads;
    run_threads(run_rows, &c, 0, threads);
    return c.failed;
}

/* exp of n floats by the kernel's own exponential (simd) or libm's expf: for its tests. */
static AVX512_F void exp_simd(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 valid = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, valid, exp512(_mm512_maskz_loadu_ps(valid, x + i)));
    }
}

void lz_exp(const float *x, float *y, int64_t n, int simd) {
    if (simd && lz_stats_simd()) {
        exp_simd(x, y, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
}
