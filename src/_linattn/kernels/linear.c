#include <math.h>
#include <string.h>

#include "la_util.h"
#include "la_vmath.h"
#include "linear.h"
#include "arch/la_arch.h"
#include "arch/la_tuning.h"
#include "la_cpu.h"
#include "featmap.h"

la_index
la_linear_chunk_ld(const la_linear_args *a, size_t itemsize)
{
    const la_index ec = a->e + (a->norm == LA_NORM_DIV);
    const la_index line = (la_index)(64 / itemsize);
    return (ec + line - 1) / line * line;
}

size_t
la_linear_work_size(int form, const la_linear_args *a, size_t itemsize)
{
    const size_t f = (size_t)a->f, e = (size_t)a->e;
    const size_t ec = e + (a->norm == LA_NORM_DIV);
    const size_t t = (size_t)a->t;
    size_t c, ld, n = 0;
#define LA_ADD(count, size) (n += LA_ALIGN_BYTES((size_t)(count) * (size)))
    switch (form) {
    case LA_FORM_RECURRENT:
        c = (size_t)la_block_rows(LA_RFEAT_ROWS, a->t);
        LA_ADD(c * f, itemsize);
        LA_ADD(c * f, itemsize);
        LA_ADD(2 * e, itemsize);       /* value rows of a token pair */
        LA_ADD(2 * (e + 1), itemsize); /* and their num rows */
        LA_ADD(f * e, itemsize);
        LA_ADD(f, itemsize);
        break;
    case LA_FORM_CHUNKED:
    case LA_FORM_CHUNK_ONE:
        c = (size_t)la_block_rows(a->chunk, a->t);
        ld = (size_t)la_linear_chunk_ld(a, itemsize);
        LA_ADD(c * f, itemsize);  /* Qc */
        LA_ADD(c * f, itemsize);  /* Kc */
        LA_ADD(c * ld, itemsize); /* Vc */
        LA_ADD(c * c, itemsize);  /* P */
        LA_ADD(c * ld, itemsize); /* Oc */
        LA_ADD(f * ld, itemsize); /* dS */
        LA_ADD(c, sizeof(double));
        LA_ADD(c, itemsize);
        LA_ADD(c, sizeof(double));
        if (form == LA_FORM_CHUNKED) {
            LA_ADD(f * ld, itemsize); /* the running state */
            LA_ADD(f * ld, sizeof(double)); /* its float64 master (float32) */
        }
        break;
    case LA_FORM_PARALLEL:
        c = (size_t)la_block_rows(a->chunk, a->t);
        LA_ADD(t * f, itemsize);
        LA_ADD(t * ec, itemsize);
        LA_ADD(c * f, itemsize);
        LA_ADD(c * (t > 0 ? t : 1), itemsize);
        LA_ADD(c * ec, itemsize);
        LA_ADD(f * ec, itemsize);
        LA_ADD(t > 0 ? t : 1, sizeof(double));
        LA_ADD(t > 0 ? t : 1, sizeof(double));
        break;
    default: /* noncausal */
        c = (size_t)la_block_rows(a->chunk, a->t > a->s ? a->t : a->s);
        LA_ADD(c * f, itemsize);
        LA_ADD(c * ec, itemsize);
        LA_ADD(f * ec, itemsize);
        break;
    }
#undef LA_ADD
    return n + 64; /* the kernels align their first block to 64 bytes */
}

#include "dtype/la_f32.h"
#include "linear_impl.h"
#include "dtype/la_undef.h"

#include "dtype/la_f64.h"
#include "linear_impl.h"
#include "dtype/la_undef.h"
