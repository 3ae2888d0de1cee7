"""Why a rental could not start: one exception that carries the contract's failure code."""

from __future__ import annotations


class StartFailed(Exception):
    """The instance cannot start; `reason` is shown to the renter, `code` is machine-readable."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class EngineUnavailable(Exception):
    """The container engine does not answer."""


ENGINE_UNAVAILABLE_REASON = "The node's container engine is not available; try another node."
