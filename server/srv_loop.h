/* srv_loop.h — the daemon's event loop: libmicrohttpd driven by a libuv loop, plus a thread-safe
 * message queue that wakes it.
 *
 * One srv_loop owns one uv loop and one MHD daemon (external epoll mode, no MHD thread). The thread
 * that calls srv_loop_run() is "the loop thread": every MHD callback, every uv callback and every
 * posted message runs there. Other threads (the engine) talk to it only through srv_loop_post(),
 * srv_loop_wakeup() and srv_loop_stop(). The HTTP layer above (srv_http) plugs in through
 * srv_loop_hooks; this module knows nothing of routes or requests.
 *
 * Lifecycle: srv_loop_create (binds and listens) → srv_loop_run (blocks until stopped and drained)
 * → srv_loop_destroy. Shutdown: srv_loop_stop (or SIGINT/SIGTERM when handle_signals) stops
 * accepting, waits for in-flight requests up to drain_timeout_ms, then closes every connection.
 */
#ifndef SRV_LOOP_H
#define SRV_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>
#include <uv.h>

typedef struct srv_loop srv_loop;

/* A message for the loop thread. Embed it as the first member of your own struct, fill fn, and
 * hand it to srv_loop_post(); fn then runs once on the loop thread and owns the message (it frees
 * the enclosing struct). Messages run in the order they were posted. */
typedef struct srv_msg srv_msg;
typedef void (*srv_msg_fn)(srv_msg *msg, srv_loop *loop);
struct srv_msg {
    srv_msg *next; /* queue link; owned by srv_loop while queued */
    srv_msg_fn fn; /* required */
};

/* How the HTTP layer plugs into the daemon. Every callback runs on the loop thread, cls is passed
 * to each; cls is borrowed and must outlive the srv_loop (srv_loop_destroy still calls into it). */
typedef struct srv_loop_hooks {
    MHD_AccessHandlerCallback access;       /* required: MHD's per-request callback */
    MHD_RequestCompletedCallback completed; /* optional: MHD_OPTION_NOTIFY_COMPLETED */
    /* optional: requests begun and not yet completed; the drain waits for 0 (NULL = drain waits
     * for MHD's connection count instead, idle keep-alive connections included) */
    unsigned (*n_inflight)(void *cls);
    /* optional: called once just before the daemon stops; must resume every suspended
     * connection (MHD forbids stopping with suspended ones) and never suspend again */
    void (*on_stop)(void *cls);
    void *cls;
} srv_loop_hooks;

typedef struct srv_loop_params {
    const char *host;              /* numeric IPv4/IPv6 address to bind; NULL or "" = 0.0.0.0 */
    uint16_t port;                 /* 0 = any free port (read it back with srv_loop_port) */
    unsigned connection_limit;     /* max simultaneous connections; 0 = MHD's default */
    unsigned connection_timeout_s; /* idle connection timeout; 0 = none */
    unsigned drain_timeout_ms;     /* how long a stop waits for in-flight requests */
    bool handle_signals;           /* SIGINT/SIGTERM begin a graceful stop */
} srv_loop_params;

/* Defaults: host 127.0.0.1, port 8000, connection_limit 0, connection_timeout_s 60,
 * drain_timeout_ms 30000, handle_signals false. Any thread. */
srv_loop_params srv_loop_default_params(void);

/* Creates the uv loop and starts the MHD daemon listening on host:port (MHD_USE_EPOLL,
 * MHD_ALLOW_SUSPEND_RESUME). hooks is copied. Returns NULL with a message in err on failure (bad
 * address, port in use, ...). Any thread; the loop then belongs to the thread that runs it. */
srv_loop *srv_loop_create(const srv_loop_params *p, const srv_loop_hooks *hooks, char *err,
                          size_t err_len);

/* Stops and frees everything: if srv_loop_run never ran or did not finish, closes the daemon
 * (hooks.on_stop, then every connection, so completion callbacks fire); then runs every message
 * still queued (their fns must cope with a stopped loop) and frees the loop. NULL is a no-op.
 * Loop thread (or the creating thread when srv_loop_run never ran), after any srv_loop_run has
 * returned; no other thread may post after this starts. */
void srv_loop_destroy(srv_loop *loop);

/* The bound TCP port (useful with port 0). Any thread. */
uint16_t srv_loop_port(const srv_loop *loop);

/* Runs the loop on the calling thread until a stop has drained; then the daemon is stopped and
 * every uv handle closed. Returns 0, or FQ_EINVAL when called twice. The calling thread becomes
 * the loop thread. */
int srv_loop_run(srv_loop *loop, char *err, size_t err_len);

/* Begins a graceful stop: let in-flight requests finish (at most drain_timeout_ms), then close.
 * The port stays open meanwhile so that new requests get an answer (503, from the routes, which
 * check srv_loop_is_draining). Idempotent. Any thread. */
void srv_loop_stop(srv_loop *loop);

/* Queues msg (taken) and wakes the loop; msg->fn runs on the loop thread. After srv_loop_run has
 * returned, the message waits for srv_loop_destroy, which runs it. Never fails. Any thread. */
void srv_loop_post(srv_loop *loop, srv_msg *msg);

/* Wakes the loop so it drains its queue and services MHD. Any thread. */
void srv_loop_wakeup(srv_loop *loop);

/* True once a stop has begun (for /ready). Loop thread. */
bool srv_loop_is_draining(const srv_loop *loop);

/* The uv loop, for other loop-thread modules (timers, metrics). Borrowed. Loop thread. */
uv_loop_t *srv_loop_uv(srv_loop *loop);

#endif /* SRV_LOOP_H */
