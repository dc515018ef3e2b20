/*
 * cosformer_impl.h -- WARNING: included once per dtype by cosformer.c (no
 * include guard).
 */

la_status
LA_FN(la_cosformer_features)(const la_cosformer_args *a)
{
    const LA_T *x = (const LA_T *)a->x;
    LA_T *y = (LA_T *)a->y;
    const LA_T scale = (LA_T)a->scale;
    la_index r, j;
    for (r = 0; r < a->t; r++) {
        const LA_T s = (LA_T)a->sn[r], c = (LA_T)a->cs[r];
        const LA_T *xr = x + r * a->x_rs;
        LA_T *ys = y + r * a->y_rs, *yc = ys + a->y_ps;
        for (j = 0; j < a->d; j++) {
            LA_T u = scale * xr[j * a->x_cs];
            u = u > 0 ? u : (LA_T)0;
            ys[j * a->y_cs] = u * s;
            yc[j * a->y_cs] = u * c;
        }
    }
    return LA_OK;
}
