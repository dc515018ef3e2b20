/*
 * lara_loops.c -- gufunc loops for RA and LARA (kernels/lara.h).
 *
 * _ra and _lara (operands in the table at the end).
 */
#include "gufunc_util.h"

#include "kernels/lara.h"

enum { RA_Q, RA_K, RA_V, RA_NOISE, RA_UNIF, RA_SCALE, RA_SIGMA, RA_FLAGS, RA_O };
enum { LR_Q, LR_K, LR_V, LR_QBAR, LR_MU, LR_OMEGA, LR_SCALE, LR_ALPHA, LR_FLAGS, LR_O };

static la_status
ra_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    la_lara_args a = *(const la_lara_args *)proto;
    a.q = LA_AT(c, RA_Q, i);
    a.k = LA_AT(c, RA_K, i);
    a.v = LA_AT(c, RA_V, i);
    a.noise = LA_AT(c, RA_NOISE, i);
    a.unif = (const double *)LA_AT(c, RA_UNIF, i);
    a.o = LA_AT(c, RA_O, i);
    return (c->f64 ? la_ra_f64 : la_ra_f32)(&a, work);
}

static la_status
lara_item(const la_call *c, const void *proto, npy_intp i, void *work)
{
    la_lara_args a = *(const la_lara_args *)proto;
    a.q = LA_AT(c, LR_Q, i);
    a.k = LA_AT(c, LR_K, i);
    a.v = LA_AT(c, LR_V, i);
    a.qbar = LA_AT(c, LR_QBAR, i);
    a.mu = LA_AT(c, LR_MU, i);
    a.omega = LA_AT(c, LR_OMEGA, i);
    a.o = LA_AT(c, LR_O, i);
    return (c->f64 ? la_lara_f64 : la_lara_f32)(&a, work);
}

/* What both loops share: the sizes and the strides of q, k, v. */
static void
lara_init(const la_call *c, la_lara_args *a)
{
    memset(a, 0, sizeof(*a));
    a->n = la_dim(c, "n");
    a->d = la_dim(c, "d");
    a->m = la_dim(c, "m");
    a->e = la_dim(c, "e");
    a->q_rs = la_stride(c, RA_Q, 0); a->q_cs = la_stride(c, RA_Q, 1);
    a->k_rs = la_stride(c, RA_K, 0); a->k_cs = la_stride(c, RA_K, 1);
    a->v_rs = la_stride(c, RA_V, 0); a->v_cs = la_stride(c, RA_V, 1);
}

static void
ra_loop(const la_call *c)
{
    la_lara_args a;
    lara_init(c, &a);
    a.c = la_dim(c, "s");
    a.nz_s0 = la_stride(c, RA_NOISE, 0);
    a.nz_s1 = la_stride(c, RA_NOISE, 1);
    a.nz_s2 = la_stride(c, RA_NOISE, 2);
    a.u_s0 = la_stride(c, RA_UNIF, 0); a.u_s1 = la_stride(c, RA_UNIF, 1);
    a.o_rs = la_stride(c, RA_O, 0); a.o_cs = la_stride(c, RA_O, 1);
    a.scale = LA_OPT_F(c, RA_SCALE);
    a.sigma = LA_OPT_F(c, RA_SIGMA);
    a.flags = (int)LA_OPT_I(c, RA_FLAGS);
    la_run(c, ra_item, &a, la_ra_work_size(&a, c->is), 0.0);
}

static void
lara_loop(const la_call *c)
{
    la_lara_args a;
    lara_init(c, &a);
    a.c = la_dim(c, "c");
    a.qb_rs = la_stride(c, LR_QBAR, 0); a.qb_cs = la_stride(c, LR_QBAR, 1);
    a.mu_rs = la_stride(c, LR_MU, 0); a.mu_cs = la_stride(c, LR_MU, 1);
    a.om_rs = la_stride(c, LR_OMEGA, 0); a.om_cs = la_stride(c, LR_OMEGA, 1);
    a.o_rs = la_stride(c, LR_O, 0); a.o_cs = la_stride(c, LR_O, 1);
    a.scale = LA_OPT_F(c, LR_SCALE);
    a.alpha_coeff = LA_OPT_F(c, LR_ALPHA);
    a.flags = (int)LA_OPT_I(c, LR_FLAGS);
    la_run(c, lara_item, &a, la_lara_work_size(&a, c->is), 0.0);
}

static const la_gufunc lara_table[] = {
    {"_ra", "(n,d),(m,d),(m,e),(n,s,d),(n,s),(),(),()->(n,e)",
     "q:T k:T v:T noise:T uniforms:d scale:D sigma:D flags:Q -> o:T",
     "Randomized attention (flags: bits 0-1 component, 4 no noise).", ra_loop, NULL},
    {"_lara", "(n,d),(m,d),(m,e),(c,d),(c,d),(c,d),(),(),()->(n,e)",
     "q:T k:T v:T qbar:T mu:T omega:T scale:D alpha_coeff:D flags:Q -> o:T",
     "Linear randomized attention (flags: 0 opt, 1 bh, 2 const).", lara_loop, NULL},
};

LA_REGISTER(lara, lara_table)
