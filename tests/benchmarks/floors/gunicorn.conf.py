"""gunicorn settings for the heartbeat floor: the platform's (deploy/gunicorn.conf.py) process
settings, so that the two servers differ only in what they do per frame."""

import os

worker_class = "gevent"
workers = 1
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
backlog = 4096
timeout = 60
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = "warning"


def post_fork(server, worker):
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def post_worker_init(worker):
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 100, 100)
