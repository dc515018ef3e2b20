/*
 * linear_bwd_impl.h -- WARNING: included once per dtype by linear_bwd.c (no
 * include guard).  LA_T / LA_FN / LA_GEMM come from dtype/la_f32.h|la_f64.h.
 * The maths is docs/design/grad.md §2 (operator) and §3 (elementwise maps).
 */

/* dst (rows x cols, dense, leading dimension ld) <- src with any strides. */
static void
LA_FN(bwd_load)(LA_T *dst, la_index ld, const LA_T *src, la_index rs, la_index cs,
                la_index rows, la_index cols)
{
    la_index i, j;
    if (cs == 1 && rs == cols && ld == cols) {
        memcpy(dst, src, (size_t)(rows * cols) * sizeof(LA_T)); /* dense: one copy */
        return;
    }
    for (i = 0; i < rows; i++) {
        if (cs == 1) {
            memcpy(dst + i * ld, src + i * rs, (size_t)cols * sizeof(LA_T));
            continue;
        }
        for (j = 0; j < cols; j++) {
            dst[i * ld + j] = src[i * rs + j * cs];
        }
    }
}

/* dst with any strides <- src (rows x cols, dense, leading dimension ld). */
static void
LA_FN(bwd_store)(LA_T *dst, la_index rs, la_index cs, const LA_T *src, la_index ld,
                 la_index rows, la_index cols)
{
    la_index i, j;
    if (cs == 1 && rs == cols && ld == cols) {
        memcpy(dst, src, (size_t)(rows * cols) * sizeof(LA_T));
        return;
    }
    for (i = 0; i < rows; i++) {
        if (cs == 1) {
            memcpy(dst + i * rs, src + i * ld, (size_t)cols * sizeof(LA_T));
            continue;
        }
        for (j = 0; j < cols; j++) {
            dst[i * rs + j * cs] = src[i * ld + j];
        }
    }
}

/* n rows of features phi(scale x) (dense n x f). */
static void
LA_FN(bwd_features)(int fmap, double scale, const LA_T *x, la_index rs, la_index cs,
                    la_index n, la_index f, LA_T *y)
{
    la_index r;
    for (r = 0; r < n; r++) {
        LA_FN(la_featmap_row)(fmap, scale, x + r * rs, cs, f, y + r * f);
    }
}

/* [v | 1] rows (dense n x ec). */
static void
LA_FN(bwd_values)(const LA_T *v, la_index rs, la_index cs, la_index n, la_index e,
                  la_index ec, LA_T *y)
{
    la_index r;
    LA_FN(bwd_load)(y, ec, v, rs, cs, n, e);
    if (ec > e) {
        for (r = 0; r < n; r++) {
            y[r * ec + e] = (LA_T)1;
        }
    }
}

/*
 * Feature-map backward (docs/design/grad.md §3), elementwise, from the features phi
 * themselves (no exp): out = scale * dphi * phi'(u), u = scale x, with
 * phi' = 1 (identity); 1 if phi > 1 else phi (elu+1: phi = e^u for u <= 0);
 * [phi > 0] (ReLU); 1 if phi > 0 else phi + 1 (elu).  n rows of f.
 */
LA_TARGET_CLONES static void
LA_FN(bwd_fmap)(int fmap, double scale_d, const LA_T *LA_RESTRICT phi, la_index n,
                la_index f, const LA_T *LA_RESTRICT dphi, LA_T *out, la_index ors,
                la_index ocs)
{
    const LA_T scale = (LA_T)scale_d;
    LA_T tmp[256];
    la_index r, j, j0;
    for (r = 0; r < n; r++) {
        const LA_T *pr = phi + r * f, *dr = dphi + r * f;
        LA_T *orow = out + r * ors;
        for (j0 = 0; j0 < f; j0 += 256) {
            const la_index nb = f - j0 < 256 ? f - j0 : 256;
            const LA_T *p = pr + j0, *d = dr + j0;
            LA_T *buf = ocs == 1 ? orow + j0 : tmp; /* dense rows: written in place */
            switch (fmap) {
            case LA_FMAP_ELU1:
                for (j = 0; j < nb; j++) {
                    buf[j] = scale * d[j] * (p[j] > (LA_T)1 ? (LA_T)1 : p[j]);
                }
                break;
            case LA_FMAP_ELU:
                for (j = 0; j < nb; j++) {
                    buf[j] = scale * d[j] * (p[j] > 0 ? (LA_T)1 : p[j] + (LA_T)1);
                }
                break;
            case LA_FMAP_RELU:
                for (j = 0; j < nb; j++) {
                    buf[j] = p[j] > 0 ? scale * d[j] : (LA_T)0;
                }
                break;
            default:
                for (j = 0; j < nb; j++) {
                    buf[j] = scale * d[j];
                }
                break;
            }
            for (j = 0; j < nb && ocs != 1; j++) {
                orow[(j0 + j) * ocs] = buf[j];
            }
        }
    }
}

/* The guard gamma(den) and its slope (docs/design/grad.md §2.2; slope 1 at the kink). */
static double
LA_FN(bwd_guard)(const la_linear_bwd_args *a, double den, double *slope)
{
    const double eps = (double)(LA_T)a->eps;
    double ad;
    switch (a->eps_mode) {
    case LA_EPS_CLAMP:
        *slope = den < eps ? 0.0 : 1.0;
        return den < eps ? eps : den;
    case LA_EPS_ABS_CLAMP:
        ad = fabs(den);
        *slope = ad < eps ? 0.0 : (den > 0 ? 1.0 : (den < 0 ? -1.0 : 0.0));
        return ad < eps ? eps : ad;
    default:
        *slope = 1.0;
        return den + eps;
    }
}

/*
 * Finishing the row backward (docs/design/grad.md §2.2): num (ec; num[e] = den in div
 * mode), the output cotangent dor (e) -> dN (ec).
 */
static void
LA_FN(bwd_finish_row)(const la_linear_bwd_args *a, const LA_T *num, const LA_T *dor,
                      LA_T *dN)
{
    const la_index e = a->e;
    la_index j;
    if (a->norm == LA_NORM_DIV) {
        double dn = 0, slope, gam;
        for (j = 0; j < e; j++) {
            dn += (double)dor[j] * (double)num[j];
        }
        gam = LA_FN(bwd_guard)(a, (double)num[e], &slope);
        for (j = 0; j < e; j++) {
            dN[j] = (LA_T)((double)dor[j] / gam);
        }
        dN[e] = (LA_T)(-dn / (gam * gam) * slope);
    }
    else if (a->norm == LA_NORM_RMS) {
        double ss = 0, dn = 0, r, rho, c;
        for (j = 0; j < e; j++) {
            ss += (double)num[j] * (double)num[j];
            dn += (double)dor[j] * (double)num[j];
        }
        r = e > 0 ? sqrt(ss / (double)e) : 0.0;
        rho = r + a->eps;
        c = r > 0 ? dn / ((double)e * r * rho) : 0.0;
        for (j = 0; j < e; j++) {
            dN[j] = (LA_T)(((double)dor[j] - c * (double)num[j]) / rho);
        }
    }
    else {
        for (j = 0; j < e; j++) {
            dN[j] = dor[j];
        }
    }
}

/* sum_i x[i] y[i] in double. */
LA_TARGET_CLONES static double
LA_FN(bwd_dot)(const LA_T *x, const LA_T *y, la_index n)
{
    double s = 0;
    la_index i;
#pragma omp simd reduction(+ : s)
    for (i = 0; i < n; i++) {
        s += (double)x[i] * (double)y[i];
    }
    return s;
}

/* --------------------------------------------------------- triangles -- */

static la_index
LA_FN(bwd_half)(la_index n)
{
    return n >= 2 * LA_BWD_TRI_MIN ? n / 2 : n;
}

/* Lower blocks of C = A B^T (n x n): the upper-right quarter is left alone
 * (the caller's masking loop writes zeros there). */
static void
LA_FN(bwd_tri_abt)(la_index n, la_index k, const LA_T *A, la_index lda, const LA_T *B,
                   la_index ldb, LA_T *Cm, la_index ldc)
{
    const la_index h = LA_FN(bwd_half)(n);
    LA_GEMM(0, 1, h, h, k, 1, A, lda, B, ldb, 0, Cm, ldc);
    LA_GEMM(0, 1, n - h, n, k, 1, A + h * lda, lda, B, ldb, 0, Cm + h * ldc, ldc);
}

/* C = A B with A (n x n) lower triangular. */
static void
LA_FN(bwd_tri_ab)(la_index n, la_index w, const LA_T *A, la_index lda, const LA_T *B,
                  la_index ldb, LA_T *Cm, la_index ldc)
{
    const la_index h = LA_FN(bwd_half)(n);
    LA_GEMM(0, 0, h, w, h, 1, A, lda, B, ldb, 0, Cm, ldc);
    LA_GEMM(0, 0, n - h, w, n, 1, A + h * lda, lda, B, ldb, 0, Cm + h * ldc, ldc);
}

/* C = A^T B with A (n x n) lower triangular. */
static void
LA_FN(bwd_tri_atb)(la_index n, la_index w, const LA_T *A, la_index lda, const LA_T *B,
                   la_index ldb, LA_T *Cm, la_index ldc)
{
    const la_index h = LA_FN(bwd_half)(n);
    LA_GEMM(1, 0, h, w, n, 1, A, lda, B, ldb, 0, Cm, ldc);
    LA_GEMM(1, 0, n - h, w, n - h, 1, A + h * lda + h, lda, B + h * ldb, ldb, 0,
            Cm + h * ldc, ldc);
}

/* ---------------------------------------------------- initial / final -- */

/* Sx (f x ec) <- [s0 | z0]. */
static void
LA_FN(bwd_state_in)(const la_linear_bwd_args *a, la_index ec, const void *s, la_index rs,
                    la_index cs, const void *z, la_index zs, LA_T *Sx)
{
    la_index i;
    LA_FN(bwd_load)(Sx, ec, (const LA_T *)s, rs, cs, a->f, a->e);
    if (ec > a->e) {
        for (i = 0; i < a->f; i++) {
            Sx[i * ec + a->e] = ((const LA_T *)z)[i * zs];
        }
    }
}

/* [ds0 | dz0] <- dS; dz0 = 0 without the denominator column. */
static void
LA_FN(bwd_state_out)(const la_linear_bwd_args *a, la_index ec, const LA_T *dS)
{
    LA_T *dz0 = (LA_T *)a->dz0;
    la_index i;
    LA_FN(bwd_store)((LA_T *)a->ds0, a->ds0_rs, a->ds0_cs, dS, ec, a->f, a->e);
    for (i = 0; i < a->f; i++) {
        dz0[i * a->dz0_s] = ec > a->e ? dS[i * ec + a->e] : (LA_T)0;
    }
}

/* -------------------------------------------------------------- chunked -- */

typedef struct {
    LA_T *Sst, *Qc, *Kc, *X, *Y, *dQ, *dK, *Vc, *dN, *Nn, *Dc, *dV, *P, *Z, *L, *dS, *Dl;
    double *b, *eb, *kf, *u, *w, *rs, *pw;
    la_index C, ec, nch;
    int decayed, const_decay;
} LA_FN(bwd_ws);

/* with_states: carve the ceil(t/C) chunk-entering states (the serial form);
 * a chunk worker of the sequence-parallel form gets them from the caller. */
static void
LA_FN(bwd_ws_init)(const la_linear_bwd_args *a, void *work, LA_FN(bwd_ws) *w,
                   int with_states)
{
    const la_index f = a->f, e = a->e, C = la_block_rows(a->chunk, a->t);
    const la_index ec = e + (a->norm == LA_NORM_DIV);
    char *p = (char *)work;
    la_index r;
    w->C = C;
    w->ec = ec;
    w->nch = bwd_nblocks(a->t, C);
    w->decayed = a->g != NULL;
    w->const_decay = w->decayed && a->g_s == 0;
#define LA_TAKE(n) ((LA_T *)la_carve(&p, (size_t)(n) * sizeof(LA_T)))
    w->Sst = with_states ? LA_TAKE(w->nch * f * ec) : NULL;
    w->Qc = (LA_T *)la_carve(&p, (size_t)(6 * C * f) * sizeof(LA_T));
    w->Kc = w->Qc + C * f;
    w->X = w->Kc + C * f;
    w->Y = w->X + C * f;
    w->dQ = w->Y + C * f;
    w->dK = w->dQ + C * f;
    w->Vc = LA_TAKE(C * ec);
    w->dN = LA_TAKE(C * ec);
    w->Nn = LA_TAKE(C * ec);
    w->Dc = LA_TAKE(C * (e + 1));
    w->dV = LA_TAKE(C * (e + 1));
    w->P = (LA_T *)la_carve(&p, (size_t)(3 * C * C) * sizeof(LA_T));
    w->Z = w->P + C * C;
    w->L = w->Z + C * C;
    w->dS = LA_TAKE(f * ec);
    w->Dl = LA_TAKE(f * ec);
#undef LA_TAKE
    w->b = (double *)la_carve(&p, (size_t)(8 * C) * sizeof(double));
    w->eb = w->b + C;
    w->kf = w->eb + C;
    w->u = w->kf + C;
    w->w = w->u + C;
    w->rs = w->w + C;
    w->pw = w->rs + C;
    if (w->const_decay) {
        const double g0 = la_clamp_decay(a->g[0]);
        for (r = 0; r < C; r++) {
            w->pw[r] = exp((double)r * g0);
        }
    }
}

/* b (inclusive in-chunk cumulative log-decay, float64), exp(b), exp(beta - b);
 * returns beta. */
static double
LA_FN(bwd_decay)(const la_linear_bwd_args *a, LA_FN(bwd_ws) *w, la_index t0, la_index n)
{
    double acc = 0, beta;
    la_index r;
    if (!w->decayed) {
        for (r = 0; r < n; r++) {
            w->b[r] = 0;
            w->eb[r] = 1;
            w->kf[r] = 1;
        }
        return 0.0;
    }
    for (r = 0; r < n; r++) {
        acc = w->const_decay ? (double)(r + 1) * la_clamp_decay(a->g[0])
                             : acc + la_clamp_decay(a->g[(t0 + r) * a->g_s]);
        w->b[r] = acc;
    }
    beta = w->b[n - 1];
    for (r = 0; r < n; r++) {
        w->eb[r] = exp(w->b[r]);
        w->kf[r] = exp(beta - w->b[r]);
    }
    return beta;
}

/*
 * Key features and [v | 1] of tokens [t0, t0+n).  The features are computed
 * once: the forward sweep (bwd_state_delta, every chunk but the last) parks
 * them in the rows of dk, which the reverse sweep reads back before it
 * overwrites them with the chunk's gradient (the same values: bit-identical).
 * keys: LA_KEYS_* (linear_bwd.c).
 */
static void
LA_FN(bwd_load_kv)(const la_linear_bwd_args *a, LA_FN(bwd_ws) *w, la_index t0, la_index n,
                   int keys)
{
    const LA_T *k = (const LA_T *)a->k, *v = (const LA_T *)a->v;
    LA_T *dk = (LA_T *)a->dk + t0 * a->dk_rs;
    if (keys == LA_KEYS_PARKED) {
        LA_FN(bwd_load)(w->Kc, a->f, dk, a->dk_rs, a->dk_cs, n, a->f);
    }
    else {
        LA_FN(bwd_features)(a->fmap_k, 1.0, k + t0 * a->k_rs, a->k_rs, a->k_cs, n, a->f,
                            w->Kc);
    }
    if (keys == LA_KEYS_PARK) {
        LA_FN(bwd_store)(dk, a->dk_rs, a->dk_cs, w->Kc, a->f, n, a->f);
    }
    LA_FN(bwd_values)(v + t0 * a->v_rs, a->v_rs, a->v_cs, n, a->e, w->ec, w->Vc);
}

/* Kc rows *= exp(beta - b) (the forward's bounded key factors). */
static void
LA_FN(bwd_scale_keys)(LA_FN(bwd_ws) *w, la_index n, la_index f)
{
    la_index r, j;
    if (!w->decayed) {
        return;
    }
    for (r = 0; r < n; r++) {
        const LA_T c = (LA_T)w->kf[r];
        for (j = 0; j < f; j++) {
            w->Kc[r * f + j] *= c;
        }
    }
}

/* The state increment of the chunk at t0 on a zero state, Delta = (diag(e^{beta-b})
 * K)^T [V | 1]; returns beta. */
static double
LA_FN(bwd_state_delta)(const la_linear_bwd_args *a, LA_FN(bwd_ws) *w, la_index t0,
                       LA_T *Delta)
{
    const la_index n = a->t - t0 < w->C ? a->t - t0 : w->C;
    const double beta = LA_FN(bwd_decay)(a, w, t0, n);
    LA_FN(bwd_load_kv)(a, w, t0, n, LA_KEYS_PARK);
    LA_FN(bwd_scale_keys)(w, n, a->f);
    LA_GEMM(1, 0, a->f, w->ec, n, 1, w->Kc, a->f, w->Vc, w->ec, 0, Delta, w->ec);
    return beta;
}

/* X <- e^beta X + Delta (elementwise; the same operation in every form). */
static void
LA_FN(bwd_step)(la_index m, LA_T *X, double beta, const LA_T *Delta)
{
    const LA_T eb = (LA_T)exp(beta);
    la_index j;
    for (j = 0; j < m; j++) {
        X[j] = eb * X[j] + Delta[j];
    }
}

/* The state entering every chunk (the forward's own state update). */
static la_status
LA_FN(bwd_states)(const la_linear_bwd_args *a, LA_FN(bwd_ws) *w)
{
    const la_index fe = a->f * w->ec;
    la_index c;
    LA_FN(bwd_state_in)(a, w->ec, a->s0, a->s0_rs, a->s0_cs, a->z0, a->z0_s, w->Sst);
    for (c = 0; c + 1 < w->nch; c++) {
        double beta;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        beta = LA_FN(bwd_state_delta)(a, w, c * w->C, w->Dl);
        memcpy(w->Sst + (c + 1) * fe, w->Sst + c * fe, (size_t)fe * sizeof(LA_T));
        LA_FN(bwd_step)(fe, w->Sst + (c + 1) * fe, beta, w->Dl);
    }
    return LA_OK;
}

/* Pass A: P = (Q K^T) o L with L_rj = exp(b_r - b_j) (r >= j, from
 * differences, docs/design/grad.md §2.6), kept in w->L for the cotangent. */
static void
LA_FN(bwd_mask_p)(LA_FN(bwd_ws) *w, la_index n)
{
    const la_index C = w->C;
    la_index r, j;
    for (r = 0; r < n; r++) {
        LA_T *Pr = w->P + r * C, *Lr = w->L + r * C;
        if (w->const_decay) {
            for (j = 0; j < r; j++) {
                Lr[j] = (LA_T)w->pw[r - j];
            }
        }
        else if (w->decayed) {
            double *d = w->u; /* scratch row; u is filled later */
            for (j = 0; j < r; j++) {
                d[j] = w->b[r] - w->b[j];
            }
            la_vexp_f64(r, d, d);
            for (j = 0; j < r; j++) {
                Lr[j] = (LA_T)d[j];
            }
        }
        else {
            for (j = 0; j < r; j++) {
                Lr[j] = (LA_T)1;
            }
        }
        for (j = 0; j < r; j++) {
            Pr[j] *= Lr[j];
        }
        for (j = r + 1; j < n; j++) {
            Pr[j] = 0;
        }
    }
}

/*
 * Pass B, row by row: the finished cotangent dN_a (div: from den_r = P 1 +
 * e^b q.z and do.num_r = P.Z0 + e^b q.X0, docs/design/grad.md §2.2, turning Z = do V^T
 * into dN V_a^T and X = do S^T into dN S_a^T), the in-chunk pair sums of the
 * decay gradient (rs), and dP = Z o L.
 */
LA_TARGET_CLONES static void
LA_FN(bwd_rows)(const la_linear_bwd_args *a, LA_FN(bwd_ws) *w, const LA_T *S, la_index n)
{
    const la_index f = a->f, e = a->e, ec = w->ec, C = w->C;
    const int div = a->norm == LA_NORM_DIV;
    const LA_T *Qc = w->Qc, *Dc = w->Dc;
    LA_T *X = w->X, *P = w->P, *Z = w->Z, *dN = w->dN;
    la_index r, j, i;
    if (w->decayed) {
        for (j = 0; j < n; j++) {
            w->rs[j] = 0;
        }
    }
    for (r = 0; r < n; r++) {
        LA_T *Pr = P + r * C, *Zr = Z + r * C;
        const LA_T *Lr = w->L + r * C;
        if (div) {
            double den = 0, dn = 0, qz = 0, slope, gam;
            LA_T inv, dd;
#pragma omp simd reduction(+ : den, dn)
            for (j = 0; j <= r; j++) {
                den += (double)Pr[j];
                dn += (double)Pr[j] * (double)Zr[j];
            }
#pragma omp simd reduction(+ : qz)
            for (i = 0; i < f; i++) {
                qz += (double)Qc[r * f + i] * (double)S[i * ec + e];
            }
            den += w->eb[r] * qz;
            dn += w->eb[r] * LA_FN(bwd_dot)(Qc + r * f, X + r * f, f);
            den = (double)(LA_T)den;
            gam = LA_FN(bwd_guard)(a, den, &slope);
            inv = (LA_T)(1.0 / gam);
            dd = (LA_T)(-dn / (gam * gam) * slope);
            for (j = 0; j < e; j++) {
                dN[r * ec + j] = Dc[r * e + j] * inv;
            }
            dN[r * ec + e] = dd;
            for (j = 0; j <= r; j++) {
                Zr[j] = Zr[j] * inv + dd;
            }
            for (i = 0; i < f; i++) {
                X[r * f + i] = X[r * f + i] * inv + dd * S[i * ec + e];
            }
        }
        else {
            memcpy(dN + r * ec, Dc + r * e, (size_t)e * sizeof(LA_T));
        }
        if (w->decayed) {
            /* pairs s < j <= r inside the chunk, M = P o (dN V_a^T):
             * rs[j] += sum_{s<j} M_rs, a prefix sum per row, so a pair that
             * no decay links (a reset between) adds exact zeros */
            double run = 0;
            for (j = 0; j < r; j++) {
                w->rs[j] += run;
                run += (double)Pr[j] * (double)Zr[j];
            }
            w->rs[r] += run;
        }
        for (j = 0; j < r; j++) {
            Zr[j] *= Lr[j];
        }
        for (j = r + 1; j < n; j++) {
            Zr[j] = 0;
        }
    }
}

/*
 * One chunk of the reverse sweep (docs/design/grad.md §2.5, §2.6) in three steps:
 * bwd_chunk_dn (features, P, the finished cotangent dN; returns beta),
 * bwd_chunk_rest (dq, dk, dv, dg from the state S entering the chunk and the
 * cotangent dS of the state leaving it) and bwd_chunk_delta (the chunk's
 * share (diag(e^b) Q)^T dN of the entering state's cotangent).
 */
static double
LA_FN(bwd_chunk_dn)(const la_linear_bwd_args *a, LA_FN(bwd_ws) *w, la_index t0,
                    la_index n, const LA_T *S)
{
    const la_index f = a->f, e = a->e, ec = w->ec, C = w->C;
    const LA_T *q = (const LA_T *)a->q;
    const LA_T *dout = (const LA_T *)a->dout;
    LA_T *Qc = w->Qc, *Kc = w->Kc, *X = w->X, *P = w->P, *Z = w->Z;
    LA_T *dN = w->dN, *Dc = w->Dc;
    double beta;
    la_index r, j;

    beta = LA_FN(bwd_decay)(a, w, t0, n);
    LA_FN(bwd_features)(a->fmap_q, a->scale, q + t0 * a->q_rs, a->q_rs, a->q_cs, n, f, Qc);
    /* every chunk but the last had its key features parked by bwd_state_delta */
    LA_FN(bwd_load_kv)(a, w, t0, n, t0 + n < a->t ? LA_KEYS_PARKED : LA_KEYS_MAP);
    LA_FN(bwd_load)(Dc, e, dout + t0 * a->do_rs, a->do_rs, a->do_cs, n, e);

    /* P = (Q K^T) o L */
    LA_FN(bwd_tri_abt)(n, f, Qc, f, Kc, f, P, C);
    LA_FN(bwd_mask_p)(w, n);

    if (a->norm == LA_NORM_RMS) {
        /* recompute num = P V + diag(e^b) Q S, then Dc <- dnum */
        LA_T *Nn = w->Nn;
        LA_FN(bwd_tri_ab)(n, ec, P, C, w->Vc, ec, Nn, ec);
        for (r = 0; r < n; r++) {
            const LA_T c = (LA_T)w->eb[r];
            for (j = 0; j < f; j++) {
                X[r * f + j] = c * Qc[r * f + j];
            }
        }
        LA_GEMM(0, 0, n, ec, f, 1, X, f, S, ec, 1, Nn, ec);
        for (r = 0; r < n; r++) {
            LA_FN(bwd_finish_row)(a, Nn + r * ec, Dc + r * e, dN + r * ec);
        }
        LA_FN(bwd_load)(Dc, e, dN, ec, 1, n, e);
    }

    /* Z = D V^T and X = D S^T with D = do (none, div) or dnum (norm); in div
     * mode they are fixed up row by row below into dN V_a^T and dN S_a^T */
    LA_FN(bwd_tri_abt)(n, e, Dc, e, w->Vc, ec, Z, C);
    LA_GEMM(0, 1, n, f, e, 1, Dc, e, S, ec, 0, X, f);

    LA_FN(bwd_rows)(a, w, S, n);
    return beta;
}

static void
LA_FN(bwd_chunk_rest)(const la_linear_bwd_args *a, LA_FN(bwd_ws) *w, la_index t0,
                      la_index n, double beta, const LA_T *S, const LA_T *dS)
{
    const la_index f = a->f, e = a->e, ec = w->ec, C = w->C;
    LA_T *Qc = w->Qc, *Kc = w->Kc, *X = w->X, *Y = w->Y, *P = w->P, *Z = w->Z;
    LA_T *dN = w->dN;
    double term3 = 0;
    la_index r, j;

    /* dQ = dP K + diag(e^b) dN S^T */
    LA_FN(bwd_tri_ab)(n, f, Z, C, Kc, f, w->dQ, f);
    for (r = 0; r < n; r++) {
        const LA_T c = (LA_T)w->eb[r];
        if (w->decayed) {
            w->u[r] = w->eb[r] * LA_FN(bwd_dot)(Qc + r * f, X + r * f, f);
        }
        for (j = 0; j < f; j++) {
            w->dQ[r * f + j] += c * X[r * f + j];
        }
    }
    LA_FN(bwd_fmap)(a->fmap_q, a->scale, Qc, n, f, w->dQ, (LA_T *)a->dq + t0 * a->dq_rs,
                    a->dq_rs, a->dq_cs);
    /* dK = dP^T Q + diag(e^{beta-b}) V_a dS^T */
    LA_GEMM(0, 1, n, f, ec, 1, w->Vc, ec, dS, ec, 0, Y, f);
    LA_FN(bwd_tri_atb)(n, f, Z, C, Qc, f, w->dK, f);
    for (r = 0; r < n; r++) {
        const LA_T c = (LA_T)w->kf[r];
        if (w->decayed) {
            w->w[r] = w->kf[r] * LA_FN(bwd_dot)(Kc + r * f, Y + r * f, f);
        }
        for (j = 0; j < f; j++) {
            w->dK[r * f + j] += c * Y[r * f + j];
        }
    }
    LA_FN(bwd_fmap)(a->fmap_k, 1.0, Kc, n, f, w->dK, (LA_T *)a->dk + t0 * a->dk_rs, a->dk_rs,
                    a->dk_cs);
    /* dV = P^T dnum + diag(e^{beta-b}) K dS[:, :E] */
    LA_FN(bwd_tri_atb)(n, e, P, C, dN, ec, w->dV, e);
    LA_FN(bwd_scale_keys)(w, n, f);
    LA_GEMM(0, 0, n, e, f, 1, Kc, f, dS, ec, 1, w->dV, e);

    if (w->decayed) {
        /* spanning-pair form: reverse cumsum (u), exclusive forward cumsum (w),
         * the in-chunk pairs (rs) and e^beta <S_{c-1}, dS_c> */
        double ru = 0, fw = 0;
        double *dgr = w->b; /* b is no longer needed */
        const double eB = exp(beta);
        if (eB > 0) {
            for (j = 0; j < f * ec; j++) {
                term3 += (double)S[j] * (double)dS[j];
            }
            term3 *= eB;
        }
        for (r = n - 1; r >= 0; r--) {
            ru += w->u[r];
            dgr[r] = ru + w->rs[r] + term3;
        }
        for (r = 0; r < n; r++) {
            const double gr = a->g[(t0 + r) * a->g_s];
            a->dg[(t0 + r) * a->dg_s] = gr < LA_DECAY_FLOOR ? 0.0 : dgr[r] + fw;
            fw += w->w[r];
        }
    }
    LA_FN(bwd_store)((LA_T *)a->dv + t0 * a->dv_rs, a->dv_rs, a->dv_cs, w->dV, e, n, e);
}

/* Delta = (diag(e^b) Q)^T dN_a: dS_{c-1} = e^beta dS_c + Delta.  Scales Qc. */
static void
LA_FN(bwd_chunk_delta)(const la_linear_bwd_args *a, LA_FN(bwd_ws) *w, la_index n,
                       LA_T *Delta)
{
    const la_index f = a->f;
    la_index r, j;
    for (r = 0; r < n && w->decayed; r++) {
        const LA_T c = (LA_T)w->eb[r];
        for (j = 0; j < f; j++) {
            w->Qc[r * f + j] *= c;
        }
    }
    LA_GEMM(1, 0, f, w->ec, n, 1, w->Qc, f, w->dN, w->ec, 0, Delta, w->ec);
}

la_status
LA_FN(la_linear_bwd_chunked)(const la_linear_bwd_args *a, void *work)
{
    LA_FN(bwd_ws) w;
    const la_index fe = a->f * (a->e + (a->norm == LA_NORM_DIV));
    la_index c;
    la_status st;
    LA_FN(bwd_ws_init)(a, work, &w, 1);
    st = LA_FN(bwd_states)(a, &w);
    if (st != LA_OK) {
        return st;
    }
    LA_FN(bwd_state_in)(a, w.ec, a->ds, a->ds_rs, a->ds_cs, a->dz, a->dz_s, w.dS);
    for (c = w.nch - 1; c >= 0 && a->t > 0; c--) {
        const la_index t0 = c * w.C, n = a->t - t0 < w.C ? a->t - t0 : w.C;
        const LA_T *S = w.Sst + c * fe;
        double beta;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        beta = LA_FN(bwd_chunk_dn)(a, &w, t0, n, S);
        LA_FN(bwd_chunk_rest)(a, &w, t0, n, beta, S, w.dS);
        LA_FN(bwd_chunk_delta)(a, &w, n, w.Dl);
        LA_FN(bwd_step)(fe, w.dS, beta, w.Dl);
    }
    LA_FN(bwd_state_out)(a, w.ec, w.dS);
    return LA_OK;
}

/* Pieces of the chunked backward for the sequence-parallel form (linear_bwd.h). */
double
LA_FN(la_linear_bwd_state_delta)(const la_linear_bwd_args *a, void *work, la_index t0,
                                 LA_T *Delta)
{
    LA_FN(bwd_ws) w;
    LA_FN(bwd_ws_init)(a, work, &w, 0);
    return LA_FN(bwd_state_delta)(a, &w, t0, Delta);
}

double
LA_FN(la_linear_bwd_chunk_pass1)(const la_linear_bwd_args *a, void *work, la_index t0,
                                 const LA_T *S_enter, LA_T *Delta)
{
    LA_FN(bwd_ws) w;
    const la_index C = la_block_rows(a->chunk, a->t);
    const la_index n = a->t - t0 < C ? a->t - t0 : C;
    double beta;
    LA_FN(bwd_ws_init)(a, work, &w, 0);
    beta = LA_FN(bwd_chunk_dn)(a, &w, t0, n, S_enter);
    LA_FN(bwd_chunk_delta)(a, &w, n, Delta);
    return beta;
}

void
LA_FN(la_linear_bwd_chunk_pass2)(const la_linear_bwd_args *a, void *work, la_index t0,
                                 const LA_T *S_enter, const LA_T *dS_leave)
{
    LA_FN(bwd_ws) w;
    const la_index C = la_block_rows(a->chunk, a->t);
    const la_index n = a->t - t0 < C ? a->t - t0 : C;
    double beta;
    LA_FN(bwd_ws_init)(a, work, &w, 0);
    beta = LA_FN(bwd_chunk_dn)(a, &w, t0, n, S_enter);
    LA_FN(bwd_chunk_rest)(a, &w, t0, n, beta, S_enter, dS_leave);
}

void
LA_FN(la_linear_bwd_step)(la_index m, LA_T *X, double beta, const LA_T *Delta)
{
    LA_FN(bwd_step)(m, X, beta, Delta);
}

void
LA_FN(la_linear_bwd_states_in)(const la_linear_bwd_args *a, LA_T *S0a, LA_T *dSa)
{
    const la_index ec = a->e + (a->norm == LA_NORM_DIV);
    LA_FN(bwd_state_in)(a, ec, a->s0, a->s0_rs, a->s0_cs, a->z0, a->z0_s, S0a);
    LA_FN(bwd_state_in)(a, ec, a->ds, a->ds_rs, a->ds_cs, a->dz, a->dz_s, dSa);
}

void
LA_FN(la_linear_bwd_state_out)(const la_linear_bwd_args *a, const LA_T *dSa)
{
    LA_FN(bwd_state_out)(a, a->e + (a->norm == LA_NORM_DIV), dSa);
}

/* ------------------------------------------------------------ recurrent -- */

/* S <- a S + kf va^T (f x ec). */
static void
LA_FN(bwd_rec_update)(la_index f, la_index ec, LA_T dec, int decayed, LA_T *S,
                      const LA_T *kf, const LA_T *va)
{
    la_index i, j;
    for (i = 0; i < f; i++) {
        LA_T *Si = S + i * ec;
        for (j = 0; j < ec; j++) {
            Si[j] = (decayed ? dec * Si[j] : Si[j]) + kf[i] * va[j];
        }
    }
}

la_status
LA_FN(la_linear_bwd_recurrent)(const la_linear_bwd_args *a, void *work)
{
    const la_index f = a->f, e = a->e, T = a->t;
    const la_index ec = e + (a->norm == LA_NORM_DIV), fe = f * ec;
    const la_index RB = la_block_rows(a->chunk, T), nb = bwd_nblocks(T, RB);
    const int decayed = a->g != NULL;
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k, *v = (const LA_T *)a->v;
    const LA_T *dout = (const LA_T *)a->dout;
    char *p = (char *)work;
    LA_T *Sst = (LA_T *)la_carve(&p, (size_t)(nb * fe) * sizeof(LA_T));
    LA_T *Sb = (LA_T *)la_carve(&p, (size_t)((RB + 1) * fe) * sizeof(LA_T));
    LA_T *dS = (LA_T *)la_carve(&p, (size_t)fe * sizeof(LA_T));
    LA_T *qf = (LA_T *)la_carve(&p, (size_t)f * sizeof(LA_T));
    LA_T *kf = (LA_T *)la_carve(&p, (size_t)f * sizeof(LA_T));
    LA_T *dqf = (LA_T *)la_carve(&p, (size_t)f * sizeof(LA_T));
    LA_T *dkf = (LA_T *)la_carve(&p, (size_t)f * sizeof(LA_T));
    LA_T *va = (LA_T *)la_carve(&p, (size_t)ec * sizeof(LA_T));
    LA_T *num = (LA_T *)la_carve(&p, (size_t)ec * sizeof(LA_T));
    LA_T *dN = (LA_T *)la_carve(&p, (size_t)ec * sizeof(LA_T));
    LA_T *dv = (LA_T *)la_carve(&p, (size_t)ec * sizeof(LA_T));
    LA_T *dor = (LA_T *)la_carve(&p, (size_t)(e + 1) * sizeof(LA_T));
    la_index blk, t, r, i, j;

#define LA_DECAY_AT(tt) \
    (decayed ? (LA_T)exp(la_clamp_decay(a->g[(tt) * a->g_s])) : (LA_T)1)
    /* forward sweep: the state entering every block */
    LA_FN(bwd_state_in)(a, ec, a->s0, a->s0_rs, a->s0_cs, a->z0, a->z0_s, Sst);
    for (blk = 0; blk + 1 < nb; blk++) {
        memcpy(Sst + (blk + 1) * fe, Sst + blk * fe, (size_t)fe * sizeof(LA_T));
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        for (t = blk * RB; t < (blk + 1) * RB; t++) {
            LA_FN(la_featmap_row)(a->fmap_k, 1.0, k + t * a->k_rs, a->k_cs, f, kf);
            LA_FN(bwd_values)(v + t * a->v_rs, a->v_rs, a->v_cs, 1, e, ec, va);
            LA_FN(bwd_rec_update)(f, ec, LA_DECAY_AT(t), decayed, Sst + (blk + 1) * fe, kf,
                                  va);
        }
    }
    LA_FN(bwd_state_in)(a, ec, a->ds, a->ds_rs, a->ds_cs, a->dz, a->dz_s, dS);
    for (blk = nb - 1; blk >= 0 && T > 0; blk--) {
        const la_index t0 = blk * RB, n = T - t0 < RB ? T - t0 : RB;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        /* Sb[r] = S_{t0+r-1} */
        memcpy(Sb, Sst + blk * fe, (size_t)fe * sizeof(LA_T));
        for (r = 0; r < n; r++) {
            t = t0 + r;
            memcpy(Sb + (r + 1) * fe, Sb + r * fe, (size_t)fe * sizeof(LA_T));
            LA_FN(la_featmap_row)(a->fmap_k, 1.0, k + t * a->k_rs, a->k_cs, f, kf);
            LA_FN(bwd_values)(v + t * a->v_rs, a->v_rs, a->v_cs, 1, e, ec, va);
            LA_FN(bwd_rec_update)(f, ec, LA_DECAY_AT(t), decayed, Sb + (r + 1) * fe, kf, va);
        }
        for (r = n - 1; r >= 0; r--) {
            const LA_T *St = Sb + (r + 1) * fe, *Sp = Sb + r * fe;
            const LA_T at = LA_DECAY_AT(t0 + r);
            t = t0 + r;
            LA_FN(la_featmap_row)(a->fmap_q, a->scale, q + t * a->q_rs, a->q_cs, f, qf);
            LA_FN(la_featmap_row)(a->fmap_k, 1.0, k + t * a->k_rs, a->k_cs, f, kf);
            LA_FN(bwd_values)(v + t * a->v_rs, a->v_rs, a->v_cs, 1, e, ec, va);
            LA_FN(bwd_load)(dor, e, dout + t * a->do_rs, a->do_rs, a->do_cs, 1, e);
            /* num_a = S_t^T qf */
            for (j = 0; j < ec; j++) {
                num[j] = 0;
            }
            for (i = 0; i < f; i++) {
                for (j = 0; j < ec; j++) {
                    num[j] += St[i * ec + j] * qf[i];
                }
            }
            LA_FN(bwd_finish_row)(a, num, dor, dN);
            /* dS += qf dN^T (the readout of S_t) */
            for (i = 0; i < f; i++) {
                for (j = 0; j < ec; j++) {
                    dS[i * ec + j] += qf[i] * dN[j];
                }
            }
            for (j = 0; j < ec; j++) {
                dv[j] = 0;
            }
            for (i = 0; i < f; i++) {
                dqf[i] = (LA_T)LA_FN(bwd_dot)(St + i * ec, dN, ec);
                dkf[i] = (LA_T)LA_FN(bwd_dot)(dS + i * ec, va, ec);
                for (j = 0; j < e; j++) {
                    dv[j] += dS[i * ec + j] * kf[i];
                }
            }
            if (decayed) {
                const double gr = a->g[t * a->g_s];
                a->dg[t * a->dg_s] =
                    gr < LA_DECAY_FLOOR ? 0.0 : (double)at * LA_FN(bwd_dot)(Sp, dS, fe);
                for (j = 0; j < fe; j++) {
                    dS[j] *= at;
                }
            }
            LA_FN(bwd_fmap)(a->fmap_q, a->scale, qf, 1, f, dqf, (LA_T *)a->dq + t * a->dq_rs,
                            a->dq_rs, a->dq_cs);
            LA_FN(bwd_fmap)(a->fmap_k, 1.0, kf, 1, f, dkf, (LA_T *)a->dk + t * a->dk_rs,
                            a->dk_rs, a->dk_cs);
            LA_FN(bwd_store)((LA_T *)a->dv + t * a->dv_rs, a->dv_rs, a->dv_cs, dv, e, 1, e);
        }
    }
#undef LA_DECAY_AT
    LA_FN(bwd_state_out)(a, ec, dS);
    return LA_OK;
}

/* ------------------------------------------------------------ noncausal -- */

la_status
LA_FN(la_linear_bwd_noncausal)(const la_linear_bwd_args *a, void *work)
{
    const la_index f = a->f, e = a->e;
    const la_index ec = e + (a->norm == LA_NORM_DIV);
    const la_index C = la_block_rows(a->chunk, a->t > a->s ? a->t : a->s);
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k, *v = (const LA_T *)a->v;
    const LA_T *dout = (const LA_T *)a->dout;
    char *p = (char *)work;
    LA_T *Xb = (LA_T *)la_carve(&p, (size_t)(C * f) * sizeof(LA_T));
    LA_T *dX = (LA_T *)la_carve(&p, (size_t)(C * f) * sizeof(LA_T));
    LA_T *Vb = (LA_T *)la_carve(&p, (size_t)(C * ec) * sizeof(LA_T));
    LA_T *Nb = (LA_T *)la_carve(&p, (size_t)(C * ec) * sizeof(LA_T));
    LA_T *dN = (LA_T *)la_carve(&p, (size_t)(C * ec) * sizeof(LA_T));
    LA_T *Dc = (LA_T *)la_carve(&p, (size_t)(C * (e + 1)) * sizeof(LA_T));
    LA_T *Sx = (LA_T *)la_carve(&p, (size_t)(f * ec) * sizeof(LA_T));
    LA_T *dSx = (LA_T *)la_carve(&p, (size_t)(f * ec) * sizeof(LA_T));
    la_index r0, r;

    for (r = 0; r < f * ec; r++) {
        Sx[r] = 0;
        dSx[r] = 0;
    }
    /* S_a = Kf^T [V | 1], blocked over keys */
    for (r0 = 0; r0 < a->s; r0 += C) {
        const la_index nb = a->s - r0 < C ? a->s - r0 : C;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_FN(bwd_features)(a->fmap_k, 1.0, k + r0 * a->k_rs, a->k_rs, a->k_cs, nb, f, Xb);
        LA_FN(bwd_values)(v + r0 * a->v_rs, a->v_rs, a->v_cs, nb, e, ec, Vb);
        LA_GEMM(1, 0, f, ec, nb, 1, Xb, f, Vb, ec, 1, Sx, ec);
    }
    /* queries: dN, dQf = dN S_a^T, dS_a += Qf^T dN */
    for (r0 = 0; r0 < a->t; r0 += C) {
        const la_index nb = a->t - r0 < C ? a->t - r0 : C;
        if (LA_CANCELLED(a->cancel)) {
            return LA_ERR_INTERRUPTED;
        }
        LA_FN(bwd_features)(a->fmap_q, a->scale, q + r0 * a->q_rs, a->q_rs, a->q_cs, nb, f,
                            Xb);
        LA_FN(bwd_load)(Dc, e, dout + r0 * a->do_rs, a->do_rs, a->do_cs, nb, e);
        if (a->norm != LA_NORM_NONE) {
            LA_GEMM(0, 0, nb, ec, f, 1, Xb, f, Sx, ec, 0, Nb, ec);
        }
        for (r = 0; r < nb; r++) {
            LA_FN(bwd_finish_row)(a, Nb + r * ec, Dc + r * e, dN + r * ec);
        }
        LA_GEMM(0, 1, nb, f, ec, 1, dN, ec, Sx, ec, 0, dX, f);
        LA_GEMM(1, 0, f, ec, nb, 1, Xb, f, dN, ec, 1, dSx, ec);
        LA_FN(bwd_fmap)(a->fmap_q, a->scale, Xb, nb, f, dX, (LA_T *)a->dq + r0 * a->dq_rs,
                        a->dq_rs, a->dq_cs);
    }
    /* keys: dKf = [V | 1] dS_a^T, dV = Kf dS_a[:, :E] */
    for (r0 = 0; r0 < a->s; r0 += C) {
        const la_index nb = a->s - r0 < C ? a->s - r0 : C;
        LA_FN(bwd_features)(a->fmap_k, 1.0, k + r0 * a->k_rs, a->k_rs, a->k_cs, nb, f, Xb);
        LA_FN(bwd_values)(v + r0 * a->v_rs, a->v_rs, a->v_cs, nb, e, ec, Vb);
        LA_GEMM(0, 1, nb, f, ec, 1, Vb, ec, dSx, ec, 0, dX, f);
        LA_GEMM(0, 0, nb, e, f, 1, Xb, f, dSx, ec, 0, Nb, e);
        LA_FN(bwd_fmap)(a->fmap_k, 1.0, Xb, nb, f, dX, (LA_T *)a->dk + r0 * a->dk_rs, a->dk_rs,
                        a->dk_cs);
        LA_FN(bwd_store)((LA_T *)a->dv + r0 * a->dv_rs, a->dv_rs, a->dv_cs, Nb, e, nb, e);
    }
    return LA_OK;
}
