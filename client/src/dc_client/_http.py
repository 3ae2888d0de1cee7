"""One HTTP exchange with the API: timeout, bounded retries honouring Retry-After, error mapping."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from dc_client.errors import ApiError

# 429: the server asked us to slow down; 503: it is briefly unable to serve. Neither did the work.
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try again: `retries` more attempts after the first, exponential backoff from
    `backoff` seconds (with jitter) up to `max_backoff`; a Retry-After longer than
    `max_retry_after` is not waited out: the error is raised at once instead."""

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base: float = min(self.max_backoff, self.backoff * (2**attempt))
        return base / 2 + random.uniform(0, base / 2)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Transport:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float,
        retry: RetryPolicy,
        user_agent: str,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry
        self.sleep = sleep
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.session.headers["Accept"] = "application/json"
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        replay_safe: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Send the request and return the decoded JSON body (None for 204).

        `replay_safe` says that sending the same request twice does no harm (a GET, or a POST
        whose Idempotency-Key the server honours), so a timeout or a dropped connection is
        retried too; otherwise only 429 and 503, which the server answers without doing the work.
        """
        url = f"{self.base_url}/api/v1{path}"
        safe = replay_safe or method in ("GET", "HEAD", "DELETE")
        attempt = 0
        while True:
            try:
                response = self.session.request(
                    method,
                    url,
                    params=_clean(params),
                    json=json,
                    headers=dict(headers or {}),
                    timeout=timeout or self.timeout,
                )
            except requests.Timeout as exc:
                if safe and attempt < self.retry.retries:
                    self.sleep(self.retry.delay(attempt, None))
                    attempt += 1
                    continue
                raise ApiError(
                    0, f"no answer from {self.base_url} in time", code="timeout"
                ) from exc
            except requests.ConnectionError as exc:
                if safe and attempt < self.retry.retries:
                    self.sleep(self.retry.delay(attempt, None))
                    attempt += 1
                    continue
                raise ApiError(
                    0, f"cannot reach {self.base_url}: {_reason(exc)}", code="unreachable"
                ) from exc

            if response.status_code in RETRY_STATUSES and attempt < self.retry.retries:
                wait = parse_retry_after(response.headers.get("Retry-After"))
                if wait is None or wait <= self.retry.max_retry_after:
                    self.sleep(self.retry.delay(attempt, wait))
                    attempt += 1
                    continue
            return _decode(response)


def _clean(params: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    """Drop unset parameters; repeat a parameter given as a list (`label=a=1&label=b=2`)."""
    if not params:
        return None
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            pairs.append((key, text))
    return pairs


def _decode(response: requests.Response) -> Any:
    if response.ok and (response.status_code == 204 or not response.content):
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.ok:
        if body is None:
            raise ApiError(
                response.status_code,
                f"the API answered {response.status_code} with a body that is not JSON",
                code="bad_response",
            )
        return body
    if isinstance(body, dict):
        message = body.get("message") or response.reason or "request failed"
        errors = body.get("errors")
        raise ApiError(
            response.status_code,
            str(message),
            code=body.get("code"),
            errors=errors if isinstance(errors, dict) else None,
            status_text=body.get("status") or response.reason,
            body=body,
        )
    text = " ".join(response.text.split())[:200]
    raise ApiError(
        response.status_code,
        text or response.reason or "request failed",
        status_text=response.reason,
        body=response.text,
    )


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host"):
        if marker in text:
            return marker.lower()
    return text[:200]
