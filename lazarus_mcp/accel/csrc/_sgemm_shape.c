/*
 * cblas_sgemm with a floor on the matrix's height and width, so that a row of the result does
 * not depend on how many other rows (or columns) were computed with it.
 *
 * Why: MKL's sgemm takes another code path, which rounds differently, for a product of fewer
 * than 4 rows or fewer than 12 columns (measured with MKL 2026.2 on AMD Zen 4; above those sizes
 * a row's result is bitwise the same at every height and width tried, 4-700 rows, K 16-2048).
 * A prompt of 1-3 tokens (a height under 4) and attention over fewer than 12 keys (a width under
 * 12) therefore rounded differently from the same prompt inside a padded batch. Below the floor
 * this shim multiplies zero-padded copies, so every product runs on MKL's large-matrix path;
 * above it, it calls MKL as it is (one comparison per call).
 *
 * Made global ahead of MKL (accel/blas.py), so MLX's dynamically resolved cblas_sgemm is this
 * one; MKL's own is handed in by lz_sgemm_shape_init before the shim becomes visible. Only row-major calls (MLX's) are
 * padded; a column-major call goes to MKL unchanged.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111 };

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *,
                         int, float, float *, int);

static sgemm_fn inner = NULL;
static int min_rows = 1, min_cols = 1;
static volatile int enabled = 1;

void lz_sgemm_shape_init(void *mkl_sgemm, int rows, int cols) {
    inner = (sgemm_fn)mkl_sgemm;
    min_rows = rows > 1 ? rows : 1;
    min_cols = cols > 1 ? cols : 1;
}

/* Off for a generation's one-token steps (generation/run.py): padding one row to four costs MKL
 * 2-3x the time of its matrix-vector path there, and a step has no batch to agree with. */
void lz_sgemm_shape_enable(int on) { enabled = on; }

/* The first `count` vectors of `len` floats, `ld` apart, into a zeroed buffer of `padded`
 * vectors `new_ld` apart. */
static float *padded_copy(const float *src, int count, int len, int ld, int padded, int new_ld) {
    float *dst = calloc((size_t)padded * (size_t)new_ld, sizeof(float));
    if (dst)
        for (int i = 0; i < count; i++)
            memcpy(dst + (size_t)i * new_ld, src + (size_t)i * ld, (size_t)len * sizeof(float));
    return dst;
}

static int larger(int a, int b) { return a > b ? a : b; }

void cblas_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c,
                 int ldc) {
    if (!enabled || layout != ROW_MAJOR || m <= 0 || n <= 0 ||
        (m >= min_rows && n >= min_cols)) {
        inner(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    int mp = larger(m, min_rows), np = larger(n, min_cols);
    const float *pa = a, *pb = b;
    float *own_a = NULL, *own_b = NULL, *own_c = NULL;
    int plda = lda, pldb = ldb, pldc = np;
    if (mp > m) {  /* op(A) is m x k: m rows of k (no transpose) or k rows of m */
        if (trans_a == NO_TRANS)
            own_a = padded_copy(a, m, k, lda, mp, plda = larger(lda, k));
        else
            own_a = padded_copy(a, k, m, lda, k, plda = larger(lda, mp));
        pa = own_a;
    }
    if (np > n) {  /* op(B) is k x n: k rows of n (no transpose) or n rows of k */
        if (trans_b == NO_TRANS)
            own_b = padded_copy(b, k, n, ldb, k, pldb = larger(ldb, np));
        else
            own_b = padded_copy(b, n, k, ldb, np, pldb = larger(ldb, k));
        pb = own_b;
    }
    own_c = beta != 0.0f ? padded_copy(c, m, n, ldc, mp, np) : calloc((size_t)mp * np, 4);
    if ((mp > m && !own_a) || (np > n && !own_b) || !own_c) { /* out of memory: unpadded */
        inner(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else {
        inner(layout, trans_a, trans_b, mp, np, k, alpha, pa, plda, pb, pldb, beta, own_c, pldc);
        for (int i = 0; i < m; i++)
            memcpy(c + (size_t)i * ldc, own_c + (size_t)i * pldc, (size_t)n * sizeof(float));
    }
    free(own_a);
    free(own_b);
    free(own_c);
}

/* An importable module, so that setuptools builds and installs it like the other kernels; it is
 * used through ctypes only. */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sgemm_shape", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__sgemm_shape(void) { return PyModule_Create(&module); }
