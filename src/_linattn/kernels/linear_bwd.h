/*
 * linear_bwd.h -- backward (vector-Jacobian product) of the generic
 * linear-attention operator of linear.h, one (batch, head) slice per call
 * (docs/design/grad.md §2).
 *
 * Given the forward's inputs and the cotangents do (t, e) of the output and
 * dS (f, e), dz (f) of the final state, the kernels return the gradients of
 *   L = <do, o> + <dS, S_T> + <dz, z_T>
 * with respect to q, k, v (the raw inputs, through the feature map and
 * scale), the per-token log-decay g (float64) and the initial state S0, z0.
 *
 * chunked:   chunks in reverse (docs/design/grad.md §2.6).  A first sweep recomputes the
 *            state entering every chunk (ceil(t/C) blocks of f x (e+div)
 *            scratch, never per-token states) and parks the key features in
 *            the rows of dk (computed once); the reverse sweep carries the
 *            state cotangent dS_c and runs nine GEMMs per chunk, the decay
 *            factors being the forward's bounded ones (exp(b) <= 1,
 *            exp(beta - b) <= 1, masks from differences of float64 cumulative
 *            sums).  The decay gradient uses the spanning-pair form (§2.5),
 *            accumulated in float64.  chunk >= t is the quadratic form.
 * recurrent: reverse scan of dS token by token (§2.4), states recomputed per
 *            block of `chunk` tokens from the stored block start; the decay
 *            gradient is the direct a_t <S_{t-1}, dS>.
 * noncausal: S = Kf^T [V | 1], dQf = dN S^T, dS = Qf^T dN, dKf = [V | 1] dS^T,
 *            dV = Kf dS (§2.7); s != t allowed.
 *
 * Nothing is allocated: the caller passes la_linear_bwd_work_size() bytes.
 * dg is written for every token (0 where g < -1000, the clamp); a per-head
 * decay's gradient is the sum over t (done by the caller).
 */
#ifndef LA_LINEAR_BWD_H
#define LA_LINEAR_BWD_H

#include "la_common.h"

typedef struct {
    la_index t, s, f, e, chunk;
    /* forward inputs */
    const void *q, *k, *v;
    const double *g;      /* per-token log-decay; NULL: no decay */
    const void *s0, *z0;  /* initial state (f, e), (f); causal only */
    /* cotangents */
    const void *dout;     /* (t, e) */
    const void *ds, *dz;  /* final state (f, e), (f); causal only */
    /* gradients (outputs) */
    void *dq, *dk, *dv;
    double *dg;           /* (t); written when g != NULL */
    void *ds0, *dz0;      /* (f, e), (f); causal only (dz0 = 0 unless div) */
    /* strides in elements: row, column */
    la_index q_rs, q_cs, k_rs, k_cs, v_rs, v_cs, do_rs, do_cs;
    la_index g_s, dg_s;
    la_index s0_rs, s0_cs, z0_s, ds_rs, ds_cs, dz_s;
    la_index dq_rs, dq_cs, dk_rs, dk_cs, dv_rs, dv_cs;
    la_index ds0_rs, ds0_cs, dz0_s;
    /* options, as la_linear_args */
    double scale, eps;
    int fmap_q, fmap_k, norm, eps_mode;
    const volatile int *cancel;
} la_linear_bwd_args;

/* form: LA_FORM_RECURRENT, LA_FORM_CHUNKED, LA_FORM_NONCAUSAL or LA_FORM_CHUNK_ONE
 * (one chunk worker of the sequence-parallel form) (linear.h). */
size_t la_linear_bwd_work_size(int form, const la_linear_bwd_args *a, size_t itemsize);

la_status la_linear_bwd_chunked_f32(const la_linear_bwd_args *a, void *work);
la_status la_linear_bwd_chunked_f64(const la_linear_bwd_args *a, void *work);
la_status la_linear_bwd_recurrent_f32(const la_linear_bwd_args *a, void *work);
la_status la_linear_bwd_recurrent_f64(const la_linear_bwd_args *a, void *work);
la_status la_linear_bwd_noncausal_f32(const la_linear_bwd_args *a, void *work);
la_status la_linear_bwd_noncausal_f64(const la_linear_bwd_args *a, void *work);

/*
 * The chunked backward in pieces, for the sequence-parallel form run by the glue
 * when there are fewer slices than threads (docs/design/grad.md §2.6).  States are
 * f x (e + div) blocks [S | z]; work is LA_FORM_CHUNK_ONE bytes.
 *   states_in:    S0a <- [s0 | z0], dSa <- [ds | dz];
 *   state_delta:  Delta = the increment of the state over the chunk at t0 on a zero
 *                 state; returns its total log-decay beta;
 *   step:         X <- e^beta X + Delta (elementwise): the forward scan
 *                 S_c = step(S_{c-1}, Delta_c) and the reverse scan
 *                 dS_{c-1} = step(dS_c, Delta'_c);
 *   chunk_pass1:  Delta' = the chunk's share of the entering state's cotangent;
 *                 returns beta (every chunk but the last reads the key features
 *                 that its state_delta parked in the rows of dk);
 *   chunk_pass2:  dq, dk, dv, dg of the chunk from its entering state and the
 *                 cotangent of its leaving state;
 *   state_out:    [ds0 | dz0] <- dSa.
 * The serial chunked backward performs exactly these operations in this order,
 * so the two agree bit for bit.
 */
void la_linear_bwd_states_in_f32(const la_linear_bwd_args *a, float *S0a, float *dSa);
void la_linear_bwd_states_in_f64(const la_linear_bwd_args *a, double *S0a, double *dSa);
double la_linear_bwd_state_delta_f32(const la_linear_bwd_args *a, void *work, la_index t0,
                                     float *Delta);
double la_linear_bwd_state_delta_f64(const la_linear_bwd_args *a, void *work, la_index t0,
                                     double *Delta);
void la_linear_bwd_step_f32(la_index m, float *X, double beta, const float *Delta);
void la_linear_bwd_step_f64(la_index m, double *X, double beta, const double *Delta);
double la_linear_bwd_chunk_pass1_f32(const la_linear_bwd_args *a, void *work, la_index t0,
                                     const float *S_enter, float *Delta);
double la_linear_bwd_chunk_pass1_f64(const la_linear_bwd_args *a, void *work, la_index t0,
                                     const double *S_enter, double *Delta);
void la_linear_bwd_chunk_pass2_f32(const la_linear_bwd_args *a, void *work, la_index t0,
                                   const float *S_enter, const float *dS_leave);
void la_linear_bwd_chunk_pass2_f64(const la_linear_bwd_args *a, void *work, la_index t0,
                                   const double *S_enter, const double *dS_leave);
void la_linear_bwd_state_out_f32(const la_linear_bwd_args *a, const float *dSa);
void la_linear_bwd_state_out_f64(const la_linear_bwd_args *a, const double *dSa);

#endif
