"""One HTTP attempt: POST to the address that was checked, no redirects, a hard time limit."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import certifi
import urllib3
from urllib3.exceptions import HTTPError, TimeoutError

from app.webhooks.urls import Target

RESPONSE_SNIPPET_BYTES = 512
USER_AGENT = "DistributedCompute-Webhooks/1"


@dataclass(frozen=True)
class Attempt:
    result: str  # delivered | http_error | timeout | connection_error | blocked
    status_code: int | None = None
    error: str | None = None
    response: str | None = None

    @property
    def ok(self) -> bool:
        return self.result == "delivered"


def post(target: Target, body: bytes, headers: dict[str, str], *, timeout: float) -> Attempt:
    """POST `body` to the first of the target's (already checked) addresses."""
    address = str(target.addresses[0])
    options = {
        "port": target.port,
        "timeout": urllib3.Timeout(connect=timeout, read=timeout, total=timeout),
        "retries": False,
        "maxsize": 1,
    }
    if target.scheme == "https":
        context = ssl.create_default_context(cafile=certifi.where())
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address,
            server_hostname=target.host,
            assert_hostname=target.host,
            ssl_context=context,
            **options,  # type: ignore[arg-type]
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, **options)  # type: ignore[arg-type]
    sent_headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **headers,
    }
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers=sent_headers,
            redirect=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            snippet = response.read(RESPONSE_SNIPPET_BYTES, decode_content=False)
        except (HTTPError, OSError):
            snippet = b""
        finally:
            response.release_conn()
    except TimeoutError:
        return Attempt("timeout", error=f"no answer within {timeout:g} s")
    except (HTTPError, OSError) as exc:
        return Attempt("connection_error", error=_describe(exc))
    finally:
        pool.close()
    text = snippet.decode("utf-8", errors="replace")
    text = "".join(ch if ch.isprintable() or ch in "\n\t" else "?" for ch in text)
    status = response.status
    if 200 <= status < 300:
        return Attempt("delivered", status_code=status, response=text)
    return Attempt("http_error", status_code=status, error=f"HTTP {status}", response=text)


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return (type(exc).__name__ + (f": {reason}" if reason else f": {exc}"))[:500]
