"""Dramatiq workers: `dramatiq workers` loads the broker and every domain's actors."""

from workers import broker  # noqa: F401  (must come first)
from workers import system  # noqa: F401
from workers.registry import load_actor_modules

load_actor_modules()
