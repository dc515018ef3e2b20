#include "la_parallel.h"

#include <stdlib.h>

#ifdef LA_HAVE_OPENMP
#include <omp.h>
#endif

/* 0 means "not set": follow the OpenMP runtime (OMP_NUM_THREADS, threadpoolctl). */
static volatile int la_user_threads = 0;

int
la_openmp_enabled(void)
{
#ifdef LA_HAVE_OPENMP
    return 1;
#else
    return 0;
#endif
}

int
la_max_threads(void)
{
#ifdef LA_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int
la_get_num_threads(void)
{
    int cap = la_max_threads();
    int n = la_user_threads;
    if (n <= 0 || n > cap) {
        n = cap;
    }
    return n < 1 ? 1 : n;
}

void
la_set_num_threads(int n)
{
    la_user_threads = n < 0 ? 0 : n;
}

int
la_workers_for(la_index n)
{
    int nth = la_get_num_threads();
    if (n < nth) {
        nth = n < 1 ? 1 : (int)n;
    }
    return nth;
}

void
la_parallel_run(la_task_fn fn, void *ctx, int nth)
{
    if (nth <= 1) {
        fn(ctx, 0, 1);
        return;
    }
#ifdef LA_HAVE_OPENMP
#pragma omp parallel num_threads(nth)
    {
        fn(ctx, omp_get_thread_num(), omp_get_num_threads());
    }
#else
    fn(ctx, 0, 1);
#endif
}
