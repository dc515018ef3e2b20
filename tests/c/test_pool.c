/*
 * test_pool.c -- the thread pool of la_parallel.c without Python: every item
 * and every share runs exactly once, whatever the callers do at the same time
 * (several threads, nested calls), with each thread's own range of items
 * first and the others' left-overs next, failures and cancellation stop a run, the
 * thread-count settings resolve as documented, and the pool works again in a
 * forked child.  Run by ctest, under ASan/UBSan in the sanitizer build.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "la_parallel.h"

static int failures = 0, checks = 0;

static void
expect(const char *what, int ok)
{
    checks++;
    if (!ok) {
        failures++;
        fprintf(stderr, "FAIL %s\n", what);
    }
}

typedef struct {
    int *hits;
    la_index fail_at;
} items_ctx;

static la_status
count_item(void *vctx, la_index i, char *work)
{
    items_ctx *c = (items_ctx *)vctx;
    work[0] = (char)i; /* each worker's scratch is its own */
    __atomic_fetch_add(&c->hits[i], 1, __ATOMIC_RELAXED);
    return i == c->fail_at ? LA_ERR_VALUE : LA_OK;
}

static int
run_items(la_index n, int nth)
{
    items_ctx c;
    char *work = malloc((size_t)nth * 64);
    la_status st;
    la_index i;
    int ok = 1;
    c.hits = calloc((size_t)n + 1, sizeof(int));
    c.fail_at = -1;
    st = la_parallel_items(n, nth, count_item, &c, work, 64);
    for (i = 0; i < n; i++) {
        ok &= c.hits[i] == 1;
    }
    free(c.hits);
    free(work);
    return ok && st == LA_OK;
}

static void
share_task(void *vctx, int ith, int nth)
{
    int *seen = (int *)vctx;
    (void)nth;
    __atomic_fetch_add(&seen[ith], 1, __ATOMIC_RELAXED);
}

static void
nested_task(void *vctx, int ith, int nth)
{
    (void)vctx;
    (void)nth;
    /* a task that itself asks for threads runs that job inline */
    if (!run_items(50 + ith, 3)) {
        __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);
    }
}

static void *
caller(void *arg)
{
    int r, ok = 1;
    (void)arg;
    for (r = 0; r < 200; r++) {
        ok &= run_items(1 + r % 97, 1 + r % 4);
    }
    return (void *)(intptr_t)ok;
}

int
main(void)
{
    int nth, i, seen[8];
    pthread_t th[4];
    la_threads_init();

    for (nth = 1; nth <= 5; nth++) {
        expect("every item once", run_items(1000, nth));
        expect("fewer items than workers", run_items(2, nth));
        expect("no items", run_items(0, nth));
        memset(seen, 0, sizeof(seen));
        la_parallel_run(share_task, seen, nth);
        for (i = 0; i < 8; i++) {
            expect("every share once", seen[i] == (i < nth));
        }
    }
    /* more threads than ranges kept on the stack (their ranges allocated) */
    expect("every item once, 12 threads", run_items(1000, 12));
    expect("fewer items than 12 threads", run_items(5, 12));
    la_parallel_run(nested_task, NULL, 3);
    expect("nested calls", failures == 0);

    for (i = 0; i < 4; i++) {
        pthread_create(&th[i], NULL, caller, NULL);
    }
    for (i = 0; i < 4; i++) {
        void *ok;
        pthread_join(th[i], &ok);
        expect("concurrent callers", ok != NULL);
    }

    { /* the first failure stops the run and is returned */
        items_ctx c;
        char work[4 * 64];
        c.hits = calloc(100, sizeof(int));
        c.fail_at = 5;
        expect("failure returned",
               la_parallel_items(100, 4, count_item, &c, work, 64) == LA_ERR_VALUE);
        free(c.hits);
        la_cancel_flag = 1;
        c.hits = calloc(100, sizeof(int));
        c.fail_at = -1;
        expect("cancelled", la_parallel_items(100, 2, count_item, &c, work, 64) ==
                                LA_ERR_INTERRUPTED);
        la_cancel_flag = 0;
        free(c.hits);
    }

    { /* settings: explicit > environment > CPUs, capped by CPUs and a limit */
        const int cpus = la_max_threads();
        la_set_num_threads(cpus + 5);
        expect("capped by the CPUs", la_get_num_threads() == cpus);
        expect("source cpu_affinity", strcmp(la_threads_source(), "cpu_affinity") == 0);
        la_set_num_threads(1);
        expect("explicit", la_get_num_threads() == 1);
        expect("source set_num_threads", strcmp(la_threads_source(), "set_num_threads") == 0);
        la_set_num_threads(cpus);
        la_set_thread_limit(1);
        expect("limit", la_get_num_threads() == 1);
        expect("source threadpoolctl",
               cpus == 1 || strcmp(la_threads_source(), "threadpoolctl") == 0);
        la_set_thread_limit(0);
        la_set_num_threads(0);
        expect("default >= 1", la_get_num_threads() >= 1);
    }

    { /* a forked child starts its own pool */
        pid_t pid;
        int status = 0;
        expect("pool before fork", run_items(500, 3));
        pid = fork();
        if (pid == 0) {
            _exit(run_items(500, 3) && run_items(77, 2) ? 0 : 3);
        }
        waitpid(pid, &status, 0);
        expect("pool in a forked child", WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }

    printf("%d checks, %d failures; %d pool workers\n", checks, failures, la_pool_workers());
    return failures != 0;
}
