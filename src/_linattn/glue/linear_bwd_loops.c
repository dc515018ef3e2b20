/*
 * linear_bwd_loops.c -- gufunc loops for the backward of the generic
 * operator (kernels/linear_bwd.h).
 *
 * causal (recurrent | chunked), one signature:
 *   q (t,f), k (t,f), v (t,e), g (t) float64, S0 (f,e), z0 (f),
 *   do (t,e), dS (f,e), dz (f), scale, eps, flags, chunk
 *   -> dq (t,f), dk (t,f), dv (t,e), dg (t) float64, dS0 (f,e), dz0 (f)
 * noncausal:
 *   q (t,f), k (s,f), v (s,e), do (t,e), scale, eps, flags, chunk
 *   -> dq (t,f), dk (s,f), dv (s,e)
 *
 * flags as the forward's (linear_loops.c).  dg is written only when flags
 * has the decay bit.  The outer loop (batch x heads) is split over threads;
 * fewer slices than threads and a long sequence split the sequence instead.
 */
#include "gufunc_util.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/linear.h"
#include "kernels/linear_bwd.h"
#include "la_parallel.h"

/* causal */
enum { LB_Q, LB_K, LB_V, LB_G, LB_S0, LB_Z0, LB_DO, LB_DS, LB_DZ, LB_SCALE, LB_EPS,
       LB_FLAGS, LB_CHUNK, LB_DQ, LB_DK, LB_DV, LB_DG, LB_DS0, LB_DZ0 };
/* non-causal */
enum { NB_Q, NB_K, NB_V, NB_DO, NB_SCALE, NB_EPS, NB_FLAGS, NB_CHUNK, NB_DQ, NB_DK, NB_DV };

typedef la_status (*la_bwd_fn)(const la_linear_bwd_args *, void *);

typedef struct {
    la_bwd_fn fn[2]; /* float32, float64 */
    int form;
} la_bwd_data;

/* Point the prototype at item i (causal). */
static void
bwd_bind(const la_call *c, la_linear_bwd_args *a, npy_intp i)
{
    a->q = LA_AT(c, LB_Q, i);
    a->k = LA_AT(c, LB_K, i);
    a->v = LA_AT(c, LB_V, i);
    if (a->g != NULL) {
        a->g = (const double *)LA_AT(c, LB_G, i);
        a->dg = (double *)LA_AT(c, LB_DG, i);
    }
    a->s0 = LA_AT(c, LB_S0, i);
    a->z0 = LA_AT(c, LB_Z0, i);
    a->dout = LA_AT(c, LB_DO, i);
    a->ds = LA_AT(c, LB_DS, i);
    a->dz = LA_AT(c, LB_DZ, i);
    a->dq = LA_AT(c, LB_DQ, i);
    a->dk = LA_AT(c, LB_DK, i);
    a->dv = LA_AT(c, LB_DV, i);
    a->ds0 = LA_AT(c, LB_DS0, i);
    a->dz0 = LA_AT(c, LB_DZ0, i);
}

static la_status
bwd_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    const la_bwd_data *d = (const la_bwd_data *)c->data;
    la_linear_bwd_args a = *(const la_linear_bwd_args *)proto;
    if (d->form == LA_FORM_NONCAUSAL) {
        a.q = LA_AT(c, NB_Q, i);
        a.k = LA_AT(c, NB_K, i);
        a.v = LA_AT(c, NB_V, i);
        a.dout = LA_AT(c, NB_DO, i);
        a.dq = LA_AT(c, NB_DQ, i);
        a.dk = LA_AT(c, NB_DK, i);
        a.dv = LA_AT(c, NB_DV, i);
    }
    else {
        bwd_bind(c, &a, i);
    }
    return d->fn[c->f64](&a, work);
}

/*
 * Sequence parallelism (docs/design/grad.md §2.6) for fewer (batch, head)
 * slices than threads: the chunks' state increments (pass 0, in parallel),
 * a serial scan into the state entering every chunk; the chunks' shares of
 * the state cotangent (pass 1), a serial reverse scan storing the cotangent
 * leaving every chunk; every chunk's gradients (pass 2).  The operations are
 * those of the serial chunked backward: bit-identical results.
 */
typedef struct {
    const la_linear_bwd_args *a;
    int f64, pass;
    la_index C, nch;
    char *Sst, *Dl; /* nch blocks of f x ec each */
    double *betas;
    size_t sbytes;
} la_bwd_seq;

static la_status
bwd_seq_item(void *vctx, la_index j, char *work)
{
    la_bwd_seq *c = (la_bwd_seq *)vctx;
    const la_index t0 = j * c->C;
    void *S = c->Sst + (size_t)j * c->sbytes, *D = c->Dl + (size_t)j * c->sbytes;
    if (c->pass == 0) {
        if (j + 1 < c->nch) {
            c->betas[j] = c->f64 ? la_linear_bwd_state_delta_f64(c->a, work, t0, D)
                                 : la_linear_bwd_state_delta_f32(c->a, work, t0, D);
        }
    }
    else if (c->pass == 1) {
        c->betas[j] = c->f64 ? la_linear_bwd_chunk_pass1_f64(c->a, work, t0, S, D)
                             : la_linear_bwd_chunk_pass1_f32(c->a, work, t0, S, D);
    }
    else if (c->f64) {
        la_linear_bwd_chunk_pass2_f64(c->a, work, t0, S, D);
    }
    else {
        la_linear_bwd_chunk_pass2_f32(c->a, work, t0, S, D);
    }
    return LA_OK;
}

/* X <- e^beta X + Delta over m elements. */
static void
bwd_seq_step(int f64, la_index m, char *X, double beta, const char *D)
{
    f64 ? la_linear_bwd_step_f64(m, (double *)X, beta, (const double *)D)
        : la_linear_bwd_step_f32(m, (float *)X, beta, (const float *)D);
}

static la_status
bwd_seqpar_slice(const la_linear_bwd_args *a, int f64, int nth)
{
    const size_t is = f64 ? sizeof(double) : sizeof(float);
    const la_index C = a->chunk < a->t ? a->chunk : a->t;
    const size_t fe = (size_t)(a->f * (a->e + (a->norm == LA_NORM_DIV))) * is;
    const size_t wsize = LA_ALIGN_BYTES(la_linear_bwd_work_size(LA_FORM_CHUNK_ONE, a, is));
    la_bwd_seq c = {a, f64, 0, C, (a->t + C - 1) / C, NULL, NULL, NULL,
                    LA_ALIGN_BYTES(fe)};
    la_status st = LA_ERR_NOMEM;
    char *dS, *tmp, *work = malloc(wsize * (size_t)nth + 64);
    la_index j;
    c.Sst = malloc(c.sbytes * (size_t)(2 * c.nch + 2));
    c.betas = malloc(sizeof(double) * (size_t)c.nch);
    if (c.Sst == NULL || c.betas == NULL || work == NULL) {
        goto done;
    }
    c.Dl = c.Sst + c.sbytes * (size_t)c.nch;
    dS = c.Dl + c.sbytes * (size_t)c.nch;
    tmp = dS + c.sbytes;
    f64 ? la_linear_bwd_states_in_f64(a, (double *)c.Sst, (double *)dS)
        : la_linear_bwd_states_in_f32(a, (float *)c.Sst, (float *)dS);
    /* the state entering every chunk */
    if ((st = la_parallel_items(c.nch, nth, bwd_seq_item, &c, work, wsize)) != LA_OK) {
        goto done;
    }
    for (j = 0; j + 1 < c.nch; j++) {
        char *Sn = c.Sst + (size_t)(j + 1) * c.sbytes;
        memcpy(Sn, c.Sst + (size_t)j * c.sbytes, fe);
        bwd_seq_step(f64, (la_index)(fe / is), Sn, c.betas[j], c.Dl + (size_t)j * c.sbytes);
    }
    /* the chunks' shares of the cotangent, then the reverse scan: Dl[j] <- the
     * cotangent of the state leaving chunk j */
    c.pass = 1;
    if ((st = la_parallel_items(c.nch, nth, bwd_seq_item, &c, work, wsize)) != LA_OK) {
        goto done;
    }
    for (j = c.nch - 1; j >= 0; j--) {
        char *D = c.Dl + (size_t)j * c.sbytes;
        memcpy(tmp, D, fe);
        memcpy(D, dS, fe);
        bwd_seq_step(f64, (la_index)(fe / is), dS, c.betas[j], tmp);
    }
    /* every chunk's gradients */
    c.pass = 2;
    if ((st = la_parallel_items(c.nch, nth, bwd_seq_item, &c, work, wsize)) == LA_OK) {
        f64 ? la_linear_bwd_state_out_f64(a, (const double *)dS)
            : la_linear_bwd_state_out_f32(a, (const float *)dS);
    }
done:
    free(c.Sst);
    free(c.betas);
    free(work);
    return st;
}

static void
bwd_loop(const la_call *c)
{
    const la_bwd_data *d = (const la_bwd_data *)c->data;
    const int causal = d->form != LA_FORM_NONCAUSAL;
    const int nth = la_get_num_threads();
    la_linear_bwd_args a;
    npy_int64 flags;

    memset(&a, 0, sizeof(a));
    a.t = la_dim(c, "t");
    a.f = la_dim(c, "f");
    a.e = la_dim(c, "e");
    a.s = causal ? a.t : la_dim(c, "s");
    /* q, k, v sit at the same positions in both signatures */
    a.q_rs = la_stride(c, LB_Q, 0);  a.q_cs = la_stride(c, LB_Q, 1);
    a.k_rs = la_stride(c, LB_K, 0);  a.k_cs = la_stride(c, LB_K, 1);
    a.v_rs = la_stride(c, LB_V, 0);  a.v_cs = la_stride(c, LB_V, 1);
    if (causal) {
        a.g_s = la_stride(c, LB_G, 0);
        a.s0_rs = la_stride(c, LB_S0, 0);  a.s0_cs = la_stride(c, LB_S0, 1);
        a.z0_s = la_stride(c, LB_Z0, 0);
        a.do_rs = la_stride(c, LB_DO, 0);  a.do_cs = la_stride(c, LB_DO, 1);
        a.ds_rs = la_stride(c, LB_DS, 0);  a.ds_cs = la_stride(c, LB_DS, 1);
        a.dz_s = la_stride(c, LB_DZ, 0);
        a.dq_rs = la_stride(c, LB_DQ, 0);  a.dq_cs = la_stride(c, LB_DQ, 1);
        a.dk_rs = la_stride(c, LB_DK, 0);  a.dk_cs = la_stride(c, LB_DK, 1);
        a.dv_rs = la_stride(c, LB_DV, 0);  a.dv_cs = la_stride(c, LB_DV, 1);
        a.dg_s = la_stride(c, LB_DG, 0);
        a.ds0_rs = la_stride(c, LB_DS0, 0); a.ds0_cs = la_stride(c, LB_DS0, 1);
        a.dz0_s = la_stride(c, LB_DZ0, 0);
    }
    else {
        a.do_rs = la_stride(c, NB_DO, 0);  a.do_cs = la_stride(c, NB_DO, 1);
        a.dq_rs = la_stride(c, NB_DQ, 0);  a.dq_cs = la_stride(c, NB_DQ, 1);
        a.dk_rs = la_stride(c, NB_DK, 0);  a.dk_cs = la_stride(c, NB_DK, 1);
        a.dv_rs = la_stride(c, NB_DV, 0);  a.dv_cs = la_stride(c, NB_DV, 1);
    }
    a.scale = LA_OPT_F(c, causal ? LB_SCALE : NB_SCALE);
    a.eps = LA_OPT_F(c, causal ? LB_EPS : NB_EPS);
    flags = LA_OPT_I(c, causal ? LB_FLAGS : NB_FLAGS);
    a.chunk = (la_index)LA_OPT_I(c, causal ? LB_CHUNK : NB_CHUNK);
    a.chunk = a.chunk < 1 ? 1 : a.chunk;
    a.fmap_q = (int)(flags & 15);
    a.fmap_k = (int)((flags >> 4) & 15);
    a.norm = (int)((flags >> 8) & 3);
    a.eps_mode = (int)((flags >> 10) & 3);
    /* any non-NULL marks "decayed"; bwd_bind sets the real pointers */
    a.g = causal && ((flags >> 12) & 1) ? (const double *)c->args[LB_G] : NULL;
    a.cancel = &la_cancel_flag;

    if (d->form == LA_FORM_CHUNKED && c->n < nth && a.t >= 4 * a.chunk * nth) {
        /* fewer slices than threads and a long sequence: split the sequence */
        const int sig = la_interrupt_begin();
        la_status st = LA_OK;
        npy_intp i;
        for (i = 0; i < c->n && st == LA_OK; i++) {
            la_linear_bwd_args s1 = a;
            bwd_bind(c, &s1, i);
            st = bwd_seqpar_slice(&s1, c->f64, nth);
        }
        if (la_interrupt_end(sig) && st == LA_OK) {
            st = LA_ERR_INTERRUPTED;
        }
        if (st != LA_OK) {
            la_raise(st, c->name, 0);
        }
        return;
    }
    /* about 12 f e flops per token and slice (docs/design/grad.md §2.6) */
    la_run(c, bwd_item, &a, la_linear_bwd_work_size(d->form, &a, c->is),
           12.0 * (double)(a.t > a.s ? a.t : a.s) * (double)(a.f > 0 ? a.f : 1) *
               (double)(a.e + 1));
}

static const la_bwd_data bd_rec = {
    {la_linear_bwd_recurrent_f32, la_linear_bwd_recurrent_f64}, LA_FORM_RECURRENT};
static const la_bwd_data bd_chk = {
    {la_linear_bwd_chunked_f32, la_linear_bwd_chunked_f64}, LA_FORM_CHUNKED};
static const la_bwd_data bd_nc = {
    {la_linear_bwd_noncausal_f32, la_linear_bwd_noncausal_f64}, LA_FORM_NONCAUSAL};

#define LA_CAUSAL_BWD_SIG                                                                  \
    "(t,f),(t,f),(t,e),(t),(f,e),(f),(t,e),(f,e),(f),(),(),(),()"                          \
    "->(t,f),(t,f),(t,e),(t),(f,e),(f)"
#define LA_CAUSAL_BWD_OPS                                                                  \
    "q:T k:T v:T g:d S0:T z0:T do:T dS:T dz:T scale:D eps:D flags:Q chunk:Q"               \
    " -> dq:T dk:T dv:T dg:d dS0:T dz0:T"

static const la_gufunc linear_bwd_table[] = {
    {"_causal_bwd_recurrent", LA_CAUSAL_BWD_SIG, LA_CAUSAL_BWD_OPS,
     "Backward of causal linear attention, recurrent (reverse scan) form.", bwd_loop, &bd_rec},
    {"_causal_bwd_chunked", LA_CAUSAL_BWD_SIG, LA_CAUSAL_BWD_OPS,
     "Backward of causal linear attention, chunked form.", bwd_loop, &bd_chk},
    {"_noncausal_bwd", "(t,f),(s,f),(s,e),(t,e),(),(),(),()->(t,f),(s,f),(s,e)",
     "q:T k:T v:T do:T scale:D eps:D flags:Q chunk:Q -> dq:T dk:T dv:T",
     "Backward of non-causal linear attention (and cross-attention).", bwd_loop, &bd_nc},
};

LA_REGISTER(linear_bwd, linear_bwd_table)
