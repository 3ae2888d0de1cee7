"""The task queue: Dramatiq's broker, its middleware, the actor class and the periodic schedule.

Domains declare their actors in ``app/<domain>/actors.py`` with :func:`app.queue.actors.actor`;
``workers/`` (the worker processes' entry point) imports them all through ``app/actors.py``.
"""
