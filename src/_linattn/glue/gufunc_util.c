#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"
#include "la_parallel.h"

#include <fenv.h>
#include <stdlib.h>

void
la_raise(la_status st, const char *where, size_t nbytes)
{
    NPY_ALLOW_C_API_DEF
    NPY_ALLOW_C_API;
    if (!PyErr_Occurred()) {
        switch (st) {
        case LA_ERR_NOMEM:
            PyErr_Format(PyExc_MemoryError,
                         "%s: out of memory allocating a %zu-byte workspace",
                         where, nbytes);
            break;
        case LA_ERR_SHAPE:
            PyErr_Format(PyExc_ValueError, "%s: inconsistent shapes", where);
            break;
        case LA_ERR_VALUE:
            PyErr_Format(PyExc_ValueError, "%s: invalid value", where);
            break;
        case LA_ERR_INTERRUPTED:
            PyErr_SetNone(PyExc_KeyboardInterrupt);
            break;
        default:
            PyErr_Format(PyExc_RuntimeError, "%s: kernel failed (status %d)",
                         where, (int)st);
            break;
        }
    }
    NPY_DISABLE_C_API;
}

char *
la_alloc_work(size_t each, int nth, const char *where)
{
    size_t total;
    char *p;
    if (nth < 1) {
        nth = 1;
    }
    if (each > ((size_t)-1 - 64) / (size_t)nth) {
        la_raise(LA_ERR_NOMEM, where, (size_t)-1);
        return NULL;
    }
    total = each * (size_t)nth + 64;
    p = (char *)malloc(total);
    if (p == NULL) {
        la_raise(LA_ERR_NOMEM, where, total);
        return NULL;
    }
#ifdef LA_POISON_SCRATCH
    {
        /* Debug builds: every scratch value starts as NaN (family.md 10.10). */
        size_t i;
        unsigned char *u = (unsigned char *)p;
        for (i = 0; i < total; i++) {
            u[i] = 0xff;
        }
    }
#endif
    return p;
}

void
la_free_work(char *p)
{
    free(p);
}

void
la_run_workers(void (*task)(void *, int, int), void *ctx, int nth, size_t wsize,
               char **work, volatile int *status, const char *name)
{
    int sig;
    *work = la_alloc_work(wsize, nth, name);
    if (*work == NULL) {
        return;
    }
    sig = la_interrupt_begin();
    la_parallel_run(task, ctx, nth);
    if (la_interrupt_end(sig) && *status == LA_OK) {
        *status = LA_ERR_INTERRUPTED;
    }
    la_free_work(*work);
    *work = NULL;
    if (*status != LA_OK) {
        la_raise((la_status)*status, name, 0);
    }
}

/*
 * Every registered loop runs through this trampoline, which clears the FP
 * status flags afterwards: vectorised kernels compiled with
 * -fno-trapping-math may compute on masked-off lanes and raise spurious
 * flags, and worker threads' flags never reach NumPy anyway.  A non-finite
 * result is visible in the output itself (check_finite= validates inputs).
 */
typedef struct {
    PyUFuncGenericFunction fn;
    void *data;
} la_loop_entry;

static void
la_loop_trampoline(char **args, npy_intp const *dims, npy_intp const *steps,
                   void *data)
{
    const la_loop_entry *e = (const la_loop_entry *)data;
    e->fn(args, dims, steps, e->data);
    (void)feclearexcept(FE_ALL_EXCEPT);
}

int
la_add_gufuncs(PyObject *module, const la_gufunc_desc *table, int n)
{
    int i, j;
    for (i = 0; i < n; i++) {
        const la_gufunc_desc *d = &table[i];
        /* lives as long as the process: the ufunc keeps pointers to it */
        PyUFuncGenericFunction *funcs =
            PyMem_RawMalloc(sizeof(PyUFuncGenericFunction) * (size_t)d->ntypes);
        void **data = PyMem_RawMalloc(sizeof(void *) * (size_t)d->ntypes);
        la_loop_entry *entries = PyMem_RawMalloc(sizeof(la_loop_entry) * (size_t)d->ntypes);
        PyObject *f;
        if (funcs == NULL || data == NULL || entries == NULL) {
            PyMem_RawFree(funcs);
            PyMem_RawFree(data);
            PyMem_RawFree(entries);
            PyErr_NoMemory();
            return -1;
        }
        for (j = 0; j < d->ntypes; j++) {
            entries[j].fn = d->funcs[j];
            entries[j].data = d->data[j];
            funcs[j] = la_loop_trampoline;
            data[j] = &entries[j];
        }
        f = PyUFunc_FromFuncAndDataAndSignature(
            funcs, data, (char *)d->types, d->ntypes, d->nin, d->nout,
            PyUFunc_None, d->name, d->doc, 0, d->signature);
        if (f == NULL) {
            return -1;
        }
        if (PyModule_AddObject(module, d->name, f) < 0) {
            Py_DECREF(f);
            return -1;
        }
    }
    return 0;
}
