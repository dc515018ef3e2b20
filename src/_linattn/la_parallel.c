#include "la_parallel.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

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

volatile int la_cancel_flag = 0;
static struct sigaction la_old_sigint;
static int la_sigint_installed = 0;
static pthread_t la_main_thread;
static int la_main_known = 0;

static void
la_on_sigint(int sig)
{
    (void)sig;
    la_cancel_flag = 1;
}

void
la_interrupt_init(void)
{
    la_main_thread = pthread_self();
    la_main_known = 1;
}

int
la_interrupt_begin(void)
{
    struct sigaction sa;
    if (!la_main_known || !pthread_equal(pthread_self(), la_main_thread) ||
        la_sigint_installed) {
        return 0;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = la_on_sigint;
    sigemptyset(&sa.sa_mask);
    la_cancel_flag = 0;
    if (sigaction(SIGINT, &sa, &la_old_sigint) != 0) {
        return 0;
    }
    la_sigint_installed = 1;
    return 1;
}

int
la_interrupt_end(int installed)
{
    int hit;
    if (!installed) {
        return 0;
    }
    sigaction(SIGINT, &la_old_sigint, NULL);
    la_sigint_installed = 0;
    hit = la_cancel_flag;
    la_cancel_flag = 0;
    return hit;
}
