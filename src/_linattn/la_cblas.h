/*
 * la_cblas.h -- our own CBLAS prototypes (numpy's npy_cblas.h idea).
 *
 * LA_CBLAS(sgemm) expands to BLAS_SYMBOL_PREFIX cblas_sgemm BLAS_SYMBOL_SUFFIX,
 * so the same source links against scipy-openblas32 (prefix "scipy_") or a
 * system OpenBLAS (no prefix).  Only what linattn calls is declared.
 */
#ifndef LA_CBLAS_H
#define LA_CBLAS_H

#ifndef BLAS_SYMBOL_PREFIX
#define BLAS_SYMBOL_PREFIX
#endif
#ifndef BLAS_SYMBOL_SUFFIX
#define BLAS_SYMBOL_SUFFIX
#endif

#define LA_BLAS_CAT2(a, b, c) a##b##c
#define LA_BLAS_CAT(a, b, c) LA_BLAS_CAT2(a, b, c)
#define LA_CBLAS(name) LA_BLAS_CAT(BLAS_SYMBOL_PREFIX, cblas_##name, BLAS_SYMBOL_SUFFIX)
#define LA_BLASEXT(name) LA_BLAS_CAT(BLAS_SYMBOL_PREFIX, name, BLAS_SYMBOL_SUFFIX)

typedef int la_blasint; /* LP64: 32-bit BLAS integers */

enum LA_CBLAS_ORDER { LaCblasRowMajor = 101, LaCblasColMajor = 102 };
enum LA_CBLAS_TRANSPOSE { LaCblasNoTrans = 111, LaCblasTrans = 112 };

void LA_CBLAS(sgemm)(enum LA_CBLAS_ORDER, enum LA_CBLAS_TRANSPOSE,
                     enum LA_CBLAS_TRANSPOSE, la_blasint, la_blasint,
                     la_blasint, float, const float *, la_blasint,
                     const float *, la_blasint, float, float *, la_blasint);
void LA_CBLAS(dgemm)(enum LA_CBLAS_ORDER, enum LA_CBLAS_TRANSPOSE,
                     enum LA_CBLAS_TRANSPOSE, la_blasint, la_blasint,
                     la_blasint, double, const double *, la_blasint,
                     const double *, la_blasint, double, double *,
                     la_blasint);

#ifdef LA_HAVE_OPENBLAS_EXT
void LA_BLASEXT(openblas_set_num_threads)(int);
int LA_BLASEXT(openblas_get_num_threads)(void);
char *LA_BLASEXT(openblas_get_config)(void);
char *LA_BLASEXT(openblas_get_corename)(void);
#endif

#endif
