/*
 * module.c -- linattn._core: multi-phase init, registers every gufunc from
 * the glue tables, plus the few plain functions (threads, build info).
 */
#define LA_GLUE_MAIN /* the one file that imports NumPy's C-API tables */
#include "glue/gufunc_util.h"

#include "la_cpu.h"
#include "la_parallel.h"

static PyObject *
core_set_num_threads(PyObject *self, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    (void)self;
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    la_set_num_threads((int)(n > 4096 ? 4096 : n));
    Py_RETURN_NONE;
}

static PyObject *
core_get_num_threads(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLong(la_get_num_threads());
}

/* For threadpoolctl (through ctypes, so that it finds them by symbol): the
 * threads a call uses, and an outside limit.  Setting the limit to the count
 * linattn would use anyway removes it (that is how threadpoolctl restores). */
__attribute__((visibility("default"))) int
linattn_get_num_threads(void)
{
    return la_get_num_threads();
}

__attribute__((visibility("default"))) void
linattn_set_thread_limit(int n)
{
    int free_count;
    la_set_thread_limit(0);
    free_count = la_get_num_threads();
    la_set_thread_limit(n >= free_count || n <= 0 ? 0 : n);
}

static PyObject *
core_build_info(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return Py_BuildValue("{s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:s,s:i,s:i}",
                         "blas", la_blas_vendor(),
                         "blas_corename", la_blas_corename(),
                         "blas_config", la_blas_config(),
                         "simd", la_cpu_simd_level(),
                         "avx512_kernels", la_cpu_avx512(),
                         "openmp", 0,
                         "max_threads", la_max_threads(),
                         "threads_source", la_threads_source(),
                         "thread_limit", la_get_thread_limit(),
                         "pool_workers", la_pool_workers());
}

/* The progress counter (la_parallel.h): _progress_start(total) resets it,
 * _progress() reads (done, total) while a call runs on another thread. */
static PyObject *
core_progress_start(PyObject *self, PyObject *arg)
{
    long long total = PyLong_AsLongLong(arg);
    (void)self;
    if (total == -1 && PyErr_Occurred()) {
        return NULL;
    }
    la_progress_reset(total);
    Py_RETURN_NONE;
}

static PyObject *
core_progress(PyObject *self, PyObject *unused)
{
    long long done, total;
    (void)self;
    (void)unused;
    la_progress_read(&done, &total);
    return Py_BuildValue("(LL)", done, total);
}

/* glue/linear_loops.c: one decoding step, and a causal call in the recurrent
 * form, without the gufunc dispatch */
PyObject *la_step_token(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *la_causal_token(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

static PyMethodDef core_methods[] = {
    {"_step_token", (PyCFunction)(void (*)(void))la_step_token, METH_FASTCALL,
     "_step_token(q, k, v, g, S, z, scale, eps, flags, copy): one token of the generic "
     "operator in the recurrent form, S, z in place (copy false: returns o) or into new "
     "arrays (returns (o, S1, z1)); the gufunc _step_inplace's results without its "
     "dispatch."},
    {"_causal_token", (PyCFunction)(void (*)(void))la_causal_token, METH_FASTCALL,
     "_causal_token(q, k, v, g, S0, z0, scale, eps, flags) -> (o, S1, z1): a causal call "
     "of the generic operator in the recurrent form (g None: no decay); the gufunc "
     "_causal_recurrent's results without its dispatch."},
    {"_progress_start", core_progress_start, METH_O,
     "Reset the progress counter and set the tokens the next call is expected to finish."},
    {"_progress", core_progress, METH_NOARGS,
     "(tokens done, tokens expected) of the running call."},
    {"set_num_threads", core_set_num_threads, METH_O,
     "Set the worker threads (0: the environment's default)."},
    {"get_num_threads", core_get_num_threads, METH_NOARGS,
     "Worker threads a call will use."},
    {"build_info", core_build_info, METH_NOARGS,
     "BLAS vendor and core type, SIMD level, the thread pool."},
    {NULL, NULL, 0, NULL}};

/* One registration function per glue file (glue/<mech>_loops.c). */
int la_register_diag_bwd(PyObject *module); /* glue/diag_bwd_loops.c */
static int (*const la_registrars[])(PyObject *) = {
    la_register_linear, la_register_featmap,   la_register_softmax,
    la_register_cosformer, la_register_diag,   la_register_sscan,
    la_register_lavo,   la_register_lara,      la_register_rf,
    la_register_performer,
    la_register_linear_bwd,
    la_register_arch, /* arch/arch_py.c: simd, fma_peak, tuning table */
    la_register_softmax_bwd,
    la_register_sscan_bwd,
    la_register_diag_bwd,
};

static int
core_exec(PyObject *m)
{
    size_t i;
    if (PyArray_ImportNumPyAPI() < 0) {
        return -1;
    }
    if (PyUFunc_ImportUFuncAPI() < 0) {
        return -1;
    }
    la_blas_single_thread();
    la_interrupt_init();
    la_threads_init();
    for (i = 0; i < sizeof(la_registrars) / sizeof(la_registrars[0]); i++) {
        if (la_registrars[i](m) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, (void *)core_exec},
#if PY_VERSION_HEX >= 0x030c0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL}};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "_core",
    "linattn's compiled core: private gufuncs behind the Python API.", 0,
    core_methods, core_slots, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
