#include "gufunc_util.h"
#include "la_parallel.h"
#include "arch/la_tuning.h"

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
    /* Debug builds: every scratch value starts as NaN (docs/design/family.md §10 test 10). */
    memset(p, 0xff, total);
#endif
    return p;
}

void
la_free_work(char *p)
{
    free(p);
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

/*
 * A byte of operand traffic counted as this many flops when sizing the
 * threads, so that memory-bound calls (la.step streams every state once for
 * about one flop per byte) are weighed by what they move, not only by what
 * they compute.  At 1, la.step on B x H = 32 float32 states of 64 x 64
 * (0.55 MB for 0.53 Mflop, the state in the caller's L2) stays on the calling
 * thread: on the 2-core reference VM (Xeon, AVX-512, shared and loaded) two
 * threads measured 36 us against 28 us (minimum of 30 rounds, elu, through
 * la.Decoder), since the state of one call then moved between two cores'
 * caches.  Since each worker claims its own range of items first (the same
 * heads at every step), two threads take 14-15 us against 16-17 on an idle
 * machine, but 30 against 22 while another process runs on the other core:
 * too little to gain for what a busy core costs.  Steps on about twice as
 * much state (B x H = 64, or F = E = 128: 2 threads 29-34 us against 40-43)
 * and long calls get the second core.  benchmarks/bench_decode.py measures
 * both thread counts; docs/design/performance.md §3 has the targets.
 */
#define LA_FLOPS_PER_BYTE 1.0

/*
 * While the pool is contended (la_pool_contended: a worker woken in the last
 * 2 ms found itself on the caller's CPU, the other cores being busy), calls
 * below this many times min_work_per_thread run on the calling thread: a
 * wake-up that would be declined costs the caller tens of microseconds
 * (measured under load on the 2-core reference VM: 2 threads 10-19% slower
 * than 1 on recurrent calls of 90-870 us), and larger calls still wake a
 * worker, so the pool notices when a core frees up.
 */
#define LA_CONTENDED_CALLER_WORK 16.0

/*
 * On a machine with more runnable threads than CPUs (la_oversubscribed: the
 * workers would share cores with other work) a call with fewer than this many
 * items per thread runs on the calling thread: a worker preempted while it
 * holds one of a few long items makes the caller wait a time slice of the
 * other work (measured with a busy loop on one core of the 2-core reference
 * VM, others' load on both: (4, 512, 64) recurrent took a median 0.6-0.9 ms
 * on 1 thread, 2.1-3.2 ms on 2; on the caller alone 2 threads cost 1.01-1.03x).  With
 * 4 or more items per thread a straggler holds at most a quarter of a
 * worker's share while the caller works through the rest, and a second core,
 * even a shared one, still pays.
 */
#define LA_FINE_ITEMS 4

/* Bytes of every operand of one outer item (the in-place state counted once). */
static double
la_item_bytes(const la_call *c)
{
    double bytes = 0.0;
    int j, ax;
    for (j = 0; j < c->info->nop; j++) {
        double e = 1.0;
        for (ax = 0; ax < c->info->ndim[j]; ax++) {
            e *= (double)c->dims[1 + c->info->axdim[j][ax]];
        }
        bytes += e * (c->info->type[j] == 'T' ? (double)c->is : 8.0);
    }
    return bytes;
}

/*
 * Threads for c at `flops` per item (<= 0: estimated from the operand
 * sizes), and in *work the weighted work of the whole call: flops plus
 * LA_FLOPS_PER_BYTE per byte of operand traffic.  Each worker gets at least
 * the tuning table's min_work_per_thread of it; smaller calls run on the
 * calling thread, where waking a worker would cost more than it saves.
 */
static int
la_call_workers(const la_call *c, double flops, double *work)
{
    const double bytes = la_item_bytes(c);
    if (flops <= 0.0) {
        /* no estimate: a few flops per element of every operand */
        flops = 4.0 * bytes / (double)c->is;
    }
    return la_workers_for_work(c->n, flops, bytes, work);
}

int
la_workers_for_work(npy_intp n, double flops, double bytes, double *work)
{
    int nth = la_workers_for(n);
    *work = (double)n * (flops + LA_FLOPS_PER_BYTE * bytes);
    const double min_work = (double)la_tuning_active().min_work_per_thread;
    if (*work < (double)nth * min_work) {
        const double cap = *work / min_work;
        nth = cap < 2.0 ? 1 : (int)cap;
    }
    if (nth > 1 && *work < LA_CONTENDED_CALLER_WORK * min_work && la_pool_contended()) {
        nth = 1; /* the last woken worker found only the caller's core free */
    }
    if (nth > 1 && n < LA_FINE_ITEMS * (npy_intp)nth && la_oversubscribed(nth - 1)) {
        nth = 1; /* coarse items on a machine without free cores: see above */
    }
    return nth;
}

typedef struct {
    const la_call *c;
    la_item_fn item;
    const void *proto;
} la_run_ctx;

static la_status
la_run_item(void *ctx, la_index i, char *work)
{
    const la_run_ctx *r = (const la_run_ctx *)ctx;
    return r->item(r->c, r->proto, (npy_intp)i, work);
}

int
la_run(const la_call *c, la_item_fn item, const void *proto, size_t wsize, double flops)
{
    const la_run_ctx r = {c, item, proto};
    double total;
    const int nth = la_call_workers(c, flops, &total);
    return la_run_items(c->n, nth, total, la_run_item, (void *)&r, wsize, c->name, 1);
}

int
la_run_items(npy_intp n, int nth, double total, la_status (*task)(void *, la_index, char *),
             void *ctx, size_t wsize, const char *where, int interruptible)
{
    char *work;
    la_status st;
    int sig = 0;
    if (n <= 0) {
        return 0;
    }
    wsize = LA_ALIGN_BYTES(wsize);
    if ((work = la_alloc_work(wsize, nth, where)) == NULL) {
        return -1;
    }
    /* A call below one worker's share of work (well under a millisecond: a
     * decoding step, a short sequence) keeps Python's own SIGINT handler, so
     * it saves the two sigaction calls; Ctrl-C then raises when it returns. */
    if (interruptible && total >= (double)la_tuning_active().min_work_per_thread) {
        sig = la_interrupt_begin();
    }
    st = la_parallel_items((la_index)n, nth, task, ctx, work, wsize);
    if (la_interrupt_end(sig) && st == LA_OK) {
        st = LA_ERR_INTERRUPTED;
    }
    la_free_work(work);
    if (st != LA_OK) {
        la_raise(st, where, 0);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------- the trampolines -- */

/* Whether items i and j have the same options (bit for bit). */
static int
la_same_options(const la_call *c, npy_intp i, npy_intp j)
{
    int op;
    for (op = 0; op < c->info->nin; op++) {
        if ((c->info->type[op] == 'D' || c->info->type[op] == 'Q') && c->steps[op] != 0 &&
            memcmp(LA_AT(c, op, i), LA_AT(c, op, j), 8) != 0) {
            return 0;
        }
    }
    return 1;
}

/*
 * The scalar rule: every item is computed with its own options.  A loop reads
 * them once per call (they size the scratch, pick the threads, fill tables),
 * so a call whose options vary is cut into runs of items with equal options
 * and the loop runs once per run.  Scalars (stride 0) cost nothing.
 * Afterwards the FP status flags are cleared: vectorised kernels compiled with
 * -fno-trapping-math may compute on masked-off lanes and raise spurious flags,
 * and worker threads' flags never reach NumPy anyway (a non-finite result is
 * visible in the output itself).
 */
static void
la_table_trampoline(char **args, npy_intp const *dims, npy_intp const *steps, void *data)
{
    const la_loop_info *in = (const la_loop_info *)data;
    char *sub[LA_MAX_OPERANDS];
    npy_intp subdims[LA_MAX_CORE_DIMS + 1], start = 0, end;
    int op, vary = 0, err = 0;
    la_call c = {args, dims, steps, dims[0], in->f64, in->f64 ? 8 : 4, in->g->data,
                 in->qualname, in};
    for (op = 0; op < in->nin; op++) {
        vary |= (in->type[op] == 'D' || in->type[op] == 'Q') && steps[op] != 0;
    }
    memcpy(subdims, dims, sizeof(npy_intp) * (size_t)(in->ncore + 1));
    do {
        la_call r = c;
        for (end = vary ? start + 1 : dims[0];
             end < dims[0] && la_same_options(&c, start, end); end++) {
        }
        for (op = 0; op < in->nop; op++) {
            sub[op] = LA_AT(&c, op, start);
        }
        subdims[0] = r.n = end - start;
        r.args = sub;
        r.dims = subdims;
        in->g->loop(&r);
        if (end < dims[0]) {
            NPY_ALLOW_C_API_DEF
            NPY_ALLOW_C_API;
            err = PyErr_Occurred() != NULL;
            NPY_DISABLE_C_API;
        }
    } while ((start = end) < dims[0] && !err);
    (void)feclearexcept(FE_ALL_EXCEPT);
}

/* ---------------------------------------------------------- registration -- */

static int
la_bad_table(const la_gufunc *g, const char *why)
{
    PyErr_Format(PyExc_RuntimeError, "linattn.%s: bad gufunc table entry: %s", g->name, why);
    return -1;
}

/* Learn the operands' core axes from the signature, their names and types
 * from the operands string. */
static int
la_parse_entry(const la_gufunc *g, la_loop_info *in)
{
    const char *p;
    int op = 0, off = 0, j, len;
    memset(in, 0, sizeof(*in));
    in->g = g;
    for (p = g->signature; *p; p += len > 0 ? len : 1) {
        len = 0;
        if (*p == '(' && op < LA_MAX_OPERANDS) {
            in->core_off[op] = (unsigned char)off;
        }
        else if (*p == ')') {
            op++;
        }
        else if (*p == '-') {
            in->nin = op;
        }
        while (isalnum((unsigned char)p[len]) || p[len] == '_') {
            len++;
        }
        if (len == 0) {
            continue;
        }
        if (len > 15 || op >= LA_MAX_OPERANDS || in->ndim[op] >= 6) {
            return la_bad_table(g, "signature too large");
        }
        for (j = 0; j < in->ncore && (strncmp(in->dimname[j], p, (size_t)len) != 0 ||
                                      in->dimname[j][len] != '\0'); j++) {
        }
        if (j == in->ncore && in->ncore++ < LA_MAX_CORE_DIMS) {
            memcpy(in->dimname[j], p, (size_t)len);
        }
        in->axdim[op][in->ndim[op]++] = (unsigned char)j;
        off++;
    }
    in->nop = op;
    if (in->nin < 1 || in->ncore > LA_MAX_CORE_DIMS) {
        return la_bad_table(g, "bad signature");
    }
    for (p = g->operands, op = 0; *p; p += len > 0 ? len + 2 : 1) {
        len = 0;
        if (*p == ' ' || *p == '-' || *p == '>') {
            continue;
        }
        while (p[len] && p[len] != ':' && p[len] != ' ') {
            len++;
        }
        if (p[len] != ':' || len > 15 || op >= in->nop || p[len + 1] == '\0' ||
            strchr("TdqDQ", p[len + 1]) == NULL || (p[len + 2] && p[len + 2] != ' ')) {
            return la_bad_table(g, "operands must be name:T|d|q|D|Q, one per operand");
        }
        memcpy(in->opname[op], p, (size_t)len);
        in->type[op] = p[len + 1];
        if ((p[len + 1] == 'D' || p[len + 1] == 'Q') && (in->ndim[op] || op >= in->nin)) {
            return la_bad_table(g, "an option (D or Q) must be a 0-d input");
        }
        op++;
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
        struct {
            la_loop_info in[2];
            PyUFuncGenericFunction funcs[2];
            void *data[2];
            char types[2 * LA_MAX_OPERANDS];
        } *b = PyMem_RawCalloc(1, sizeof(*b));
        PyObject *f;
        if (b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (la_parse_entry(&table[i], &b->in[0]) < 0) {
            return -1;
        }
        b->in[1] = b->in[0];
        b->in[1].f64 = 1;
        for (k = 0; k < 2; k++) {
            b->funcs[k] = la_table_trampoline;
            b->data[k] = &b->in[k];
            for (j = 0; j < b->in[0].nop; j++) {
                const char t = b->in[0].type[j];
                b->types[k * b->in[0].nop + j] =
                    (char)(t == 'T' ? (k ? NPY_DOUBLE : NPY_FLOAT)
                                    : (t == 'd' || t == 'D') ? NPY_DOUBLE : NPY_INT64);
            }
        }
        f = PyUFunc_FromFuncAndDataAndSignature(
            b->funcs, b->data, b->types, 2, b->in[0].nin, b->in[0].nop - b->in[0].nin,
            PyUFunc_None, table[i].name, table[i].doc, 0, table[i].signature);
        if (f == NULL || PyModule_AddObject(module, table[i].name, f) < 0) {
            Py_XDECREF(f);
            return -1;
        }
    }
    return 0;
}

void
la_step_args_dense(la_linear_args *a, const la_call *c, int iv, int is, int iz, int io,
                   int ieps, int iflags)
{
    a->chunk = 1;
    a->q_rs = a->k_rs = a->f;
    a->q_cs = a->k_cs = 1;
    a->v_rs = la_stride(c, iv, 0); a->v_cs = la_stride(c, iv, 1);
    a->s0_rs = a->s1_rs = la_stride(c, is, 0);
    a->s0_cs = a->s1_cs = la_stride(c, is, 1);
    a->z0_s = a->z1_s = la_stride(c, iz, 0);
    a->o_rs = la_stride(c, io, 0); a->o_cs = la_stride(c, io, 1);
    a->scale = 1.0;
    a->eps = LA_OPT_F(c, ieps);
    (void)la_linear_set_flags(a, LA_OPT_I(c, iflags));
    a->g = NULL;
    a->cancel = &la_cancel_flag;
    a->progress = &la_progress_done;
}
