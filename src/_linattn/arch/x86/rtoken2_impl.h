/*
 * rtoken2_impl.h -- WARNING: included once per path and dtype by
 * recurrent_x86.c (no include guard): the loop over two consecutive tokens.
 * From recurrent_x86.c: LA_TARGET_PATH (function target), LA_T, LA_NAME
 * (function name), LA_TAIL2 (tail helper name), LA_V, LA_M (mask type),
 * LA_MKMASK(nb) (lanes [0, nb)), LA_W (lanes), LA_NV (vectors per column
 * sub-block, LA_NV * LA_W dividing 64), LA_VSET1, LA_VLOADU, LA_VSTOREU,
 * LA_VFMA, LA_VMUL, LA_VADD, LA_VZERO, LA_VMLOAD(m, p) (masked, zeroing),
 * LA_VMSTORE(p, m, v) (masked).
 *
 * Per entry of S the operations are those of two calls of the one-token
 * loop: FMA form below the last multiple of 64 columns, tail form after it.
 */

/* Columns [e0, e0 + nb), nb <= LA_W, both tokens, tail form. */
LA_TARGET_PATH static void
LA_TAIL2(la_index f, la_index e0, la_index nb, LA_V av1, LA_V av2, int decayed, LA_T *S,
         la_index ld, const LA_T *q1, const LA_T *k1, const LA_T *v1, const LA_T *q2,
         const LA_T *k2, const LA_T *v2, LA_T *num1, LA_T *num2)
{
    const LA_M m = LA_MKMASK(nb);
    const LA_V x1 = LA_VMLOAD(m, v1 + e0), x2 = LA_VMLOAD(m, v2 + e0);
    LA_V c1 = LA_VZERO(), c2 = LA_VZERO();
    la_index i;
    for (i = 0; i < f; i++) {
        LA_T *Si = S + i * ld + e0;
        const LA_V kv1 = LA_VMUL(LA_VSET1(k1[i]), x1), kv2 = LA_VMUL(LA_VSET1(k2[i]), x2);
        LA_V s = LA_VMLOAD(m, Si);
        s = decayed ? LA_VFMA(av1, s, kv1) : LA_VADD(s, kv1);
        c1 = LA_VFMA(LA_VSET1(q1[i]), s, c1);
        s = decayed ? LA_VFMA(av2, s, kv2) : LA_VADD(s, kv2);
        c2 = LA_VFMA(LA_VSET1(q2[i]), s, c2);
        LA_VMSTORE(Si, m, s);
    }
    LA_VMSTORE(num1 + e0, m, c1);
    LA_VMSTORE(num2 + e0, m, c2);
}

LA_TARGET_PATH void
LA_NAME(la_index f, la_index e, LA_T a1, LA_T a2, int decayed, LA_T *S, la_index ld,
        const LA_T *q1, const LA_T *k1, const LA_T *v1, const LA_T *q2, const LA_T *k2,
        const LA_T *v2, LA_T *num1, LA_T *num2)
{
    const LA_V av1 = LA_VSET1(a1), av2 = LA_VSET1(a2);
    la_index j0 = 0, h, i;
    int u;
    for (; j0 + 64 <= e; j0 += 64) {
        for (h = j0; h < j0 + 64; h += LA_NV * LA_W) {
            LA_V x1[LA_NV], x2[LA_NV], c1[LA_NV], c2[LA_NV];
            for (u = 0; u < LA_NV; u++) {
                x1[u] = LA_VLOADU(v1 + h + u * LA_W);
                x2[u] = LA_VLOADU(v2 + h + u * LA_W);
                c1[u] = LA_VZERO();
                c2[u] = LA_VZERO();
            }
            for (i = 0; i < f; i++) {
                LA_T *Si = S + i * ld + h;
                const LA_V kk1 = LA_VSET1(k1[i]), qq1 = LA_VSET1(q1[i]);
                const LA_V kk2 = LA_VSET1(k2[i]), qq2 = LA_VSET1(q2[i]);
                if (decayed) {
                    for (u = 0; u < LA_NV; u++) {
                        LA_V s = LA_VLOADU(Si + u * LA_W);
                        s = LA_VFMA(av1, s, LA_VMUL(kk1, x1[u]));
                        c1[u] = LA_VFMA(qq1, s, c1[u]);
                        s = LA_VFMA(av2, s, LA_VMUL(kk2, x2[u]));
                        c2[u] = LA_VFMA(qq2, s, c2[u]);
                        LA_VSTOREU(Si + u * LA_W, s);
                    }
                }
                else {
                    for (u = 0; u < LA_NV; u++) {
                        LA_V s = LA_VLOADU(Si + u * LA_W);
                        s = LA_VFMA(kk1, x1[u], s);
                        c1[u] = LA_VFMA(qq1, s, c1[u]);
                        s = LA_VFMA(kk2, x2[u], s);
                        c2[u] = LA_VFMA(qq2, s, c2[u]);
                        LA_VSTOREU(Si + u * LA_W, s);
                    }
                }
            }
            for (u = 0; u < LA_NV; u++) {
                LA_VSTOREU(num1 + h + u * LA_W, c1[u]);
                LA_VSTOREU(num2 + h + u * LA_W, c2[u]);
            }
        }
    }
    for (; j0 < e; j0 += LA_W) {
        LA_TAIL2(f, j0, e - j0 < LA_W ? e - j0 : LA_W, av1, av2, decayed, S, ld, q1, k1, v1,
                 q2, k2, v2, num1, num2);
    }
}
