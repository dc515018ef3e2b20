/*
 * la_parallel.c -- the thread pool, the thread-count settings, Ctrl-C.
 *
 * Pool protocol (one job at a time, ggml-style): the caller publishes
 * (fn, ctx, nth) under the mutex and bumps `gen`; a worker k < nth that wakes
 * while the job is open joins it (under the mutex), runs share k and leaves.
 * When the caller has run share 0 it closes the job, runs itself every share
 * no worker joined, and waits only for the workers that did join, so a worker
 * that the OS has not scheduled yet (a busy machine) never delays a call.
 * With la_parallel_items a share is "claim items until none are left", so
 * whoever runs first does the work.  Idle workers spin for at most la_spin
 * pause instructions, then sleep on `wake`: the spin catches back-to-back
 * calls, and a sleeping worker costs nothing to a process that needs the core.
 * A worker woken on the caller's CPU, or long after the job was published,
 * does not join (docs/internals.md, "Threads on a busy machine"): its share
 * runs on the caller like any share nobody joined.
 */
#define _GNU_SOURCE
#include "la_parallel.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#define LA_POOL_MAX 256
/* idle spin in pause instructions: ~17 us on Skylake-SP (~65 ns each), less elsewhere */
#define LA_SPIN_DEFAULT 256

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LA_RELAX() _mm_pause()
#else
#define LA_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    int started;          /* workers running */
    unsigned gen;         /* job number */
    la_task_fn fn;        /* the job */
    void *ctx;
    int nth;
    int open;             /* workers may still join */
    int inside;           /* workers that joined and have not left */
    int busy;             /* a caller owns the pool */
    int caller_cpu;       /* where the caller published the job (-1: unknown) */
    int declined;         /* the last worker woken left its share to the caller */
    long long declined_ns; /* when (CLOCK_MONOTONIC) */
    long long publish_ns; /* when the caller published the job */
    int load_aware;       /* workers may leave their shares (la_load_aware) */
    char joined[LA_POOL_MAX];
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
       0, 0, NULL, NULL, 0, 0, 0, 0, -1, 0, 0, 0, 1, {0}};

/* A worker that gets a CPU this long after the job was published joins no
 * more: its core is shared with other runnable work (an idle core, even an
 * idle virtual CPU, wakes it within tens to a few hundred microseconds, a
 * busy one after a time slice of the other work, about a millisecond or
 * more), and the caller would wait at the end for whatever it claimed if it
 * is preempted again. */
#define LA_LATE_JOIN_NS 1000000LL

/* How long a worker's "woken on the caller's CPU" keeps small calls on the
 * caller (la_pool_contended). */
#define LA_CONTENDED_NS 2000000LL

static long long
la_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int la_spin = LA_SPIN_DEFAULT;
static int la_spinning = 0; /* pool workers in their idle spin (runnable, no work) */
static unsigned la_start_gen[LA_POOL_MAX];

/* thread-count settings (0: not set) */
static volatile int la_user_threads = 0, la_env_threads = 0, la_limit = 0, la_cpus = 1;
static const char *la_env_source = "cpu_affinity";

/* LINATTN_LOAD_AWARE=0 (read at each use, so tests can set it): workers join
 * every job and calls ignore the machine's load, as on an idle machine. */
static int
la_load_aware(void)
{
    const char *e = getenv("LINATTN_LOAD_AWARE");
    return e == NULL || e[0] != '0';
}

int
la_current_cpu(void)
{
    return sched_getcpu();
}

int
la_oversubscribed(int extra)
{
    static int fd = -2;
    static int online = 0;
    char buf[128];
    const char *p;
    ssize_t got;
    long running;
    int f = __atomic_load_n(&fd, __ATOMIC_ACQUIRE);
    if (!la_load_aware()) {
        return 0;
    }
    if (f == -2) { /* first call (a race opens it twice: harmless, one stays open) */
        int nf = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
        online = (int)sysconf(_SC_NPROCESSORS_ONLN);
        __atomic_store_n(&fd, nf, __ATOMIC_RELEASE);
        f = nf;
    }
    if (f < 0 || online < 1 || (got = pread(f, buf, sizeof(buf) - 1, 0)) <= 0) {
        return 0; /* unknown: as on an idle machine */
    }
    buf[got] = '\0';
    /* "0.20 0.18 0.12 R/T last-pid": R runnable now, the caller among them */
    if ((p = strchr(buf, '/')) == NULL) {
        return 0;
    }
    while (p > buf && p[-1] >= '0' && p[-1] <= '9') {
        p--;
    }
    running = strtol(p, NULL, 10) - __atomic_load_n(&la_spinning, __ATOMIC_RELAXED);
    return running + extra > online;
}

int
la_pool_contended(void)
{
    return __atomic_load_n(&P.declined, __ATOMIC_RELAXED) &&
           la_now_ns() - __atomic_load_n(&P.declined_ns, __ATOMIC_RELAXED) < LA_CONTENDED_NS;
}

static void *
la_worker(void *arg)
{
    const int k = (int)(intptr_t)arg;
    unsigned seen = la_start_gen[k]; /* the job before the first one it may join */
    int spin = la_spin;
    for (;;) {
        la_task_fn fn = NULL;
        void *ctx = NULL;
        int i, nth = 0;
        __atomic_add_fetch(&la_spinning, 1, __ATOMIC_RELAXED);
        for (i = 0; i < spin && __atomic_load_n(&P.gen, __ATOMIC_ACQUIRE) == seen; i++) {
            LA_RELAX();
        }
        __atomic_sub_fetch(&la_spinning, 1, __ATOMIC_RELAXED);
        spin = la_spin;
        pthread_mutex_lock(&P.mu);
        while (P.gen == seen) {
            pthread_cond_wait(&P.wake, &P.mu);
        }
        seen = P.gen;
        if (P.open && k < P.nth && P.load_aware &&
            ((P.caller_cpu >= 0 && la_current_cpu() == P.caller_cpu) ||
             la_now_ns() - P.publish_ns > LA_LATE_JOIN_NS)) {
            /* Woken on the caller's CPU (the other CPUs are busy: the scheduler
             * places a wakee next to its waker), or woken late (its core is
             * shared): joining would only take turns with the caller on one
             * core, or risk a preemption while the caller waits for this
             * worker's share at the end.  Leave the share to the caller, and
             * sleep without spinning on its core. */
            spin = 0;
            __atomic_store_n(&P.declined_ns, la_now_ns(), __ATOMIC_RELAXED);
            __atomic_store_n(&P.declined, 1, __ATOMIC_RELAXED);
        }
        else if (P.open && k < P.nth) { /* join: the caller now waits for this worker */
            __atomic_store_n(&P.declined, 0, __ATOMIC_RELAXED);
            fn = P.fn;
            ctx = P.ctx;
            nth = P.nth;
            __atomic_store_n(&P.joined[k], 1, __ATOMIC_RELEASE);
            __atomic_add_fetch(&P.inside, 1, __ATOMIC_ACQ_REL);
        }
        pthread_mutex_unlock(&P.mu);
        if (fn == NULL) {
            continue; /* not part of this job, or it is over */
        }
        fn(ctx, k, nth);
        pthread_mutex_lock(&P.mu);
        if (__atomic_sub_fetch(&P.inside, 1, __ATOMIC_ACQ_REL) == 0 && !P.open) {
            pthread_cond_signal(&P.done);
        }
        pthread_mutex_unlock(&P.mu);
    }
    return NULL;
}

/* After fork() only the forking thread exists: start a fresh pool on demand. */
static void
la_atfork_child(void)
{
    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.wake, NULL);
    pthread_cond_init(&P.done, NULL);
    P.started = 0;
    P.busy = 0;
    P.declined = 0;
    P.open = 0;
    P.inside = 0;
}

/* Start workers 1..want-1 (the caller holds the pool); returns how many run. */
static int
la_pool_grow(int want)
{
    sigset_t all, old;
    if (P.started + 1 >= want || P.started + 1 >= LA_POOL_MAX) {
        return P.started + 1; /* the usual case: no signal-mask system calls */
    }
    /* workers block every signal: SIGINT reaches the thread that handles it */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (P.started + 1 < want && P.started + 1 < LA_POOL_MAX) {
        pthread_t tid;
        pthread_attr_t at;
        int rc;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        la_start_gen[P.started + 1] = P.gen; /* the caller owns the pool: stable */
        rc = pthread_create(&tid, &at, la_worker, (void *)(intptr_t)(P.started + 1));
        pthread_attr_destroy(&at);
        if (rc != 0) {
            break;
        }
        P.started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return P.started + 1;
}

void
la_parallel_run(la_task_fn fn, void *ctx, int nth)
{
    int i, have;
    if (nth <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    if (__atomic_exchange_n(&P.busy, 1, __ATOMIC_ACQUIRE)) {
        /* another caller's job is running: do every share here */
        for (i = 0; i < nth; i++) {
            fn(ctx, i, nth);
        }
        return;
    }
    have = la_pool_grow(nth);
    pthread_mutex_lock(&P.mu);
    P.fn = fn;
    P.ctx = ctx;
    P.nth = nth;
    memset(P.joined, 0, (size_t)nth);
    P.caller_cpu = la_current_cpu();
    P.publish_ns = la_now_ns();
    P.load_aware = la_load_aware();
    P.open = have > 1;
    __atomic_store_n(&P.gen, P.gen + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.mu);
    fn(ctx, 0, nth);
    /* close the job: run the shares nobody joined, wait for those who did */
    for (i = 0; i < la_spin && __atomic_load_n(&P.inside, __ATOMIC_ACQUIRE) != 0; i++) {
        LA_RELAX();
    }
    pthread_mutex_lock(&P.mu);
    P.open = 0;
    pthread_mutex_unlock(&P.mu);
    for (i = 1; i < nth; i++) {
        if (!__atomic_load_n(&P.joined[i], __ATOMIC_ACQUIRE)) {
            fn(ctx, i, nth);
        }
    }
    pthread_mutex_lock(&P.mu);
    while (P.inside != 0) {
        pthread_cond_wait(&P.done, &P.mu);
    }
    pthread_mutex_unlock(&P.mu);
    __atomic_store_n(&P.busy, 0, __ATOMIC_RELEASE);
}

int
la_leave_caller_cpu(int *caller_cpu, int ith)
{
    const int cpu = la_current_cpu();
    if (ith == 0) {
        __atomic_store_n(caller_cpu, cpu, __ATOMIC_RELAXED);
        return 0;
    }
    return cpu >= 0 && cpu == __atomic_load_n(caller_cpu, __ATOMIC_RELAXED) &&
           __atomic_load_n(&P.load_aware, __ATOMIC_RELAXED);
}

/* Each thread's range of items: thread t starts on [t n / nth, (t+1) n / nth),
 * so that consecutive calls give a thread the same items (a decoding step's
 * state stays in the cache of the core that updated it last), then claims
 * what is left of the others' ranges.  Counters a cache line apart. */
typedef struct {
    la_index next, end;
    char pad[64 - 2 * sizeof(la_index)];
} la_range;

typedef struct {
    la_index n, grain;
    la_item_task task;
    void *ctx;
    char *work;
    size_t wsize;
    int status;
    int caller_cpu;
    int nth;
    la_range *ranges;
} la_items_ctx;

/* Runs the items claimed from range u; 0 once that range is exhausted. */
static int
la_items_claim(la_items_ctx *r, la_range *g, char *work)
{
    la_index i = __atomic_fetch_add(&g->next, r->grain, __ATOMIC_RELAXED);
    const la_index hi = i + r->grain < g->end ? i + r->grain : g->end;
    if (i >= g->end) {
        return 0;
    }
    for (; i < hi && __atomic_load_n(&r->status, __ATOMIC_RELAXED) == LA_OK; i++) {
        la_status s = la_cancel_flag ? LA_ERR_INTERRUPTED : r->task(r->ctx, i, work);
        if (s != LA_OK) { /* the first failure wins */
            int ok = LA_OK;
            __atomic_compare_exchange_n(&r->status, &ok, (int)s, 0, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED);
        }
    }
    return 1;
}

static void
la_items_run(void *vctx, int ith, int nth)
{
    la_items_ctx *r = (la_items_ctx *)vctx;
    char *work = r->work + (size_t)ith * r->wsize;
    int u;
    (void)nth;
    for (u = 0; u < r->nth; u++) {
        la_range *g = &r->ranges[(ith + u) % r->nth];
        while (__atomic_load_n(&r->status, __ATOMIC_RELAXED) == LA_OK) {
            if (la_leave_caller_cpu(&r->caller_cpu, ith)) {
                return; /* a worker sharing the caller's core leaves it the items */
            }
            if (!la_items_claim(r, g, work)) {
                break;
            }
        }
    }
}

la_status
la_parallel_items(la_index n, int nth, la_item_task task, void *ctx, char *work,
                  size_t wsize)
{
    la_items_ctx r;
    la_range stack[8], *ranges = stack;
    int t;
    nth = nth < 1 ? 1 : nth;
    if (nth > 8 && (ranges = (la_range *)malloc((size_t)nth * sizeof(la_range))) == NULL) {
        ranges = stack; /* no memory for the ranges: one range, claimed by all */
        nth = 1;
    }
    memset(&r, 0, sizeof(r));
    r.n = n;
    /* a few claims per worker: cheap to hand out, and they balance the load */
    r.grain = n / (8 * (la_index)nth) > 1 ? n / (8 * (la_index)nth) : 1;
    r.task = task;
    r.ctx = ctx;
    r.work = work;
    r.wsize = wsize;
    r.caller_cpu = -1;
    r.nth = nth;
    r.ranges = ranges;
    for (t = 0; t < nth; t++) {
        ranges[t].next = n / nth * t + (t < n % nth ? t : n % nth);
        ranges[t].end = ranges[t].next + n / nth + (t < n % nth);
    }
    if (n > 0) {
        la_parallel_run(la_items_run, &r, nth);
    }
    if (ranges != stack) {
        free(ranges);
    }
    return (la_status)r.status;
}

int
la_wait_progress(const unsigned *progress, unsigned seen)
{
    struct timespec ts = {0, 20000};
    int i;
    for (i = 0; i < la_spin; i++) {
        if (__atomic_load_n(progress, __ATOMIC_ACQUIRE) != seen) {
            return 1;
        }
        LA_RELAX();
    }
    nanosleep(&ts, NULL);
    return __atomic_load_n(progress, __ATOMIC_ACQUIRE) != seen;
}

/* ------------------------------------------------------ thread settings -- */

static int
la_affinity_cpus(void)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        n = CPU_COUNT(&set);
    }
    return n < 1 ? 1 : (n > LA_POOL_MAX ? LA_POOL_MAX : n);
}

static int
la_env_int(const char *name)
{
    const char *v = getenv(name);
    char *end;
    long n;
    if (v == NULL || *v == '\0') {
        return 0;
    }
    n = strtol(v, &end, 10); /* OMP_NUM_THREADS may be a list "4,2": its first */
    return (end != v && n > 0) ? (int)(n > 4096 ? 4096 : n) : 0;
}

static void
la_threads_read_env(void)
{
    la_cpus = la_affinity_cpus();
    la_spin = getenv("LINATTN_SPIN") != NULL ? la_env_int("LINATTN_SPIN") : LA_SPIN_DEFAULT;
    if ((la_env_threads = la_env_int("LINATTN_NUM_THREADS")) > 0) {
        la_env_source = "LINATTN_NUM_THREADS";
    }
    else if ((la_env_threads = la_env_int("OMP_NUM_THREADS")) > 0) {
        la_env_source = "OMP_NUM_THREADS";
    }
    pthread_atfork(NULL, NULL, la_atfork_child);
}

void
la_threads_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)pthread_once(&once, la_threads_read_env);
}

int
la_max_threads(void)
{
    la_threads_init();
    la_cpus = la_affinity_cpus();
    return la_cpus;
}

/* The thread count and what set it. */
static int
la_threads_resolve(const char **source)
{
    int n = la_user_threads > 0 ? la_user_threads : la_env_threads;
    const int lim = la_limit;
    la_threads_init();
    *source = la_user_threads > 0 ? "set_num_threads" : la_env_source;
    if (n < 1 || n > la_cpus) {
        if (n > la_cpus) {
            *source = "cpu_affinity";
        }
        n = la_cpus;
    }
    if (lim > 0 && n > lim) {
        n = lim;
        *source = "threadpoolctl";
    }
    return n < 1 ? 1 : n;
}

int
la_get_num_threads(void)
{
    const char *src;
    return la_threads_resolve(&src);
}

const char *
la_threads_source(void)
{
    const char *src;
    (void)la_threads_resolve(&src);
    return src;
}

void
la_set_num_threads(int n)
{
    la_user_threads = n < 0 ? 0 : n;
}

void
la_set_thread_limit(int n)
{
    la_limit = n < 0 ? 0 : n;
}

int
la_get_thread_limit(void)
{
    return la_limit;
}

int
la_pool_workers(void)
{
    return P.started;
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

/* -------------------------------------------------------------- Ctrl-C -- */

volatile int la_cancel_flag = 0;
long long la_progress_done = 0;
long long la_progress_total = 0;

void
la_progress_reset(long long total)
{
#if defined(__GNUC__) || defined(__clang__)
    __atomic_store_n(&la_progress_done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&la_progress_total, total, __ATOMIC_RELAXED);
#else
    la_progress_done = 0;
    la_progress_total = total;
#endif
}

void
la_progress_read(long long *done, long long *total)
{
#if defined(__GNUC__) || defined(__clang__)
    *done = __atomic_load_n(&la_progress_done, __ATOMIC_RELAXED);
    *total = __atomic_load_n(&la_progress_total, __ATOMIC_RELAXED);
#else
    *done = la_progress_done;
    *total = la_progress_total;
#endif
}
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
