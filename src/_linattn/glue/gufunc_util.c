#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"
#include "la_parallel.h"

#include <ctype.h>
#include <fenv.h>
#include <stdlib.h>
#include <string.h>

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
    /* Debug builds: every scratch value starts as NaN (docs/design/family.md §10.10). */
    memset(p, 0xff, total);
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

/* ------------------------------------------------------------ the runner -- */

la_index
la_dim(const la_call *c, const char *name)
{
    int j;
    for (j = 0; j < c->info->ncore; j++) {
        if (strcmp(c->info->dimname[j], name) == 0) {
            return (la_index)c->dims[1 + j];
        }
    }
    return -1; /* a typo in a glue file: the kernel's shape checks fail */
}

npy_intp
la_bstride(const la_call *c, int op, int ax)
{
    return c->steps[c->info->nop + c->info->core_off[op] + ax];
}

la_index
la_stride(const la_call *c, int op, int ax)
{
    return LA_ES(la_bstride(c, op, ax), c->info->type[op] == 'T' ? (npy_intp)c->is : 8);
}

int
la_call_workers(const la_call *c, double flops)
{
    int nth = la_workers_for(c->n);
    if (flops <= 0.0) {
        /* no estimate: a few flops per element of every operand */
        int j, ax;
        for (j = 0; j < c->info->nop; j++) {
            double e = 1.0;
            for (ax = 0; ax < c->info->ndim[j]; ax++) {
                e *= (double)c->dims[1 + c->info->axdim[j][ax]];
            }
            flops += 16.0 * e;
        }
    }
    if ((double)c->n * flops < (double)nth * LA_MIN_FLOPS_PER_WORKER) {
        const double cap = (double)c->n * flops / LA_MIN_FLOPS_PER_WORKER;
        nth = cap < 2.0 ? 1 : (int)cap;
    }
    return nth;
}

typedef struct {
    const la_call *c;
    la_item_fn item;
    const void *proto;
    char *work;
    size_t wsize;
    npy_intp next, grain; /* the next unclaimed item; items claimed at a time */
    volatile int status;
} la_run_ctx;

static void
la_run_task(void *vctx, int ith, int nth)
{
    la_run_ctx *r = (la_run_ctx *)vctx;
    char *work = r->work + (size_t)ith * r->wsize;
    (void)nth;
    while (r->status == LA_OK) {
        npy_intp i = __atomic_fetch_add(&r->next, r->grain, __ATOMIC_RELAXED);
        npy_intp hi = i + r->grain < r->c->n ? i + r->grain : r->c->n;
        if (i >= r->c->n) {
            break;
        }
        for (; i < hi && r->status == LA_OK; i++) {
            la_status s;
            if (la_cancel_flag) {
                r->status = LA_ERR_INTERRUPTED;
                break;
            }
            s = r->item(r->c, r->proto, i, work);
            if (s != LA_OK) {
                r->status = s;
            }
        }
    }
}

int
la_run(const la_call *c, la_item_fn item, const void *proto, size_t wsize, double flops)
{
    la_run_ctx r;
    int nth, sig;
    if (c->n <= 0) {
        return 0;
    }
    nth = la_call_workers(c, flops);
    memset(&r, 0, sizeof(r));
    r.c = c;
    r.item = item;
    r.proto = proto;
    r.wsize = LA_ALIGN_BYTES(wsize);
    /* a few claims per worker: cheap to hand out, and a slow worker (sharing
     * its core with another process) leaves its unclaimed items to the others */
    r.grain = c->n / (8 * (npy_intp)nth);
    r.grain = r.grain < 1 ? 1 : r.grain;
    r.work = la_alloc_work(r.wsize, nth, c->name);
    if (r.work == NULL) {
        return -1;
    }
    sig = la_interrupt_begin();
    la_parallel_run(la_run_task, &r, nth);
    if (la_interrupt_end(sig) && r.status == LA_OK) {
        r.status = LA_ERR_INTERRUPTED;
    }
    la_free_work(r.work);
    if (r.status != LA_OK) {
        la_raise((la_status)r.status, c->name, 0);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------- the trampolines -- */

/*
 * Every registered loop runs through a trampoline that clears the FP status
 * flags afterwards: vectorised kernels compiled with -fno-trapping-math may
 * compute on masked-off lanes and raise spurious flags, and worker threads'
 * flags never reach NumPy anyway.  A non-finite result is visible in the
 * output itself (check_finite= validates inputs).
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

/* The scalar rule: an option must hold the same value for every item. */
static int
la_check_options(const la_call *c)
{
    const la_loop_info *in = c->info;
    int op;
    npy_intp i;
    for (op = 0; op < in->nin; op++) {
        if ((in->type[op] != 'D' && in->type[op] != 'Q') || c->steps[op] == 0) {
            continue;
        }
        for (i = 1; i < c->n; i++) {
            if (memcmp(c->args[op], LA_AT(c, op, i), 8) != 0) {
                NPY_ALLOW_C_API_DEF
                NPY_ALLOW_C_API;
                if (in->type[op] == 'D') {
                    PyObject *a = PyFloat_FromDouble(*(const double *)c->args[op]);
                    PyObject *b = PyFloat_FromDouble(*(const double *)LA_AT(c, op, i));
                    PyErr_Format(PyExc_ValueError,
                                 "%s: %s must be one value for the whole call (a scalar), "
                                 "got %R for item 0 and %R for item %zd",
                                 c->name, in->opname[op], a, b, (Py_ssize_t)i);
                    Py_XDECREF(a);
                    Py_XDECREF(b);
                }
                else {
                    PyErr_Format(PyExc_ValueError,
                                 "%s: %s must be one value for the whole call (a scalar), "
                                 "got %lld for item 0 and %lld for item %zd",
                                 c->name, in->opname[op],
                                 (long long)*(const npy_int64 *)c->args[op],
                                 (long long)*(const npy_int64 *)LA_AT(c, op, i),
                                 (Py_ssize_t)i);
                }
                NPY_DISABLE_C_API;
                return -1;
            }
        }
    }
    return 0;
}

static void
la_table_trampoline(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const la_loop_info *in = (const la_loop_info *)data;
    la_call c;
    c.args = args;
    c.dims = dims;
    c.steps = steps;
    c.n = dims[0];
    c.f64 = in->f64;
    c.is = in->f64 ? 8 : 4;
    c.data = in->g->data;
    c.name = in->qualname;
    c.info = in;
    if (la_check_options(&c) == 0) {
        in->g->loop(&c);
    }
    (void)feclearexcept(FE_ALL_EXCEPT);
}

/* ---------------------------------------------------------- registration -- */

static int
la_bad_table(const la_gufunc *g, const char *why)
{
    PyErr_Format(PyExc_RuntimeError, "linattn.%s: bad gufunc table entry: %s", g->name, why);
    return -1;
}

/* Learn operand and core-dim layout from the signature and the operands string. */
static int
la_parse_entry(const la_gufunc *g, la_loop_info *in)
{
    const char *p = g->signature;
    int op = 0, nd = 0, off = 0, j;
    memset(in, 0, sizeof(*in));
    in->g = g;
    in->nin = -1;
    while (*p) {
        if (*p == '-') {
            in->nin = op;
            p += 2;
            continue;
        }
        if (*p != '(') {
            p++;
            continue;
        }
        if (op >= LA_MAX_OPERANDS) {
            return la_bad_table(g, "too many operands");
        }
        p++;
        in->core_off[op] = (unsigned char)off;
        while (*p && *p != ')') {
            char nm[16];
            int len = 0;
            while (*p == ',' || *p == ' ') {
                p++;
            }
            while (isalnum((unsigned char)*p) || *p == '_') {
                if (len < 15) {
                    nm[len++] = *p;
                }
                p++;
            }
            nm[len] = '\0';
            while (*p == '?' || *p == ' ') {
                p++;
            }
            if (len == 0) {
                continue;
            }
            for (j = 0; j < nd && strcmp(in->dimname[j], nm) != 0; j++) {
            }
            if (j == nd) {
                if (nd >= LA_MAX_CORE_DIMS) {
                    return la_bad_table(g, "too many core dimensions");
                }
                memcpy(in->dimname[nd++], nm, (size_t)len + 1);
            }
            if (in->ndim[op] >= 6) {
                return la_bad_table(g, "an operand with more than 6 core axes");
            }
            in->axdim[op][in->ndim[op]++] = (unsigned char)j;
            off++;
        }
        op++;
        if (*p) {
            p++;
        }
    }
    in->nop = op;
    in->ncore = nd;
    if (in->nin < 1) {
        return la_bad_table(g, "no '->' in the signature");
    }
    /* the operands string: "name:T ..." with "->" between inputs and outputs */
    p = g->operands;
    op = 0;
    while (*p) {
        const char *colon, *end;
        while (*p == ' ' || *p == '-' || *p == '>') {
            p++;
        }
        if (!*p) {
            break;
        }
        end = p;
        while (*end && *end != ' ') {
            end++;
        }
        colon = memchr(p, ':', (size_t)(end - p));
        if (colon == NULL || colon + 2 != end || op >= in->nop ||
            strchr("TdqDQ", colon[1]) == NULL || colon - p >= 16) {
            return la_bad_table(g, "operands must be name:T|d|q|D|Q, one per operand");
        }
        memcpy(in->opname[op], p, (size_t)(colon - p));
        in->type[op] = colon[1];
        if ((in->type[op] == 'D' || in->type[op] == 'Q') &&
            (in->ndim[op] != 0 || op >= in->nin)) {
            return la_bad_table(g, "an option (D or Q) must be a 0-d input");
        }
        op++;
        p = end;
    }
    if (op != in->nop) {
        return la_bad_table(g, "the operands string does not match the signature");
    }
    PyOS_snprintf(in->qualname, sizeof(in->qualname), "linattn.%s", g->name);
    return 0;
}

int
la_add_gufunc_table(PyObject *module, const la_gufunc *table, int n)
{
    int i, j, k;
    for (i = 0; i < n; i++) {
        /* lives as long as the process: the ufunc keeps pointers to it */
        la_loop_info *in = PyMem_RawMalloc(2 * sizeof(la_loop_info));
        PyUFuncGenericFunction *funcs = PyMem_RawMalloc(2 * sizeof(PyUFuncGenericFunction));
        void **data = PyMem_RawMalloc(2 * sizeof(void *));
        char *types = PyMem_RawMalloc(2 * LA_MAX_OPERANDS);
        PyObject *f;
        if (in == NULL || funcs == NULL || data == NULL || types == NULL) {
            PyMem_RawFree(in);
            PyMem_RawFree(funcs);
            PyMem_RawFree(data);
            PyMem_RawFree(types);
            PyErr_NoMemory();
            return -1;
        }
        if (la_parse_entry(&table[i], &in[0]) < 0) {
            return -1;
        }
        in[1] = in[0];
        in[1].f64 = 1;
        for (k = 0; k < 2; k++) {
            funcs[k] = la_table_trampoline;
            data[k] = &in[k];
            for (j = 0; j < in[0].nop; j++) {
                const char t = in[0].type[j];
                types[k * in[0].nop + j] = (char)(t == 'T' ? (k ? NPY_DOUBLE : NPY_FLOAT)
                                                  : (t == 'd' || t == 'D') ? NPY_DOUBLE
                                                                           : NPY_INT64);
            }
        }
        f = PyUFunc_FromFuncAndDataAndSignature(
            funcs, data, types, 2, in[0].nin, in[0].nop - in[0].nin, PyUFunc_None,
            table[i].name, table[i].doc, 0, table[i].signature);
        if (f == NULL) {
            return -1;
        }
        if (PyModule_AddObject(module, table[i].name, f) < 0) {
            Py_DECREF(f);
            return -1;
        }
    }
    return 0;
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
