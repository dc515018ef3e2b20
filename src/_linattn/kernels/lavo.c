#include <math.h>
#include <string.h>

#include "la_util.h"
#include "lavo.h"

static la_index
lavo_chunk(const la_lavo_args *a)
{
    if (a->flags & LA_LAVO_RECURRENT) {
        return 1;
    }
    return la_block_rows(a->chunk, a->t);
}

size_t
la_lavo_causal_work_size(const la_lavo_args *a, size_t is)
{
    const size_t d = (size_t)a->d, e = (size_t)a->e, r = (size_t)a->r;
    const size_t w = (size_t)a->w, c = (size_t)lavo_chunk(a);
    const size_t nw = c + w, ne = c + w;
    size_t n = 0;
    n += LA_ALIGN_BYTES(r * d * is);                       /* B */
    n += LA_ALIGN_BYTES(w * d * is) + LA_ALIGN_BYTES(w * e * is); /* rings */
    n += 2 * LA_ALIGN_BYTES(r * sizeof(double));           /* S, SV */
    n += LA_ALIGN_BYTES(c * d * is);                       /* Qc */
    n += LA_ALIGN_BYTES(c * (r ? r : 1) * is);             /* G */
    n += 2 * LA_ALIGN_BYTES(ne * d * is);                  /* Xe, Ve */
    n += 2 * LA_ALIGN_BYTES(ne * (r ? r : 1) * is);        /* Ce, Cve */
    n += 2 * LA_ALIGN_BYTES(c * r * sizeof(double));       /* H, HV */
    n += 2 * LA_ALIGN_BYTES(nw * (d > e ? d : e) * is);    /* Xw, Vw */
    n += LA_ALIGN_BYTES(c * nw * is);                      /* Lw / P */
    n += LA_ALIGN_BYTES(c * (r ? r : 1) * is);             /* PA */
    n += LA_ALIGN_BYTES(c * e * is);                       /* Ob */
    n += LA_ALIGN_BYTES((r + w + 1) * sizeof(double));     /* logits */
    n += LA_ALIGN_BYTES(r * d * is);                       /* BT (recurrent) */
    n += LA_ALIGN_BYTES((r + w + 1) * is);                 /* Wt */
    n += LA_ALIGN_BYTES((e + 1) * is);                     /* Acc */
    return n + 64;
}

size_t
la_lavo_noncausal_work_size(const la_lavo_args *a, size_t is)
{
    const size_t d = (size_t)a->d, e = (size_t)a->e, r = (size_t)a->r;
    const size_t s = (size_t)a->s, w = (size_t)a->w;
    size_t n = 0;
    n += LA_ALIGN_BYTES(r * d * is);
    n += LA_ALIGN_BYTES(s * d * is) + LA_ALIGN_BYTES(s * e * is); /* K, V */
    n += 2 * LA_ALIGN_BYTES(s * (r ? r : 1) * is);                /* Ck, Cv */
    n += 2 * LA_ALIGN_BYTES((s + 1) * r * sizeof(double));         /* prefix sums */
    n += LA_ALIGN_BYTES(d * is) + LA_ALIGN_BYTES((r ? r : 1) * is); /* q row, g */
    n += LA_ALIGN_BYTES((r + 2 * w + 2) * sizeof(double));
    n += 2 * LA_ALIGN_BYTES((r + e + 1) * sizeof(double));
    return n + 64;
}

#include "dtype/la_f32.h"
#include "lavo_impl.h"
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#include "lavo_impl.h"
#include "dtype/la_undef.h"
