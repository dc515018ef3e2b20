/*
 * gufunc_util.h -- the NumPy glue's shared layer: one table entry per gufunc,
 * one runner for every loop, error reporting from inside loops.
 *
 * A glue file (glue/<mech>_loops.c) is written in four parts:
 *
 *   1. an operand enum per signature (LC_Q, LC_K, ... in operand order);
 *   2. a loop `void loop(const la_call *c)` that fills the kernel's argument
 *      struct once (sizes by name: la_dim(c, "t"), element strides:
 *      la_stride(c, LC_Q, 0), options: LA_OPT_F / LA_OPT_I) and calls la_run;
 *   3. an item function `la_status item(const la_call *c, const void *proto,
 *      npy_intp i, void *work)` that copies the prototype, points it at item
 *      i (LA_AT(c, op, i)) and calls the kernel;
 *   4. a table of la_gufunc {name, signature, operands, doc, loop, data}
 *      registered with la_add_gufunc_table().
 *
 * The operands string names every operand with its type, one token each:
 * "q:T k:T ... -> o:T".  T is the loop's float dtype (one loop per float32 /
 * float64), d float64 and q int64 data, D float64 and Q int64 *options*.
 * The scalar rule: every outer-loop item is computed with its own options
 * (scale, eps, flags, chunk, ...).  A loop reads them once (LA_OPT_F /
 * LA_OPT_I read item 0): they size the scratch, pick the threads, fill
 * tables; the layer calls it once per run of items whose options are equal,
 * so a call with scalar options (stride 0: every call from Python) is one
 * run, and an option array that varies splits the call.  0-d operands that
 * are data (a running maximum, a stream position, a per-channel parameter)
 * are typed T/d/q and read per item with LA_AT like any other operand.
 *
 * Registration checks the operands string against the signature (count and
 * the 0-d core shape of options), so a miscounted table fails at import.
 */
#ifndef LA_GUFUNC_UTIL_H
#define LA_GUFUNC_UTIL_H

/* One NumPy C-API table for the extension: module.c defines LA_GLUE_MAIN
 * (and imports it), every other file uses it. */
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#if !defined(LA_GLUE_MAIN) && !defined(NO_IMPORT_ARRAY)
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <numpy/arrayobject.h>
#include <numpy/ufuncobject.h>

#include "la_common.h"
#include "kernels/linear.h"

#define LA_MAX_OPERANDS 32
#define LA_MAX_CORE_DIMS 16

/* ------------------------------------------------------------ the table -- */

typedef struct la_call la_call;
typedef void (*la_loop_fn)(const la_call *c);

typedef struct {
    const char *name;      /* attribute of linattn._core, e.g. "_causal_chunked" */
    const char *signature; /* "(t,f),(t,f)->(t,f)" */
    const char *operands;  /* "q:T k:T -> o:T" (see above) */
    const char *doc;
    la_loop_fn loop;
    const void *data; /* the loop's own (kernel functions, form, ...) */
} la_gufunc;

/* What registration learned from the signature and the operands string. */
typedef struct {
    const la_gufunc *g;
    int f64, nin, nop, ncore;
    char qualname[64];                        /* "linattn._causal_chunked" */
    char type[LA_MAX_OPERANDS];               /* T d q D Q */
    unsigned char core_off[LA_MAX_OPERANDS];  /* first core stride in steps */
    unsigned char ndim[LA_MAX_OPERANDS];      /* core axes of each operand */
    unsigned char axdim[LA_MAX_OPERANDS][6];  /* the core size of each axis */
    char opname[LA_MAX_OPERANDS][16];
    char dimname[LA_MAX_CORE_DIMS][16];       /* in order of first appearance */
} la_loop_info;

/* One call of a loop. */
struct la_call {
    char **args;
    const npy_intp *dims;  /* dims[0] = outer items, then the core sizes */
    const npy_intp *steps; /* outer byte strides, then the core strides */
    npy_intp n;            /* outer items */
    int f64;               /* the float64 loop */
    size_t is;             /* its item size: 4 or 8 */
    const void *data;      /* la_gufunc.data */
    const char *name;      /* "linattn._causal_chunked", for errors */
    const la_loop_info *info;
};

/* Create every gufunc of a table (both float dtypes) and add it to the module;
 * LA_REGISTER(mech, table) defines la_register_<mech> doing that. */
int la_add_gufunc_table(PyObject *module, const la_gufunc *table, int n);
#define LA_REGISTER(mech, table)                                                   \
    int la_register_##mech(PyObject *module)                                       \
    {                                                                              \
        return la_add_gufunc_table(module, table, (int)(sizeof(table) / sizeof(table[0]))); \
    }

/* Operand op of outer item i. */
#define LA_AT(c, op, i) ((c)->args[op] + (npy_intp)(i) * (c)->steps[op])
/* An option's value (the same for every item of a loop call: see above). */
#define LA_OPT_F(c, op) (*(const double *)(c)->args[op])
#define LA_OPT_I(c, op) (*(const npy_int64 *)(c)->args[op])

/* Core size by its name in the signature ("t", "2", ...). */
la_index la_dim(const la_call *c, const char *name);
/* Element stride of core axis ax of operand op, in that operand's elements. */
la_index la_stride(const la_call *c, int op, int ax);
/* Byte stride of core axis ax of operand op. */
npy_intp la_bstride(const la_call *c, int op, int ax);

/* The linear operator's in-place recurrent step on features a fused gufunc
 * computed into dense (t, f) rows (a->f set): v, the state S, z and the
 * output o are the operands numbered iv, is, iz, io; eps and the flag word
 * the options ieps, iflags; scale 1, no decay. */
void la_step_args_dense(la_linear_args *a, const la_call *c, int iv, int is, int iz, int io,
                        int ieps, int iflags);

/* ------------------------------------------------------------ the runner -- */

typedef la_status (*la_item_fn)(const la_call *c, const void *proto, npy_intp i,
                                void *work);

/*
 * Run item(c, proto, i, work) for every outer item i.  The runner picks the
 * threads (la_workers_for, capped so that each worker gets at least the
 * tuning table's min_work_per_thread (arch/la_tuning.h) of the call's work:
 * the `flops` per item (<= 0 estimates them from the operand sizes) plus the
 * bytes of the operands weighted as flops, so a memory-bound call such as a
 * decoding step on many states counts too), gives each worker `wsize` bytes
 * of scratch, hands out items dynamically (the result of an item never
 * depends on which thread computes it), routes Ctrl-C to la_cancel_flag
 * (calls under one worker's share leave SIGINT to Python) and stops between
 * items when it is set, and raises the first failure naming the gufunc.
 * Returns 0, or -1 with a Python exception set.
 */
int la_run(const la_call *c, la_item_fn item, const void *proto, size_t wsize,
           double flops);

/*
 * The threads la_run would use for n items of `flops` flops and `bytes` bytes
 * of operand traffic each, and in *work the call's weighted work (for callers
 * that run their items with la_parallel_items themselves, e.g. the one-token
 * step entry of glue/linear_loops.c, which has no la_call).
 */
int la_workers_for_work(npy_intp n, double flops, double bytes, double *work);

/*
 * The runner's second half, for those callers too: run task(ctx, i, work)
 * for i < n on nth workers with wsize bytes of scratch each (total: the
 * call's weighted work from la_workers_for_work; interruptible: a call of at
 * least one worker's share routes Ctrl-C to la_cancel_flag).  Needs no GIL.
 * Returns 0, or -1 with a Python exception set (naming `where`).
 */
int la_run_items(npy_intp n, int nth, double total, la_status (*task)(void *, la_index, char *),
                 void *ctx, size_t wsize, const char *where, int interruptible);


/* ------------------------------------------- lower-level pieces (stable) -- */

/* Raise from inside a gufunc loop (the GIL may be released). */
void la_raise(la_status st, const char *where, size_t nbytes);

/* Scratch for nth workers of `each` bytes; NULL (and an error set) on failure. */
char *la_alloc_work(size_t each, int nth, const char *where);
void la_free_work(char *p);

/* Element stride from a byte stride (strides of aligned data divide evenly). */
#define LA_ES(bytes, itemsize) ((la_index)((bytes) / (npy_intp)(itemsize)))

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
int la_register_linear_bwd(PyObject *module);
int la_register_softmax_bwd(PyObject *module);
int la_register_sscan_bwd(PyObject *module);

#endif
