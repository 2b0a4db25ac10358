/*
 * The helper threads of lazarus's CPU GEMMs: started once, kept for the process.
 *
 * A forward pass makes ~150 matmuls, many of them short (tens to hundreds of microseconds at a
 * short prompt). Starting threads per call cost 0.1-0.2 ms each on this VM, as much as some of
 * the matmuls; waking a kept thread costs tens of microseconds, and a helper that has just
 * finished spins briefly first, because matmuls come in bursts (q, k, v; gate, up).
 *
 * Helpers are started away from the caller's CPU: Linux otherwise placed a new thread on its
 * parent's CPU when the other cores had been busy a moment before (MLX's own thread ran the ops
 * before the matmul), and the helper then waited a whole time slice (3-4 ms) behind it. Once
 * placed, a woken helper returns to its previous CPU when that one is idle.
 *
 * One caller at a time: the helpers share one work slot, so run_threads holds `caller` for the
 * whole call. The kernels are called through ctypes, which releases the GIL, so two Python threads
 * could otherwise publish work over each other: a helper then ran one caller's job twice and the
 * other's never (its output rows stayed uninitialized), and `pending` went below zero, which
 * left the next caller waiting forever. The lock is here rather than in Python so that every
 * entry (packing as well as the GEMMs) and every caller is covered. A forked child starts with
 * no helpers and an unlocked `caller`.
 */
#include "_gemm.h"

#define SPIN 2000 /* pause instructions, ~50-100 microseconds */

/* A stall a test build injects (tests/test_kernel_threads.py) where a helper has taken work and
 * not yet reported it done: it widens the window in which a race in the handover shows. */
#ifndef LZ_TEST_STALL
#define LZ_TEST_STALL() ((void)0)
#endif

typedef struct {
    void *(*fn)(void *);
    char *jobs;
    size_t job_size;
    int count; /* jobs 0..count-1: the caller runs 0, helper i runs i */
} work_t;

static pthread_mutex_t caller = PTHREAD_MUTEX_INITIALIZER; /* held for a whole run_threads */
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static pthread_cond_t work_done = PTHREAD_COND_INITIALIZER;
static int helpers;             /* started */
static unsigned long generation; /* bumped for each piece of work */
static int pending;             /* helpers that have not yet finished the current work */
static work_t work;
static unsigned long start_generation[MAX_THREADS]; /* helper i's generation when started */
static int fork_handler_set;

static void *helper(void *arg) {
    int id = (int)(intptr_t)arg;
    /* The work published before this helper existed is not its own: had it started from 0, it
     * would take the previous call's work (no job of its own in it) and report done twice,
     * once before the current call's work was even published. Written by start_helpers before
     * pthread_create (which orders it before this read), while the caller lock keeps the
     * generation still until the new work is published. */
    unsigned long seen = start_generation[id];
    for (;;) {
        for (int i = 0; i < SPIN && __atomic_load_n(&generation, __ATOMIC_ACQUIRE) == seen; i++) {
            _mm_pause();
        }
        pthread_mutex_lock(&mutex);
        while (__atomic_load_n(&generation, __ATOMIC_ACQUIRE) == seen) {
            pthread_cond_wait(&work_ready, &mutex);
        }
        seen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
        work_t w = work;
        pthread_mutex_unlock(&mutex);
        if (id < w.count) w.fn(w.jobs + (size_t)id * w.job_size);
        LZ_TEST_STALL();
        pthread_mutex_lock(&mutex);
        if (__atomic_sub_fetch(&pending, 1, __ATOMIC_ACQ_REL) == 0) {
            pthread_cond_signal(&work_done);
        }
        pthread_mutex_unlock(&mutex);
    }
    return NULL;
}

static void forget_helpers(void) {
    /* In a forked child the helpers do not exist: start afresh. */
    pthread_mutex_init(&caller, NULL);
    pthread_mutex_init(&mutex, NULL);
    pthread_cond_init(&work_ready, NULL);
    pthread_cond_init(&work_done, NULL);
    helpers = 0;
    generation = 0;
    pending = 0;
}

/* Starts helpers up to `wanted` (never fewer than already running); returns how many run. */
static int start_helpers(int wanted) {
    if (!fork_handler_set) {
        pthread_atfork(NULL, NULL, forget_helpers);
        fork_handler_set = 1;
    }
    cpu_set_t others;
    int steer = sched_getaffinity(0, sizeof(others), &others) == 0 && CPU_COUNT(&others) > 1;
    int here = steer ? sched_getcpu() : -1;
    if (here >= 0) CPU_CLR(here, &others);
    if (wanted > MAX_THREADS - 1) wanted = MAX_THREADS - 1;
    while (helpers < wanted) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (here >= 0) pthread_attr_setaffinity_np(&attr, sizeof(others), &others);
        start_generation[helpers + 1] = __atomic_load_n(&generation, __ATOMIC_RELAXED);
        pthread_t tid;
        int rc = pthread_create(&tid, &attr, helper, (void *)(intptr_t)(helpers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        helpers++;
    }
    return helpers;
}

static void run_locked(void *(*fn)(void *), char *base, size_t job_size, int threads) {
    int running = threads > 1 ? start_helpers(threads - 1) : 0;
    int shared = running < threads - 1 ? running + 1 : threads; /* jobs the helpers take part in */
    if (running > 0) {
        pthread_mutex_lock(&mutex);
        work = (work_t){fn, base, job_size, shared};
        __atomic_store_n(&pending, running, __ATOMIC_RELEASE);
        __atomic_add_fetch(&generation, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&work_ready);
        pthread_mutex_unlock(&mutex);
    }
    fn(base);
    for (int t = running > 0 ? shared : 1; t < threads; t++) fn(base + (size_t)t * job_size);
    if (running == 0) return;
    for (int i = 0; i < SPIN && __atomic_load_n(&pending, __ATOMIC_ACQUIRE) != 0; i++) _mm_pause();
    pthread_mutex_lock(&mutex);
    while (__atomic_load_n(&pending, __ATOMIC_ACQUIRE) != 0) pthread_cond_wait(&work_done, &mutex);
    pthread_mutex_unlock(&mutex);
}

void run_threads(void *(*fn)(void *), void *jobs, size_t job_size, int threads) {
    if (threads <= 1) { /* touches no shared state */
        fn(jobs);
        return;
    }
    pthread_mutex_lock(&caller);
    run_locked(fn, (char *)jobs, job_size, threads);
    pthread_mutex_unlock(&caller);
}
