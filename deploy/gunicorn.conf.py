"""gunicorn settings for the platform: gevent workers hold thousands of agent sockets.

psycopg2 is made cooperative (psycogreen) so a database call yields instead of blocking the
worker's other greenlets. The socket path itself does no database work after the handshake.
On shutdown each worker closes its agent sockets with 1001 (going away) at once, so agents
reconnect to another worker instead of waiting out the graceful timeout.
"""

import os

# gevent, with the server's own errors (request line or headers too long, malformed requests)
# written as the contract's JSON instead of gunicorn's HTML page: see app/server.py.
worker_class = "app.server.JsonErrorGeventWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# Each agent holds one connection for as long as it runs.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('API_PORT', '8000')}")
backlog = 4096  # reconnect storms after a restart arrive all at once
timeout = 60
graceful_timeout = 10
keepalive = 5
accesslog = None
# The server's own limits, stated rather than implied (gunicorn's maximums). A request line of
# 8190 bytes holds a GET /offers `q` of 1000 characters percent-encoded (unless most are
# non-ASCII); an Idempotency-Key of up to 8190 bytes reaches the app, which refuses more than
# 255 characters with a 422. Beyond these, the worker answers 414 or 431, as JSON.
limit_request_line = 8190
limit_request_field_size = 8190
limit_request_fields = 100
errorlog = "-"
loglevel = "warning"


def post_fork(server, worker):
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


# Thousands of sockets mean millions of long-lived objects. With the default thresholds every
# socket's short waits get promoted to the oldest generation, a full collection follows every
# minute or so and stalls all sockets for half a second (measured: heartbeat p99 of 1-4 s at
# 6,000 agents). Collecting the young generations rarely keeps those waits out of it; what
# start-up created is frozen so no collection walks it again.
GC_THRESHOLDS = (50_000, 100, 100)


def post_worker_init(worker):
    import gc

    import gevent

    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    def close_agents_on_exit():
        while worker.alive:
            gevent.sleep(0.5)
        from app.ws.bridge import shutdown_bridge

        shutdown_bridge()

    gevent.spawn(close_agents_on_exit)
