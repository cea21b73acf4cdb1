/* rt_pool.h — a fixed pool of worker threads that runs parallel-for loops for the CPU backend.
 *
 * rt_pool_run(pool, n, fn, ctx) calls fn(ctx, i) for every i in [0, n) spread over the pool's
 * threads (the caller's thread works too) and returns when all calls are done. One run at a time
 * per pool: the pool belongs to one engine thread. Work is handed out in contiguous chunks by an
 * atomic counter.
 */
#ifndef RT_POOL_H
#define RT_POOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct rt_pool rt_pool;

typedef void (*rt_pool_fn)(void *ctx, int64_t i);

/* n_threads <= 0 means one per online CPU. *out is caller-owned. */
int rt_pool_create(int n_threads, rt_pool **out);
void rt_pool_destroy(rt_pool *pool); /* NULL is a no-op; joins the workers */

int rt_pool_size(const rt_pool *pool);

/* Runs fn(ctx, i) for i in [0, n); blocks until done. Only the pool's owner thread may call it. */
void rt_pool_run(rt_pool *pool, int64_t n, rt_pool_fn fn, void *ctx);

#endif /* RT_POOL_H */
