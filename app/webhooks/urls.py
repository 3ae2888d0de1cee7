"""Where a webhook may be sent: https in production, and never to an internal address.

A URL is checked when it is subscribed and again before every attempt, on the addresses its host
resolves to at that moment (a name can be re-pointed at an internal address after it was
accepted: DNS rebinding). The attempt then connects to the address that was checked, not to a
second lookup of the name.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL may not receive webhooks; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written in the URL (the TLS server name and the Host header)
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[Address, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def address_refusal(address: Address, *, allow_loopback: bool) -> str | None:
    """Why an address may not receive webhooks, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


def parse(url: str, *, require_https: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a URL that is well formed for a webhook."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("The URL is not valid.") from None
    scheme = parts.scheme.lower()
    allowed = ("https",) if require_https else ("https", "http")
    if scheme not in allowed:
        raise UnsafeUrl("The URL must start with " + " or ".join(f"{s}://" for s in allowed) + ".")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeUrl("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("The URL must not carry a user name or password.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port or (443 if scheme == "https" else 80), path


def resolve(host: str, port: int) -> tuple[Address, ...]:
    try:
        return (ipaddress.ip_address(host),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeUrl(f"The host {host!r} does not resolve.") from None
    found: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise UnsafeUrl(f"The host {host!r} does not resolve.")
    return tuple(found)


def check(url: str, *, require_https: bool, allow_loopback: bool) -> Target:
    """Parse and resolve `url`; raise UnsafeUrl unless every address it resolves to is allowed."""
    scheme, host, port, path = parse(url, require_https=require_https)
    addresses = resolve(host, port)
    for address in addresses:
        refusal = address_refusal(address, allow_loopback=allow_loopback)
        if refusal is not None:
            raise UnsafeUrl(f"The URL's host resolves to {refusal} ({address}), which is refused.")
    return Target(scheme, host, port, path, addresses)
