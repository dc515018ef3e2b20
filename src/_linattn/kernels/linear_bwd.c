#include <math.h>
#include <string.h>

#include "featmap.h"
#include "la_util.h"
#include "la_vmath.h"
#include "linear.h"
#include "linear_bwd.h"

/* Chunks of at least 2 * LA_BWD_TRI_MIN rows skip the upper-right quarter of
 * their n x n products (as the forward's chunked form). */
#define LA_BWD_TRI_MIN 16

/* Key features of a chunk: computed, computed and parked in the rows of dk, or
 * read back from there (bwd_load_kv). */
enum { LA_KEYS_MAP, LA_KEYS_PARK, LA_KEYS_PARKED };

static la_index
bwd_nblocks(la_index t, la_index c)
{
    return t > 0 ? (t + c - 1) / c : 1;
}

size_t
la_linear_bwd_work_size(int form, const la_linear_bwd_args *a, size_t itemsize)
{
    const size_t f = (size_t)a->f, e = (size_t)a->e;
    const size_t ec = e + (a->norm == LA_NORM_DIV);
    size_t c, nb, n = 0;
#define LA_ADD(count, size) (n += LA_ALIGN_BYTES((size_t)(count) * (size)))
    switch (form) {
    case LA_FORM_RECURRENT:
        c = (size_t)la_block_rows(a->chunk, a->t);
        nb = (size_t)bwd_nblocks(a->t, (la_index)c);
        LA_ADD(nb * f * ec, itemsize);      /* block-start states */
        LA_ADD((c + 1) * f * ec, itemsize); /* states inside a block */
        LA_ADD(f * ec, itemsize);           /* dS */
        LA_ADD(f, itemsize);                /* qf */
        LA_ADD(f, itemsize);                /* kf */
        LA_ADD(f, itemsize);                /* dqf */
        LA_ADD(f, itemsize);                /* dkf */
        LA_ADD(ec, itemsize);               /* va */
        LA_ADD(ec, itemsize);               /* num */
        LA_ADD(ec, itemsize);               /* dN */
        LA_ADD(ec, itemsize);               /* dv */
        LA_ADD(e + 1, itemsize);            /* do row */
        break;
    case LA_FORM_CHUNKED:
    case LA_FORM_CHUNK_ONE:
        c = (size_t)la_block_rows(a->chunk, a->t);
        nb = (size_t)bwd_nblocks(a->t, (la_index)c);
        if (form == LA_FORM_CHUNKED) {
            LA_ADD(nb * f * ec, itemsize); /* chunk-entering states */
        }
        LA_ADD(6 * c * f, itemsize);   /* Qc Kc X Y dQ dK */
        LA_ADD(c * ec, itemsize);      /* Vc */
        LA_ADD(c * ec, itemsize);      /* dN */
        LA_ADD(c * ec, itemsize);      /* num (norm) */
        LA_ADD(c * (e + 1), itemsize); /* Dc */
        LA_ADD(c * (e + 1), itemsize); /* dV */
        LA_ADD(3 * c * c, itemsize);   /* P Z L */
        LA_ADD(f * ec, itemsize);      /* dS */
        LA_ADD(f * ec, itemsize);      /* a state increment */
        LA_ADD(8 * c, sizeof(double));
        break;
    default: /* noncausal */
        c = (size_t)la_block_rows(a->chunk, a->t > a->s ? a->t : a->s);
        LA_ADD(c * f, itemsize);       /* Xb */
        LA_ADD(c * f, itemsize);       /* dX */
        LA_ADD(c * ec, itemsize);      /* Vb */
        LA_ADD(c * ec, itemsize);      /* Nb */
        LA_ADD(c * ec, itemsize);      /* dN */
        LA_ADD(c * (e + 1), itemsize); /* Dc */
        LA_ADD(f * ec, itemsize);      /* S */
        LA_ADD(f * ec, itemsize);      /* dS */
        break;
    }
#undef LA_ADD
    return n + 64;
}

#include "dtype/la_f32.h"
#include "linear_bwd_impl.h"
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#include "linear_bwd_impl.h"
#include "dtype/la_undef.h"
