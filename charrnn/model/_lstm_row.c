/* One LSTM row's gate arithmetic, and the temperature sampling's arithmetic around torch's softmax,
   each in one call (charrnn.model.gate_kernel).

   At batch 1 a character costs three matrix-vector products and, around them, a dozen small
   torch calls whose argument parsing and dispatch (2.5-4.5 us each on a 2-core Zen 3 EPYC) cost
   more than their arithmetic.  These functions do the same arithmetic in one call per layer, on
   the same buffers, with the very functions torch computes it with: torch's own copies of
   SLEEF's vectorised expf (its sigmoid: 8 floats wide in its AVX2 kernels, 16 in its AVX-512
   ones) and MKL's vmsTanh (its tanh), whose addresses the caller takes from libtorch_cpu and
   passes to bind().  The rest is IEEE arithmetic, rounded exactly whoever computes it: this file
   is compiled without floating-point contraction, and fmaf stands where torch's own build fused
   a multiply and an add (addcmul).  charrnn.model.gate_kernel checks every result against
   torch's, bit for bit, before it is used.

   Pointers arrive as Python ints (tensor data pointers) to contiguous float32 buffers, which the
   caller keeps alive: this module is charrnn's own, not an API. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LSTM_ROW_X86 1
typedef __m256 (*vexp8_fn)(__m256);
typedef __m512 (*vexp16_fn)(__m512);
/* One of the two is bound: the one torch's sigmoid calls on this CPU. */
static vexp8_fn sleef_expf8;
static vexp16_fn sleef_expf16;
#endif

typedef void (*vml_fn)(int n, const float *a, float *r, long long mode);
static vml_fn vms_tanh;
/* MKL's VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE: the mode ATen's vml.h calls it with. */
static const long long VML_MODE = 0x2 | 0x140000 | 0x100;
/* The elements torch's vectorised loop takes per iteration (two vectors); the rest it computes
   with the scalar formula, so the sigmoid here splits the same way. */
static Py_ssize_t vector_block;

#ifdef LSTM_ROW_X86
__attribute__((target("avx2,fma"))) static Py_ssize_t sigmoid8(float *x, Py_ssize_t vectors)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    for (Py_ssize_t i = 0; i < vectors; i += 8) {
        __m256 a = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(x + i));
        _mm256_storeu_ps(x + i, _mm256_div_ps(one, _mm256_add_ps(sleef_expf8(a), one)));
    }
    return vectors;
}

__attribute__((target("avx512f"))) static Py_ssize_t sigmoid16(float *x, Py_ssize_t vectors)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (Py_ssize_t i = 0; i < vectors; i += 16) {
        __m512 a = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_loadu_ps(x + i));
        _mm512_storeu_ps(x + i, _mm512_div_ps(one, _mm512_add_ps(sleef_expf16(a), one)));
    }
    return vectors;
}

static void sigmoid(float *x, Py_ssize_t n)
{
    Py_ssize_t vectors = n - n % vector_block;
    Py_ssize_t i = sleef_expf16 != NULL ? sigmoid16(x, vectors) : sigmoid8(x, vectors);
    for (; i < n; i++)
        x[i] = 1.0f / (1.0f + expf(-x[i]));
}

__attribute__((target("avx2,fma"))) static void cell_update(float *c, const float *ifo, const float *g, float *h,
                                                            Py_ssize_t H)
{
    /* c = c * f, then c = i * g + c in one rounding (torch's addcmul), h = tanh(c) * o. */
    const float *in = ifo, *f = ifo + H, *o = ifo + 2 * H;
    Py_ssize_t j = 0;
    for (; j + 8 <= H; j += 8) {
        __m256 cf = _mm256_mul_ps(_mm256_loadu_ps(c + j), _mm256_loadu_ps(f + j));
        _mm256_storeu_ps(c + j, _mm256_fmadd_ps(_mm256_loadu_ps(in + j), _mm256_loadu_ps(g + j), cf));
    }
    for (; j < H; j++)
        c[j] = fmaf(in[j], g[j], c[j] * f[j]);
    vms_tanh((int)H, c, h, VML_MODE);
    for (j = 0; j + 8 <= H; j += 8)
        _mm256_storeu_ps(h + j, _mm256_mul_ps(_mm256_loadu_ps(h + j), _mm256_loadu_ps(o + j)));
    for (; j < H; j++)
        h[j] = h[j] * o[j];
}
#endif

/* A call's `count` addresses followed by one size: 0, or -1 with the exception set (a TypeError
   showing `usage` for a wrong number of arguments). */
static int unpack(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t count, void **out, Py_ssize_t *size,
                  const char *usage)
{
    if (nargs != count + 1) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        out[k] = PyLong_AsVoidPtr(args[k]);
        if (out[k] == NULL && PyErr_Occurred())
            return -1;
    }
    *size = PyLong_AsSsize_t(args[count]);
    return *size == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* bind(expf, vms_tanh, vector_block): expf is SLEEF's 8-wide expf where torch's loop takes
       16 floats (two AVX2 vectors), its 16-wide one where it takes 32 (two AVX-512 vectors). */
    void *p[2];
    Py_ssize_t block;
    if (unpack(args, nargs, 2, p, &block, "bind(expf, vms_tanh, vector_block)") < 0)
        return NULL;
#ifdef LSTM_ROW_X86
    __builtin_cpu_init();
    int wide = block == 32;
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || (block != 16 && !wide) ||
        (wide && !__builtin_cpu_supports("avx512f")))
        Py_RETURN_FALSE;
    sleef_expf8 = wide ? NULL : (vexp8_fn)p[0];
    sleef_expf16 = wide ? (vexp16_fn)p[0] : NULL;
    vms_tanh = (vml_fn)p[1];
    vector_block = block;
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

static PyObject *lstm_cell(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* lstm_cell(gates, bias, c, h, up, H): gates (4H: i, f, o, g) += bias unless bias is 0,
       then i, f, o = sigmoid, g = tanh, the cell update into c and h, and h copied to up
       unless up is 0. */
    void *p[5];
    Py_ssize_t H;
    if (unpack(args, nargs, 5, p, &H, "lstm_cell(gates, bias, c, h, up, H)") < 0)
        return NULL;
    if (vms_tanh == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "lstm_cell before a successful bind()");
        return NULL;
    }
#ifdef LSTM_ROW_X86
    float *g = p[0], *c = p[2], *h = p[3], *up = p[4];
    const float *bias = p[1];
    if (bias != NULL)
        for (Py_ssize_t j = 0; j < 4 * H; j++)
            g[j] = g[j] + bias[j];
    sigmoid(g, 3 * H);
    vms_tanh((int)H, g + 3 * H, g + 3 * H, VML_MODE);
    cell_update(c, g, g + 3 * H, h, H);
    if (up != NULL)
        for (Py_ssize_t j = 0; j < H; j++)
            up[j] = h[j];
#endif
    Py_RETURN_NONE;
}

static PyObject *add(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* add(a, b, n): a += b (the output layer's bias). */
    void *p[2];
    Py_ssize_t n;
    if (unpack(args, nargs, 2, p, &n, "add(a, b, n)") < 0)
        return NULL;
    float *a = p[0];
    const float *b = p[1];
    for (Py_ssize_t j = 0; j < n; j++)
        a[j] = a[j] + b[j];
    Py_RETURN_NONE;
}

static PyObject *temper(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* temper(temp, logits, scaled, V): scaled = logits / temp, temp rounded to float32 first. */
    void *p[2];
    Py_ssize_t V;
    if (nargs < 1 || unpack(args + 1, nargs - 1, 2, p, &V, "temper(temp, logits, scaled, V)") < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "temper(temp, logits, scaled, V)");
        return NULL;
    }
    const double temp = PyFloat_AsDouble(args[0]);
    if (temp == -1.0 && PyErr_Occurred())
        return NULL;
    const float t = (float)temp, *logits = p[0];
    float *scaled = p[1];
    for (Py_ssize_t j = 0; j < V; j++)
        scaled[j] = logits[j] / t;
    Py_RETURN_NONE;
}

static PyObject *race(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* race(probs, draws, V) -> the first index of the largest probs[j] / draws[j] (the first
       NaN if there is one, as numpy's argmax), the quotients written into probs. */
    void *p[2];
    Py_ssize_t V, best = 0;
    if (unpack(args, nargs, 2, p, &V, "race(probs, draws, V)") < 0)
        return NULL;
    float *probs = p[0];
    const float *draws = p[1];
    for (Py_ssize_t j = 0; j < V; j++)
        probs[j] = probs[j] / draws[j];
    for (Py_ssize_t j = 0; j < V; j++) {
        if (isnan(probs[j]))
            return PyLong_FromSsize_t(j);
        if (probs[j] > probs[best])
            best = j;
    }
    return PyLong_FromSsize_t(best);
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "Take torch's expf and vmsTanh; False where this CPU cannot run the kernels."},
    {"lstm_cell", (PyCFunction)(void (*)(void))lstm_cell, METH_FASTCALL,
     "One LSTM layer's gates and cell update, in place."},
    {"add", (PyCFunction)(void (*)(void))add, METH_FASTCALL, "a += b."},
    {"temper", (PyCFunction)(void (*)(void))temper, METH_FASTCALL, "Logits over the temperature."},
    {"race", (PyCFunction)(void (*)(void))race, METH_FASTCALL, "The exponential race's winner."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lstm_row", NULL, -1, methods};

PyMODINIT_FUNC PyInit__lstm_row(void)
{
    return PyModule_Create(&module);
}
