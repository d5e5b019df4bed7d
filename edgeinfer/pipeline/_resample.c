/* Fixed-point resampling of rows on uint8 images: the arithmetic of Pillow's Resample.c and of torch's
 * uint8 antialias kernel, out[o] = clip8((2^(shift-1) + sum_k w[o,k] * in[idx[o,k]]) >> shift).
 *
 * Optional accelerator for edgeinfer.resample (columns are resampled as rows of the transposed image);
 * when this module cannot be built, the pure-numpy path computes the same pixels. Buffers arrive
 * through the buffer protocol; no numpy headers are needed.
 *
 * rows(src, dst, idx, w, shift): src (H_in, W, C) uint8, dst (H_out, W, C) uint8, idx/w (H_out, K) int32;
 * with shift 0, src/dst/w are float32 (torch's float path: weighted sums, no rounding).
 * src may be a strided view (a crop of a larger frame) as long as each row is contiguous.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
/* One binary, the best vector unit at run time: AVX2 where the CPU has it, baseline SSE2 elsewhere.
 * x86-64 only: on aarch64 NEON (Advanced SIMD) is the baseline of every CPU, and gcc -O3 vectorises
 * these plain loops with it (16 uint8 -> 4x4 int32 lanes), so the same portable C serves both. */
#define EDGE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define EDGE_CLONES
#endif

EDGE_CLONES
static void resample_rows(const uint8_t *src, Py_ssize_t src_stride, uint8_t *dst, Py_ssize_t dst_stride,
                          Py_ssize_t n_out, Py_ssize_t n, Py_ssize_t K, const int32_t *I, const int32_t *W,
                          int shift, int32_t *acc) {
    const int32_t half = (int32_t)1 << (shift - 1);
    for (Py_ssize_t y = 0; y < n_out; y++) {
        const int32_t *iy = I + y * K, *wy = W + y * K;
        for (Py_ssize_t i = 0; i < n; i++) acc[i] = half;
        for (Py_ssize_t k = 0; k < K; k++) {
            const int32_t wk = wy[k];
            if (wk == 0) continue;
            const uint8_t *row = src + iy[k] * src_stride;
            for (Py_ssize_t i = 0; i < n; i++) acc[i] += (int32_t)row[i] * wk;
        }
        uint8_t *out = dst + y * dst_stride;
        for (Py_ssize_t i = 0; i < n; i++) {
            int32_t v = acc[i] >> shift;  /* arithmetic shift: negative sums stay negative, then clip */
            out[i] = (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
        }
    }
}

/* Float taps on float32 data (torch's float path): sums in tap order, no rounding. */
EDGE_CLONES
static void resample_rows_f32(const char *src, Py_ssize_t src_stride, char *dst, Py_ssize_t dst_stride,
                              Py_ssize_t n_out, Py_ssize_t n, Py_ssize_t K, const int32_t *I, const float *W) {
    for (Py_ssize_t y = 0; y < n_out; y++) {
        const int32_t *iy = I + y * K;
        const float *wy = W + y * K;
        float *out = (float *)(dst + y * dst_stride);
        for (Py_ssize_t i = 0; i < n; i++) out[i] = 0.0f;
        for (Py_ssize_t k = 0; k < K; k++) {
            const float wk = wy[k];
            const float *row = (const float *)(src + iy[k] * src_stride);
            for (Py_ssize_t i = 0; i < n; i++) out[i] += row[i] * wk;
        }
    }
}

static int get3(PyObject *obj, Py_buffer *b, int writable, const char *name, Py_ssize_t itemsize) {
    if (PyObject_GetBuffer(obj, b, PyBUF_RECORDS_RO | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (b->ndim != 3 || b->itemsize != itemsize || b->strides[2] != itemsize ||
        b->strides[1] != b->shape[2] * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected a (rows, cols, channels) array of %zd-byte items with "
                     "contiguous rows", name, itemsize);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

static int get2i(PyObject *obj, Py_buffer *b, const char *name) {
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (b->ndim != 2 || b->itemsize != 4) {
        PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous int32 (outputs, taps) array", name);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* shift > 0: uint8 data, int32 fixed-point weights; shift == 0: float32 data, float32 weights. */
static PyObject *rows(PyObject *self, PyObject *args) {
    PyObject *osrc, *odst, *oidx, *ow;
    int shift;
    Py_buffer src, dst, idx, w;
    if (!PyArg_ParseTuple(args, "OOOOi", &osrc, &odst, &oidx, &ow, &shift)) return NULL;
    if (shift < 0 || shift > 30) { PyErr_SetString(PyExc_ValueError, "shift must be in 0..30"); return NULL; }
    const Py_ssize_t item = shift ? 1 : 4;
    if (get3(osrc, &src, 0, "src", item) < 0) return NULL;
    if (get3(odst, &dst, 1, "dst", item) < 0) { PyBuffer_Release(&src); return NULL; }
    if (get2i(oidx, &idx, "idx") < 0) { PyBuffer_Release(&src); PyBuffer_Release(&dst); return NULL; }
    if (get2i(ow, &w, "w") < 0) {
        PyBuffer_Release(&src); PyBuffer_Release(&dst); PyBuffer_Release(&idx); return NULL;
    }
    PyObject *result = NULL;
    const Py_ssize_t K = idx.shape[1], n_out = idx.shape[0], n = src.shape[1] * src.shape[2];
    const int32_t *I = (const int32_t *)idx.buf, *W = (const int32_t *)w.buf;
    int ok = dst.shape[0] == n_out && dst.shape[1] == src.shape[1] && dst.shape[2] == src.shape[2] &&
             w.shape[0] == n_out && w.shape[1] == K;
    for (Py_ssize_t i = 0; ok && i < n_out * K; i++) ok = I[i] >= 0 && I[i] < src.shape[0];
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "shapes of src, dst, idx and w disagree, or an index is out of range");
    } else if (shift == 0) {
        Py_BEGIN_ALLOW_THREADS
        resample_rows_f32((const char *)src.buf, src.strides[0], (char *)dst.buf, dst.strides[0], n_out, n, K, I,
                          (const float *)W);
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    } else {
        int32_t *acc = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        if (acc == NULL) {
            PyErr_NoMemory();
        } else {
            Py_BEGIN_ALLOW_THREADS
            resample_rows((const uint8_t *)src.buf, src.strides[0], (uint8_t *)dst.buf, dst.strides[0], n_out, n,
                          K, I, W, shift, acc);
            Py_END_ALLOW_THREADS
            free(acc);
            result = Py_None;
            Py_INCREF(result);
        }
    }
    PyBuffer_Release(&src); PyBuffer_Release(&dst); PyBuffer_Release(&idx); PyBuffer_Release(&w);
    return result;
}


/* PIL's convert('L'): (19595 R + 38470 G + 7471 B + 0x8000) >> 16 on uint8, from any channel order (a BGR
 * frame is read in place). src (H, W, K) uint8 with contiguous rows, dst (H, W, 1) uint8. */
EDGE_CLONES
static void luma_rows(const uint8_t *src, Py_ssize_t src_stride, uint8_t *dst, Py_ssize_t dst_stride, Py_ssize_t h,
                      Py_ssize_t w, Py_ssize_t K, int r, int g, int b) {
    /* the weight of each stored channel, so the inner loops read fixed offsets and vectorise */
    uint32_t wt[4] = {0, 0, 0, 0};
    wt[r] += 19595u;
    wt[g] += 38470u;
    wt[b] += 7471u;
    const uint32_t w0 = wt[0], w1 = wt[1], w2 = wt[2], w3 = wt[3];
    for (Py_ssize_t y = 0; y < h; y++) {
        const uint8_t *in = src + y * src_stride;
        uint8_t *out = dst + y * dst_stride;
        if (K == 3) {
            for (Py_ssize_t x = 0; x < w; x++)
                out[x] = (uint8_t)((in[3 * x] * w0 + in[3 * x + 1] * w1 + in[3 * x + 2] * w2 + 0x8000u) >> 16);
        } else if (K == 4) {
            for (Py_ssize_t x = 0; x < w; x++)
                out[x] = (uint8_t)((in[4 * x] * w0 + in[4 * x + 1] * w1 + in[4 * x + 2] * w2 + in[4 * x + 3] * w3 +
                                    0x8000u) >> 16);
        } else {
            for (Py_ssize_t x = 0; x < w; x++) {
                const uint8_t *px = in + x * K;
                out[x] = (uint8_t)((px[r] * 19595u + px[g] * 38470u + px[b] * 7471u + 0x8000u) >> 16);
            }
        }
    }
}

static PyObject *luma(PyObject *self, PyObject *args) {
    PyObject *osrc, *odst;
    int r, g, b;
    Py_buffer src, dst;
    if (!PyArg_ParseTuple(args, "OOiii", &osrc, &odst, &r, &g, &b)) return NULL;
    if (get3(osrc, &src, 0, "src", 1) < 0) return NULL;
    if (get3(odst, &dst, 1, "dst", 1) < 0) { PyBuffer_Release(&src); return NULL; }
    PyObject *result = NULL;
    const Py_ssize_t K = src.shape[2];
    if (dst.shape[0] != src.shape[0] || dst.shape[1] != src.shape[1] || dst.shape[2] != 1 ||
        r < 0 || g < 0 || b < 0 || r >= K || g >= K || b >= K || K > 4) {
        PyErr_SetString(PyExc_ValueError, "luma: dst must be (rows, cols, 1) of src, channels within src's");
    } else {
        Py_BEGIN_ALLOW_THREADS
        luma_rows((const uint8_t *)src.buf, src.strides[0], (uint8_t *)dst.buf, dst.strides[0], src.shape[0],
                  src.shape[1], K, r, g, b);
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&src); PyBuffer_Release(&dst);
    return result;
}

static PyMethodDef methods[] = {
    {"rows", rows, METH_VARARGS, "rows(src, dst, idx, w, shift): fixed-point resampling along the first axis"},
    {"luma", luma, METH_VARARGS, "luma(src, dst, r, g, b): PIL's convert('L') of src's channels r, g, b"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_resample", NULL, -1, methods};

PyMODINIT_FUNC PyInit__resample(void) { return PyModule_Create(&module); }
