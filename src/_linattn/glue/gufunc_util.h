/*
 * gufunc_util.h -- shared pieces of the NumPy glue: error reporting from
 * inside loops, scratch allocation, the registration table entry.
 * No maths here beyond index arithmetic.
 */
#ifndef LA_GUFUNC_UTIL_H
#define LA_GUFUNC_UTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <numpy/arrayobject.h>
#include <numpy/ufuncobject.h>

#include "la_common.h"

/* Raise from inside a gufunc loop (the GIL may be released). */
void la_raise(la_status st, const char *where, size_t nbytes);

/* Scratch for nth workers of `each` bytes; NULL (and an error set) on failure. */
char *la_alloc_work(size_t each, int nth, const char *where);
void la_free_work(char *p);

/*
 * The common end of a gufunc loop: allocate nth x wsize bytes of scratch
 * into *work (worker ith uses *work + ith * wsize), run task over the workers
 * with Ctrl-C routed to la_cancel_flag (kernels that poll it stop early), free
 * the scratch, and raise if *status (the tasks' shared failure slot) is set.
 */
void la_run_workers(void (*task)(void *, int, int), void *ctx, int nth, size_t wsize,
                    char **work, volatile int *status, const char *name);

/* Element stride from a byte stride (strides of aligned data divide evenly). */
#define LA_ES(bytes, itemsize) ((la_index)((bytes) / (npy_intp)(itemsize)))

typedef struct {
    const char *name;
    const char *signature;
    const char *doc;
    int nin, nout, ntypes;
    PyUFuncGenericFunction *funcs;
    void **data;
    const char *types;
} la_gufunc_desc;

/* Create every gufunc of a table and add it to the module; every loop runs
 * through a trampoline that clears the FP status flags when it returns. */
int la_add_gufuncs(PyObject *module, const la_gufunc_desc *table, int n);

int la_register_linear(PyObject *module);
int la_register_featmap(PyObject *module);
int la_register_softmax(PyObject *module);
int la_register_cosformer(PyObject *module);
int la_register_diag(PyObject *module);
int la_register_sscan(PyObject *module);
int la_register_lavo(PyObject *module);
int la_register_lara(PyObject *module);
int la_register_rf(PyObject *module);
int la_register_performer(PyObject *module);
int la_register_softmax_bwd(PyObject *module);
int la_register_sscan_bwd(PyObject *module);

#endif
