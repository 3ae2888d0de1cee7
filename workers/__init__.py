"""Dramatiq workers: `dramatiq workers` loads the broker and every domain's actors."""

# isort: off
from workers import broker  # noqa: F401  (must come first)
from workers import system  # noqa: F401
from workers.registry import load_actor_modules

# isort: on

load_actor_modules()
