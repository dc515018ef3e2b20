/*
 * lara_impl.h -- WARNING: included once per dtype by lara.c (no include guard).
 * The maths is in lara.h.
 */

LA_TARGET_CLONES static double
LA_FN(lara_dot)(const LA_T *LA_RESTRICT a, const LA_T *LA_RESTRICT b, la_index n)
{
    la_index c;
    LA_T s = 0;
    for (c = 0; c < n; c++) {
        s += a[c] * b[c];
    }
    return (double)s;
}

/* f = sum_j softmax_j(om . k_j - kn_j) v_j into acc (+= weight * f); lg is scratch (m). */
static void
LA_FN(ra_feature)(const LA_T *K, const LA_T *V, const double *kn, const LA_T *om,
                  la_index m, la_index d, la_index e, double *lg, double weight, double *acc)
{
    double mx = -INFINITY, z = 0;
    la_index j, c;
    for (j = 0; j < m; j++) {
        lg[j] = LA_FN(lara_dot)(om, K + j * d, d) - kn[j];
        mx = lg[j] > mx ? lg[j] : mx;
    }
    for (j = 0; j < m; j++) {
        lg[j] = la_exp_f64(lg[j] - mx);
        z += lg[j];
    }
    weight /= z;
    for (j = 0; j < m; j++) {
        const double p = lg[j] * weight;
        const LA_T *vj = V + j * e;
        for (c = 0; c < e; c++) {
            acc[c] += p * (double)vj[c];
        }
    }
}

la_status
LA_FN(la_ra)(const la_lara_args *a, void *work)
{
    const la_index N = a->n, M = a->m, d = a->d, e = a->e, Sm = a->c;
    const int comp = a->flags & LA_RA_COMPONENT_MASK;
    const int nonoise = (a->flags & LA_RA_NO_NOISE) != 0;
    const LA_T s = (LA_T)sqrt(a->scale);
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k, *v = (const LA_T *)a->v;
    const LA_T *nz = (const LA_T *)a->noise;
    LA_T *o = (LA_T *)a->o;
    char *pw = (char *)work;
    LA_T *K = (LA_T *)la_carve(&pw, (size_t)(M * d) * sizeof(LA_T));
    LA_T *V = (LA_T *)la_carve(&pw, (size_t)(M * e) * sizeof(LA_T));
    double *kn = (double *)la_carve(&pw, (size_t)(M + 1) * sizeof(double));
    double *pi = (double *)la_carve(&pw, (size_t)(M + 1) * sizeof(double));
    double *lg = (double *)la_carve(&pw, (size_t)(M + 1) * sizeof(double));
    double *qs = (double *)la_carve(&pw, (size_t)(d + 1) * sizeof(double));
    double *mean = (double *)la_carve(&pw, (size_t)(d + 1) * sizeof(double));
    double *kbar = (double *)la_carve(&pw, (size_t)(d + 1) * sizeof(double));
    LA_T *om = (LA_T *)la_carve(&pw, (size_t)(d + 1) * sizeof(LA_T));
    double *acc = (double *)la_carve(&pw, (size_t)(e + 1) * sizeof(double));
    la_index n, j, c, t;

    if (M < 1) {
        return LA_ERR_SHAPE;
    }
    for (c = 0; c < d; c++) {
        kbar[c] = 0;
    }
    for (j = 0; j < M; j++) {
        double nn = 0;
        for (c = 0; c < d; c++) {
            K[j * d + c] = s * k[j * a->k_rs + c * a->k_cs];
            nn += (double)K[j * d + c] * (double)K[j * d + c];
            kbar[c] += (double)K[j * d + c] / (double)M;
        }
        kn[j] = 0.5 * nn;
        for (c = 0; c < e; c++) {
            V[j * e + c] = v[j * a->v_rs + c * a->v_cs];
        }
    }
    for (n = 0; n < N; n++) {
        double mx = -INFINITY, z = 0;
        for (c = 0; c < d; c++) {
            qs[c] = (double)(s * q[n * a->q_rs + c * a->q_cs]);
        }
        for (c = 0; c < e; c++) {
            acc[c] = 0;
        }
        if (comp != 2) {
            /* pi_n = softmax_m(q_n . k_m), float64, and its cumulative sum */
            for (j = 0; j < M; j++) {
                double l = 0;
                for (c = 0; c < d; c++) {
                    l += qs[c] * (double)K[j * d + c];
                }
                pi[j] = l;
                mx = l > mx ? l : mx;
            }
            for (j = 0; j < M; j++) {
                pi[j] = la_exp_f64(pi[j] - mx);
                z += pi[j];
            }
            for (j = 0; j < M; j++) {
                pi[j] /= z;
            }
        }
        if (comp == 1) {
            for (c = 0; c < d; c++) {
                mean[c] = 0;
            }
            for (j = 0; j < M; j++) {
                for (c = 0; c < d; c++) {
                    mean[c] += pi[j] * (double)K[j * d + c];
                }
            }
        }
        for (t = 0; t < Sm; t++) {
            const LA_T *eps = nz + n * a->nz_s0 + t * a->nz_s1;
            const double *cen;
            la_index mi = 0;
            if (comp == 0) {
                const double u = a->unif[n * a->u_s0 + t * a->u_s1];
                double cum = 0;
                for (mi = 0; mi < M - 1; mi++) {
                    cum += pi[mi];
                    if (cum >= u) {
                        break;
                    }
                }
                for (c = 0; c < d; c++) {
                    mean[c] = (double)K[mi * d + c];
                }
                cen = mean;
            }
            else {
                cen = comp == 1 ? mean : kbar;
            }
            for (c = 0; c < d; c++) {
                double wv = qs[c] + cen[c];
                if (!nonoise) {
                    wv += a->sigma * (double)eps[c * a->nz_s2];
                }
                om[c] = (LA_T)wv;
            }
            LA_FN(ra_feature)(K, V, kn, om, M, d, e, lg, 1.0 / (double)Sm, acc);
        }
        for (c = 0; c < e; c++) {
            o[n * a->o_rs + c * a->o_cs] = (LA_T)acc[c];
        }
    }
    return LA_OK;
}

la_status
LA_FN(la_lara)(const la_lara_args *a, void *work)
{
    const la_index N = a->n, M = a->m, d = a->d, e = a->e, C = a->c;
    const la_index Bk = LA_LARA_BLOCK;
    const int alpha = a->flags & LA_LARA_ALPHA_MASK;
    const LA_T s = (LA_T)sqrt(a->scale);
    const LA_T *q = (const LA_T *)a->q, *k = (const LA_T *)a->k, *v = (const LA_T *)a->v;
    LA_T *o = (LA_T *)a->o;
    char *pw = (char *)work;
    LA_T *Om = (LA_T *)la_carve(&pw, (size_t)(C * d) * sizeof(LA_T));
    LA_T *Qb = (LA_T *)la_carve(&pw, (size_t)(C * d) * sizeof(LA_T));
    LA_T *Mu = (LA_T *)la_carve(&pw, (size_t)(C * d) * sizeof(LA_T));
    LA_T *Kb = (LA_T *)la_carve(&pw, (size_t)(Bk * d) * sizeof(LA_T));
    LA_T *Vb = (LA_T *)la_carve(&pw, (size_t)(Bk * e) * sizeof(LA_T));
    double *kn = (double *)la_carve(&pw, (size_t)Bk * sizeof(double));
    LA_T *P = (LA_T *)la_carve(&pw, (size_t)(C * Bk) * sizeof(LA_T));
    LA_T *Fb = (LA_T *)la_carve(&pw, (size_t)(C * e) * sizeof(LA_T));
    double *F = (double *)la_carve(&pw, (size_t)(C * e) * sizeof(double));
    double *mx = (double *)la_carve(&pw, (size_t)C * sizeof(double));
    double *Z = (double *)la_carve(&pw, (size_t)C * sizeof(double));
    double *off = (double *)la_carve(&pw, (size_t)C * sizeof(double));
    double *BH = (double *)la_carve(&pw, (size_t)C * sizeof(double));
    double *Lc = (double *)la_carve(&pw, (size_t)C * sizeof(double));
    double *Lz = (double *)la_carve(&pw, (size_t)C * sizeof(double));
    double *Pself = (double *)la_carve(&pw, (size_t)C * sizeof(double));
    double *Pmix = (double *)la_carve(&pw, (size_t)C * sizeof(double));
    LA_T *Lq = (LA_T *)la_carve(&pw, (size_t)(Bk * C) * sizeof(LA_T));
    LA_T *R = (LA_T *)la_carve(&pw, (size_t)(Bk * C) * sizeof(LA_T));
    LA_T *W = (LA_T *)la_carve(&pw, (size_t)(Bk * C) * sizeof(LA_T));
    LA_T *Fm = (LA_T *)la_carve(&pw, (size_t)(C * e) * sizeof(LA_T));
    LA_T *Yb = (LA_T *)la_carve(&pw, (size_t)(Bk * e) * sizeof(LA_T));
    double *lw = (double *)la_carve(&pw, (size_t)(2 * C) * sizeof(double));
    double *rr = lw + C;
    la_index i, j, c, b0, x;

    if (C < 1 || M < 1) {
        return LA_ERR_SHAPE;
    }
    for (i = 0; i < C; i++) {
        for (c = 0; c < d; c++) {
            Om[i * d + c] = ((const LA_T *)a->omega)[i * a->om_rs + c * a->om_cs];
            Qb[i * d + c] = ((const LA_T *)a->qbar)[i * a->qb_rs + c * a->qb_cs];
            Mu[i * d + c] = ((const LA_T *)a->mu)[i * a->mu_rs + c * a->mu_cs];
        }
        mx[i] = -INFINITY;
        Z[i] = 0;
        for (c = 0; c < e; c++) {
            F[i * e + c] = 0;
        }
    }
    /* step 4: per-proposal summaries (Z_c, f_c), one online-LSE pass over key blocks */
    for (b0 = 0; b0 < M; b0 += Bk) {
        const la_index nb = M - b0 < Bk ? M - b0 : Bk;
        for (j = 0; j < nb; j++) {
            double nn = 0;
            for (c = 0; c < d; c++) {
                const LA_T kv = s * k[(b0 + j) * a->k_rs + c * a->k_cs];
                Kb[j * d + c] = kv;
                nn += (double)kv * (double)kv;
            }
            kn[j] = 0.5 * nn;
            for (c = 0; c < e; c++) {
                Vb[j * e + c] = v[(b0 + j) * a->v_rs + c * a->v_cs];
            }
        }
        LA_GEMM(0, 1, C, nb, d, 1, Om, d, Kb, d, 0, P, nb);
        for (i = 0; i < C; i++) {
            LA_T *Pr = P + i * nb;
            double bm = -INFINITY, z = 0, sc;
            for (j = 0; j < nb; j++) {
                const double l = (double)Pr[j] - kn[j];
                bm = l > bm ? l : bm;
            }
            if (bm > mx[i]) {
                sc = mx[i] == -INFINITY ? 0.0 : la_exp_f64(mx[i] - bm);
                Z[i] *= sc;
                for (c = 0; c < e; c++) {
                    F[i * e + c] *= sc;
                }
                mx[i] = bm;
            }
            for (j = 0; j < nb; j++) {
                const double p = la_exp_f64((double)Pr[j] - kn[j] - mx[i]);
                Pr[j] = (LA_T)p;
                z += p;
            }
            Z[i] += z;
        }
        LA_GEMM(0, 0, C, e, nb, 1, P, nb, Vb, e, 0, Fb, e);
        for (i = 0; i < C * e; i++) {
            F[i] += (double)Fb[i];
        }
    }
    for (i = 0; i < C; i++) {
        Lz[i] = mx[i] + log(Z[i]); /* Z_c */
        for (c = 0; c < e; c++) {
            Fm[i * e + c] = (LA_T)(F[i * e + c] / Z[i]);
        }
    }
    /* proposal densities: P_cj = omega_c . mu_j - |mu_j|^2 / 2 */
    for (i = 0; i < C; i++) {
        double pm = -INFINITY, z = 0;
        for (j = 0; j < C; j++) {
            double pv = 0, nn = 0;
            for (c = 0; c < d; c++) {
                pv += (double)Om[i * d + c] * (double)Mu[j * d + c];
                nn += (double)Mu[j * d + c] * (double)Mu[j * d + c];
            }
            lw[j] = pv - 0.5 * nn;
            pm = lw[j] > pm ? lw[j] : pm;
        }
        for (j = 0; j < C; j++) {
            z += la_exp_f64(lw[j] - pm);
        }
        Pself[i] = lw[i];
        Pmix[i] = pm + log(z);
        BH[i] = la_exp_f64(Pself[i] - Pmix[i]);
        off[i] = Lz[i] - (alpha == 1 ? Pmix[i] : Pself[i]);
    }
    /* step 5 (opt): L_c = LSE_n qbar_c . q_n */
    if (alpha == 0) {
        double *lm = mx, *lz = Z;
        for (i = 0; i < C; i++) {
            lm[i] = -INFINITY;
            lz[i] = 0;
        }
        for (b0 = 0; b0 < N; b0 += Bk) {
            const la_index nb = N - b0 < Bk ? N - b0 : Bk;
            for (j = 0; j < nb; j++) {
                for (c = 0; c < d; c++) {
                    Kb[j * d + c] = s * q[(b0 + j) * a->q_rs + c * a->q_cs];
                }
            }
            LA_GEMM(0, 1, nb, C, d, 1, Kb, d, Qb, d, 0, R, C);
            for (i = 0; i < C; i++) {
                double bm = -INFINITY, z = 0;
                for (j = 0; j < nb; j++) {
                    bm = (double)R[j * C + i] > bm ? (double)R[j * C + i] : bm;
                }
                if (bm > lm[i]) {
                    lz[i] *= lm[i] == -INFINITY ? 0.0 : la_exp_f64(lm[i] - bm);
                    lm[i] = bm;
                }
                for (j = 0; j < nb; j++) {
                    z += la_exp_f64((double)R[j * C + i] - lm[i]);
                }
                lz[i] += z;
            }
        }
        for (i = 0; i < C; i++) {
            Lc[i] = lm[i] + log(lz[i]);
        }
    }
    /* step 6: per query block, weights over proposals and y = W F */
    for (b0 = 0; b0 < N; b0 += Bk) {
        const la_index nb = N - b0 < Bk ? N - b0 : Bk;
        for (j = 0; j < nb; j++) {
            for (c = 0; c < d; c++) {
                Kb[j * d + c] = s * q[(b0 + j) * a->q_rs + c * a->q_cs];
            }
        }
        LA_GEMM(0, 1, nb, C, d, 1, Kb, d, Om, d, 0, Lq, C);
        if (alpha == 0) {
            LA_GEMM(0, 1, nb, C, d, 1, Kb, d, Qb, d, 0, R, C);
        }
        for (j = 0; j < nb; j++) {
            double m = -INFINITY, z = 0, rbar = 0;
            if (alpha == 0) {
                for (i = 0; i < C; i++) {
                    rr[i] = la_exp_f64((double)R[j * C + i] - Lc[i]);
                    rbar += rr[i];
                }
                rbar /= (double)C;
            }
            for (i = 0; i < C; i++) {
                double l = (double)Lq[j * C + i] + off[i];
                if (alpha == 0) {
                    double al = BH[i] + a->alpha_coeff * (rr[i] - rbar);
                    l += log(al > 1e-8 ? al : 1e-8);
                }
                lw[i] = l;
                m = l > m ? l : m;
            }
            for (i = 0; i < C; i++) {
                lw[i] = la_exp_f64(lw[i] - m);
                z += lw[i];
            }
            for (i = 0; i < C; i++) {
                W[j * C + i] = (LA_T)(lw[i] / z);
            }
        }
        LA_GEMM(0, 0, nb, e, C, 1, W, C, Fm, e, 0, Yb, e);
        for (j = 0; j < nb; j++) {
            for (x = 0; x < e; x++) {
                o[(b0 + j) * a->o_rs + x * a->o_cs] = Yb[j * e + x];
            }
        }
    }
    return LA_OK;
}
