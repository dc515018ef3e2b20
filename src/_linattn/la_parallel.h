/*
 * la_parallel.h -- worker threads for the outer loops (ggml's ith/nth).
 *
 * A small persistent pthread pool: workers sleep on a condition variable
 * between calls (after a short bounded spin), so they never hold a core that
 * another process needs, and a worker that would only share the caller's
 * core, or a busy one, leaves its share to the caller (load-aware, see
 * la_oversubscribed and docs/internals.md).  The calling thread is worker 0.  BLAS runs
 * single-threaded inside.  The thread count is linattn's own: the explicit
 * la_set_num_threads value, else LINATTN_NUM_THREADS, else OMP_NUM_THREADS,
 * else the CPUs this process may run on (sched_getaffinity), always capped by
 * those CPUs and by an outside limit (threadpoolctl).
 */
#ifndef LA_PARALLEL_H
#define LA_PARALLEL_H

#include "la_common.h"

typedef void (*la_task_fn)(void *ctx, int ith, int nth);

/* Run fn(ctx, ith, nth) for ith = 0..nth-1, concurrently where possible (the
 * caller runs ith = 0; when the pool is busy with another caller's job, the
 * caller runs every ith itself). */
void la_parallel_run(la_task_fn fn, void *ctx, int nth);

/*
 * Run task(ctx, i, work + ith * wsize) for i = 0..n-1 over nth workers.  Items
 * are handed out dynamically a few at a time: each worker from its own range
 * first (worker t: [t n / nth, (t + 1) n / nth), so a repeated call gives a
 * worker the same items and their data stays in its core's cache), then from
 * the others' (a worker slowed down by another process leaves its share to
 * the others), so a task must not depend on which worker runs it.  Stops at the first failure, or between items when
 * la_cancel_flag is set (LA_ERR_INTERRUPTED); returns the first failure.
 */
typedef la_status (*la_item_task)(void *ctx, la_index i, char *work);
la_status la_parallel_items(la_index n, int nth, la_item_task task, void *ctx, char *work,
                            size_t wsize);

/*
 * A worker of a job whose items depend on each other (the sequence split)
 * that finds nothing to do until another worker finishes one: wait until
 * *progress differs from seen, at most a short spin (la_spin pauses, as the
 * idle pool) and then one sleep of tens of microseconds, so a worker never
 * holds a core for long while the one it waits for is descheduled.  Returns
 * whether the counter moved; the caller re-checks its work either way.
 */
int la_wait_progress(const unsigned *progress, unsigned seen);

/* The CPU the calling thread runs on (-1: unknown). */
int la_current_cpu(void);

/*
 * For a job's share loop, before each claim of work: worker 0 (the caller)
 * records its CPU in *caller_cpu and gets 0; another worker gets 1 when it
 * runs on that CPU, and should then stop claiming: two threads of one call
 * taking turns on one core (the scheduler placed the worker there because
 * the other cores are busy) only make the caller wait for the worker's last
 * claim.  Start *caller_cpu at -1.
 */
int la_leave_caller_cpu(int *caller_cpu, int ith);

/*
 * Whether the last worker the pool woke, within the last 2 ms, found itself
 * on the caller's CPU and left its share (the machine's other cores are
 * busy): the runner then keeps calls too small to repay a wake-up on the
 * calling thread instead of waking a worker that would decline again.
 */
int la_pool_contended(void);

/*
 * Whether `extra` more runnable threads would oversubscribe the machine: the
 * threads runnable right now (/proc/loadavg, the caller counted, this pool's
 * idle-spinning workers not) plus extra exceed the online CPUs.  0 when it
 * cannot tell.  A call then gains little from waking workers (each would
 * share a core with other work) and risks waiting at its end for one that is
 * preempted while it holds the last item.
 */
int la_oversubscribed(int extra);

/* Threads a call may use (see above). */
int la_get_num_threads(void);
/* n >= 1: use n threads (capped); 0: back to the environment's default. */
void la_set_num_threads(int n);
/* An outside limit (threadpoolctl); 0 removes it. */
void la_set_thread_limit(int n);
int la_get_thread_limit(void);
/* CPUs this process may run on (re-read from the affinity mask). */
int la_max_threads(void);
/* What set the thread count: "set_num_threads", "threadpoolctl",
 * "LINATTN_NUM_THREADS", "OMP_NUM_THREADS" or "cpu_affinity". */
const char *la_threads_source(void);
/* Pool workers started so far (the calling thread not included). */
int la_pool_workers(void);
/* Read LINATTN_NUM_THREADS / OMP_NUM_THREADS / LINATTN_SPIN (once, at import). */
void la_threads_init(void);

/* Workers to use for n independent items. */
int la_workers_for(la_index n);

/*
 * Ctrl-C during a long kernel call.  la_interrupt_begin() (main thread only)
 * routes SIGINT to a flag the kernels poll between chunks; la_interrupt_end()
 * restores the previous handler and says whether SIGINT arrived, so the glue
 * can raise KeyboardInterrupt.  Nested or non-main-thread calls do nothing.
 */
extern volatile int la_cancel_flag;

/*
 * Progress of the running call: the kernels add the tokens they finish to
 * la_progress_done (LA_TICK of la_common.h); la_progress_total is what the
 * caller expects the call to add (set with the count reset before the call).
 * A display only: concurrent calls add to the same count.
 */
extern long long la_progress_done;
extern long long la_progress_total;
void la_progress_reset(long long total);
void la_progress_read(long long *done, long long *total);
void la_interrupt_init(void);
int la_interrupt_begin(void);
int la_interrupt_end(int installed);

#endif
