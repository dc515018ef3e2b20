/*
 * la_parallel.h -- split an outer loop over worker threads (ggml's ith/nth).
 *
 * Worker ith of nth gets items [n*ith/nth, n*(ith+1)/nth).  Backed by OpenMP
 * when available, serial otherwise.  BLAS runs single-threaded inside.
 */
#ifndef LA_PARALLEL_H
#define LA_PARALLEL_H

#include "la_common.h"

typedef void (*la_task_fn)(void *ctx, int ith, int nth);

/* Run fn(ctx, ith, nth) for ith = 0..nth-1, concurrently where possible. */
void la_parallel_run(la_task_fn fn, void *ctx, int nth);

/* Threads a call may use: min(set_num_threads value, omp_get_max_threads()). */
int la_get_num_threads(void);
void la_set_num_threads(int n);
int la_max_threads(void);
int la_openmp_enabled(void);

/* Workers to use for n independent items. */
int la_workers_for(la_index n);

/*
 * Ctrl-C during a long kernel call.  la_interrupt_begin() (main thread only)
 * routes SIGINT to a flag the kernels poll between chunks; la_interrupt_end()
 * restores the previous handler and says whether SIGINT arrived, so the glue
 * can raise KeyboardInterrupt.  Nested or non-main-thread calls do nothing.
 */
extern volatile int la_cancel_flag;
void la_interrupt_init(void);
int la_interrupt_begin(void);
int la_interrupt_end(int installed);

#endif
