"""The DistributedCompute client: `Client` over the REST API, and the `dc` command line."""

from __future__ import annotations

from dc_client._http import RetryPolicy
from dc_client._version import __version__
from dc_client.client import Client, new_idempotency_key
from dc_client.errors import ApiError
from dc_client.webhooks import sign, verify_signature

__all__ = [
    "ApiError",
    "Client",
    "RetryPolicy",
    "__version__",
    "new_idempotency_key",
    "sign",
    "verify_signature",
]
