/* rt_pool.c — worker threads parked on a condition variable, woken per parallel-for generation. */
#include "rt_pool.h"

#include "fq_base.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

struct rt_pool {
    int n_threads; /* including the caller */
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation; /* bumped per run; workers wait for a new one */
    bool stop;
    int n_busy; /* workers still inside the current run */
    /* current run */
    rt_pool_fn fn;
    void *ctx;
    int64_t n;
    int64_t chunk;
    atomic_int_fast64_t next;
};

static void run_chunks(rt_pool *p)
{
    for (;;) {
        int64_t start = atomic_fetch_add(&p->next, p->chunk);
        if (start >= p->n)
            return;
        int64_t end = start + p->chunk < p->n ? start + p->chunk : p->n;
        for (int64_t i = start; i < end; i++)
            p->fn(p->ctx, i);
    }
}

static void *worker_main(void *arg)
{
    rt_pool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p);
        pthread_mutex_lock(&p->mu);
        if (--p->n_busy == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int rt_pool_create(int n_threads, rt_pool **out)
{
    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    rt_pool *p = calloc(1, sizeof *p);
    if (!p)
        return FQ_ENOMEM;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->workers = fq_calloc_array((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        rt_pool_destroy(p);
        return FQ_ENOMEM;
    }
    for (int i = 1; i < n_threads; i++) {
        if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
            p->n_threads = i; /* destroy joins only the started ones */
            rt_pool_destroy(p);
            return FQ_ENOMEM;
        }
    }
    *out = p;
    return 0;
}

void rt_pool_destroy(rt_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; p->workers && i < p->n_threads; i++)
        pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->workers);
    free(p);
}

int rt_pool_size(const rt_pool *p)
{
    return p->n_threads;
}

void rt_pool_run(rt_pool *p, int64_t n, rt_pool_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (p->n_threads == 1 || n == 1) {
        for (int64_t i = 0; i < n; i++)
            fn(ctx, i);
        return;
    }
    /* about 4 chunks per thread balances uneven items without much counter traffic */
    int64_t chunk = n / ((int64_t)p->n_threads * 4);
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = chunk > 0 ? chunk : 1;
    atomic_store(&p->next, 0);
    p->n_busy = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p);
    pthread_mutex_lock(&p->mu);
    while (p->n_busy > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
