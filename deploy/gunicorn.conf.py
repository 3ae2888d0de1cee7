"""gunicorn settings for the platform: gevent workers hold thousands of agent sockets.

psycopg2 is made cooperative (psycogreen) so a database call yields instead of blocking the
worker's other greenlets.
"""

import os

worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('API_PORT', '8000')}")
timeout = 60
graceful_timeout = 10
keepalive = 5
accesslog = None
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
