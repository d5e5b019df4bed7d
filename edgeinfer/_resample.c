/* Fixed-point separable resampling passes on uint8 images, the arithmetic of Pillow's Resample.c and of
 * torch's uint8 antialias kernel: acc = 2^(shift-1) + sum_k w[o,k] * in[idx[o,k]], out = clip(acc >> shift).
 *
 * Optional accelerator for edgeinfer.resample: when this module cannot be built, the pure-numpy path
 * computes the same pixels. Buffers arrive through the buffer protocol; no numpy headers are needed.
 *
 * horizontal(src, dst, idx, w, shift): src (H, W_in, C) uint8, dst (H, W_out, C) uint8, idx/w (W_out, K) int32
 * vertical(src, dst, idx, w, shift):   src (H_in, W, C) uint8, dst (H_out, W, C) uint8, idx/w (H_out, K) int32
 * src may be a strided view (a crop of a larger frame) as long as each row is contiguous.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline uint8_t clip8(int32_t v, int shift) {
    if (v <= 0) return 0;
    v >>= shift;
    return v > 255 ? 255 : (uint8_t)v;
}

static int get3(PyObject *obj, Py_buffer *b, int writable, const char *name) {
    int flags = PyBUF_RECORDS_RO | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, b, flags) < 0) return -1;
    if (b->ndim != 3 || b->itemsize != 1 || b->strides[2] != 1 || b->strides[1] != b->shape[2]) {
        PyErr_Format(PyExc_ValueError, "%s: expected a uint8 (rows, cols, channels) array with contiguous rows", name);
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

static PyObject *run_pass(PyObject *args, int horizontal) {
    PyObject *osrc, *odst, *oidx, *ow;
    int shift;
    Py_buffer src, dst, idx, w;
    if (!PyArg_ParseTuple(args, "OOOOi", &osrc, &odst, &oidx, &ow, &shift)) return NULL;
    if (shift < 1 || shift > 30) { PyErr_SetString(PyExc_ValueError, "shift must be in 1..30"); return NULL; }
    if (get3(osrc, &src, 0, "src") < 0) return NULL;
    if (get3(odst, &dst, 1, "dst") < 0) { PyBuffer_Release(&src); return NULL; }
    if (get2i(oidx, &idx, "idx") < 0) { PyBuffer_Release(&src); PyBuffer_Release(&dst); return NULL; }
    if (get2i(ow, &w, "w") < 0) {
        PyBuffer_Release(&src); PyBuffer_Release(&dst); PyBuffer_Release(&idx); return NULL;
    }
    const Py_ssize_t C = src.shape[2], K = idx.shape[1], n_out = idx.shape[0];
    const Py_ssize_t n_in = horizontal ? src.shape[1] : src.shape[0];
    int ok = dst.shape[2] == C && w.shape[0] == n_out && w.shape[1] == K &&
             (horizontal ? (dst.shape[0] == src.shape[0] && dst.shape[1] == n_out)
                         : (dst.shape[0] == n_out && dst.shape[1] == src.shape[1]));
    const int32_t *I = (const int32_t *)idx.buf, *W = (const int32_t *)w.buf;
    for (Py_ssize_t i = 0; ok && i < n_out * K; i++) ok = I[i] >= 0 && I[i] < n_in;
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "shapes of src, dst, idx and w disagree, or an index is out of range");
        goto fail;
    }
    const int32_t half = (int32_t)1 << (shift - 1);
    const char *S = (const char *)src.buf;
    char *D = (char *)dst.buf;
    Py_BEGIN_ALLOW_THREADS
    if (horizontal && C == 3) {
        for (Py_ssize_t y = 0; y < src.shape[0]; y++) {
            const uint8_t *row = (const uint8_t *)(S + y * src.strides[0]);
            uint8_t *out = (uint8_t *)(D + y * dst.strides[0]);
            for (Py_ssize_t x = 0; x < n_out; x++) {
                const int32_t *ix = I + x * K, *wx = W + x * K;
                int32_t a0 = half, a1 = half, a2 = half;
                for (Py_ssize_t k = 0; k < K; k++) {
                    const uint8_t *p = row + ix[k] * 3;
                    const int32_t wk = wx[k];
                    a0 += (int32_t)p[0] * wk;
                    a1 += (int32_t)p[1] * wk;
                    a2 += (int32_t)p[2] * wk;
                }
                out[x * 3] = clip8(a0, shift);
                out[x * 3 + 1] = clip8(a1, shift);
                out[x * 3 + 2] = clip8(a2, shift);
            }
        }
    } else if (horizontal) {
        for (Py_ssize_t y = 0; y < src.shape[0]; y++) {
            const uint8_t *row = (const uint8_t *)(S + y * src.strides[0]);
            uint8_t *out = (uint8_t *)(D + y * dst.strides[0]);
            for (Py_ssize_t x = 0; x < n_out; x++) {
                const int32_t *ix = I + x * K, *wx = W + x * K;
                for (Py_ssize_t c = 0; c < C; c++) {
                    int32_t acc = half;
                    for (Py_ssize_t k = 0; k < K; k++) acc += (int32_t)row[ix[k] * C + c] * wx[k];
                    out[x * C + c] = clip8(acc, shift);
                }
            }
        }
    } else {
        const Py_ssize_t n = src.shape[1] * C;
        int32_t *acc = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        if (acc != NULL) {
            for (Py_ssize_t y = 0; y < n_out; y++) {
                const int32_t *iy = I + y * K, *wy = W + y * K;
                for (Py_ssize_t i = 0; i < n; i++) acc[i] = half;
                for (Py_ssize_t k = 0; k < K; k++) {
                    const int32_t wk = wy[k];
                    if (wk == 0) continue;
                    const uint8_t *row = (const uint8_t *)(S + iy[k] * src.strides[0]);
                    for (Py_ssize_t i = 0; i < n; i++) acc[i] += (int32_t)row[i] * wk;
                }
                uint8_t *out = (uint8_t *)(D + y * dst.strides[0]);
                for (Py_ssize_t i = 0; i < n; i++) out[i] = clip8(acc[i], shift);
            }
            free(acc);
        } else {
            ok = 0;
        }
    }
    Py_END_ALLOW_THREADS
    if (!ok) { PyErr_NoMemory(); goto fail; }
    PyBuffer_Release(&src); PyBuffer_Release(&dst); PyBuffer_Release(&idx); PyBuffer_Release(&w);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&src); PyBuffer_Release(&dst); PyBuffer_Release(&idx); PyBuffer_Release(&w);
    return NULL;
}

static PyObject *horizontal(PyObject *self, PyObject *args) { return run_pass(args, 1); }
static PyObject *vertical(PyObject *self, PyObject *args) { return run_pass(args, 0); }

static PyMethodDef methods[] = {
    {"horizontal", horizontal, METH_VARARGS, "horizontal(src, dst, idx, w, shift): resample columns"},
    {"vertical", vertical, METH_VARARGS, "vertical(src, dst, idx, w, shift): resample rows"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_resample", NULL, -1, methods};

PyMODINIT_FUNC PyInit__resample(void) { return PyModule_Create(&module); }
