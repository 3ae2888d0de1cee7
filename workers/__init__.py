"""The worker processes' entry point: `dramatiq workers` loads the broker, its middleware and
every domain's actors (app/actors.py); workers/scheduler.py sends the periodic jobs."""

import app.actors  # noqa: F401  (declares every actor on the broker)
