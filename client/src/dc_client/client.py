"""`Client`: one method per operation of the REST API (CONTRACT.md, "REST, under /api/v1")."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

from dc_client._http import RetryPolicy, Transport
from dc_client._version import __version__
from dc_client.errors import ApiError
from dc_client.types import (
    ApiKey,
    ApiKeyCreated,
    Balance,
    Delivery,
    Earnings,
    Health,
    Location,
    Logs,
    MaintenanceWindow,
    Me,
    Node,
    NodeCreated,
    NodeKey,
    Offer,
    Page,
    Payout,
    Pricing,
    Rental,
    SelfTest,
    Specs,
    SshKey,
    Transaction,
    Webhook,
)

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
# A rental that reached one of these will not change status again by itself.
RENTAL_FINAL = frozenset({"completed", "cancelled"})


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


class Client:
    """A client of the DistributedCompute API.

    `api_key` is a user API key (`dck_...`) or a session token; both go in the bearer header.
    Every call has `timeout` seconds per attempt; 429 and 503 answers are retried as `retry`
    says, honouring Retry-After. Errors raise `ApiError`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = Transport(
            self.base_url,
            api_key,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            user_agent=f"dc-client/{__version__}",
            sleep=sleep,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._http.request("GET", path, params=params)

    def _post(
        self,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        replay_safe: bool = False,
    ) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._http.request(
            "POST",
            path,
            json=_compact(body) if body is not None else None,
            headers=headers,
            replay_safe=replay_safe and idempotency_key is not None,
        )

    def _create(
        self, path: str, body: Mapping[str, Any], idempotency_key: str | None, *, replayed: bool
    ) -> Any:
        """A POST that creates or spends: one Idempotency-Key for all of this call's attempts.

        `replayed` says the contract promises that the server honours the key for this route, so
        even a timed-out attempt may be sent again."""
        return self._post(
            path,
            body,
            idempotency_key=idempotency_key or new_idempotency_key(),
            replay_safe=replayed,
        )

    def _delete(self, path: str) -> None:
        self._http.request("DELETE", path)

    def paginate(self, fetch: Callable[..., Page[T]], /, **kwargs: Any) -> Iterator[T]:
        """Every item of a listing, following `next_cursor` page by page.

        `client.paginate(client.list_rentals, label=["team=ml"])`."""
        cursor: str | None = kwargs.pop("cursor", None)
        while True:
            page = fetch(cursor=cursor, **kwargs)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # ------------------------------------------------------------------ account
    def health(self) -> Health:
        """GET /health (a 503 with the failing check raises ApiError)."""
        return cast(Health, self._get("/health"))

    def me(self) -> Me:
        return cast(Me, self._get("/me"))

    # ------------------------------------------------------------------ marketplace
    def search_offers(
        self,
        q: str | None = None,
        *,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        **filters: Any,
    ) -> Page[Offer]:
        """GET /offers: `q` is the query language (`gpu_vram_gb>=24 country in [US,CA]`);
        `filters` are the other query parameters (`gpu_model=`, `max_price=`, `near=`...)."""
        params = {"q": q, "sort": sort, "limit": limit, "cursor": cursor, **filters}
        return cast(Page[Offer], self._get("/offers", params))

    def iter_offers(self, q: str | None = None, **kwargs: Any) -> Iterator[Offer]:
        return self.paginate(self.search_offers, q=q, **kwargs)

    # ------------------------------------------------------------------ rentals
    def create_rental(
        self,
        node_id: str,
        image: str,
        *,
        command: list[str] | None = None,
        entrypoint: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        ports: list[int] | None = None,
        max_hourly_rate: str | None = None,
        gpu_count: int | None = None,
        onstart: str | None = None,
        ssh_keys: list[str] | None = None,
        registry_auth: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Rental:
        """POST /rentals; returns the pending rental. Retried attempts carry the same
        Idempotency-Key, so one call never rents twice; pass your own key to extend that
        guarantee across calls (a script that is itself retried)."""
        body = {
            "node_id": str(node_id),
            "image": image,
            "command": command,
            "entrypoint": entrypoint,
            "env": dict(env) if env else None,
            "ports": ports or None,
            "max_hourly_rate": max_hourly_rate,
            "gpu_count": gpu_count,
            "onstart": onstart,
            "ssh_keys": ssh_keys or None,
            "registry_auth": dict(registry_auth) if registry_auth else None,
            "labels": dict(labels) if labels else None,
        }
        return _rental(self._create("/rentals", body, idempotency_key, replayed=True))

    def list_rentals(
        self,
        *,
        label: list[str] | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Rental]:
        """GET /rentals, newest first; each `label` is `key=value` and all must match."""
        params = {"label": label, "status": status, "limit": limit, "cursor": cursor}
        return cast(Page[Rental], self._get("/rentals", params))

    def iter_rentals(self, **kwargs: Any) -> Iterator[Rental]:
        return self.paginate(self.list_rentals, **kwargs)

    def get_rental(self, rental_id: str) -> Rental:
        return _rental(self._get(f"/rentals/{rental_id}"))

    def stop_rental(self, rental_id: str) -> Rental:
        """POST /rentals/{id}/stop (idempotent: asking again changes nothing)."""
        return _rental(self._post(f"/rentals/{rental_id}/stop"))

    def rental_logs(self, rental_id: str, *, tail: int | None = None) -> Logs:
        return cast(Logs, self._get(f"/rentals/{rental_id}/logs", {"tail": tail}))

    def wait_for_rental(
        self,
        rental_id: str,
        *,
        until: Callable[[Rental], bool] | None = None,
        timeout: float = 600.0,
        interval: float = 1.0,
        on_update: Callable[[Rental], None] | None = None,
    ) -> Rental:
        """Poll the rental until `until(rental)` (default: it is active or has ended).

        Raises TimeoutError after `timeout` seconds; `on_update` sees every poll."""
        done = until or (lambda r: r.get("status") == "active" or r.get("status") in RENTAL_FINAL)
        deadline = time.monotonic() + timeout
        while True:
            rental = self.get_rental(rental_id)
            if on_update is not None:
                on_update(rental)
            if done(rental):
                return rental
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"rental {rental_id} still {rental.get('status')} after {timeout:g}s"
                )
            time.sleep(interval)

    # ------------------------------------------------------------------ nodes (hosts)
    def create_node(
        self,
        specs: Specs | Mapping[str, Any],
        pricing: Pricing | Mapping[str, Any],
        location: Location | Mapping[str, Any],
        *,
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> NodeCreated:
        """POST /nodes: returns the node and its agent key (`dcn_...`, shown this once)."""
        body = {"name": name, "specs": specs, "pricing": pricing, "location": location}
        return cast(NodeCreated, self._create("/nodes", body, idempotency_key, replayed=False))

    def list_nodes(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Node]:
        return cast(Page[Node], self._get("/nodes", {"limit": limit, "cursor": cursor}))

    def iter_nodes(self, **kwargs: Any) -> Iterator[Node]:
        return self.paginate(self.list_nodes, **kwargs)

    def get_node(self, node_id: str) -> Node:
        return cast(Node, self._get(f"/nodes/{node_id}"))

    def update_node(
        self,
        node_id: str,
        *,
        name: str | None = None,
        pricing: Mapping[str, Any] | None = None,
        location: Mapping[str, Any] | None = None,
        status: str | None = None,
    ) -> Node:
        """PATCH /nodes/{id}: `status` is `online` or `maintenance`."""
        body = _compact({"name": name, "pricing": pricing, "location": location, "status": status})
        return cast(Node, self._http.request("PATCH", f"/nodes/{node_id}", json=body))

    def drain_node(self, node_id: str) -> Node:
        return cast(Node, self._post(f"/nodes/{node_id}/drain"))

    def undrain_node(self, node_id: str) -> Node:
        return cast(Node, self._post(f"/nodes/{node_id}/undrain"))

    def rotate_node_key(self, node_id: str) -> NodeKey:
        """POST /nodes/{id}/api-key: the old key stops working at once."""
        return cast(NodeKey, self._post(f"/nodes/{node_id}/api-key"))

    def node_metrics(
        self, node_id: str, *, since: str | None = None, every: str | None = None
    ) -> dict[str, Any]:
        return cast(
            dict[str, Any], self._get(f"/nodes/{node_id}/metrics", {"since": since, "every": every})
        )

    def pricing_suggestion(self, node_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"/nodes/{node_id}/pricing-suggestion"))

    def node_rentals(
        self, node_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Rental]:
        params = {"limit": limit, "cursor": cursor}
        return cast(Page[Rental], self._get(f"/nodes/{node_id}/rentals", params))

    def start_self_test(self, node_id: str) -> SelfTest:
        return cast(SelfTest, self._post(f"/nodes/{node_id}/self-test"))

    def list_self_tests(self, node_id: str, *, cursor: str | None = None) -> Page[SelfTest]:
        return cast(Page[SelfTest], self._get(f"/nodes/{node_id}/self-tests", {"cursor": cursor}))

    def announce_maintenance(
        self, node_id: str, *, starts_at: str, ends_at: str, reason: str
    ) -> MaintenanceWindow:
        body = {"starts_at": starts_at, "ends_at": ends_at, "reason": reason}
        return cast(
            MaintenanceWindow,
            self._create(f"/nodes/{node_id}/maintenance", body, None, replayed=False),
        )

    def list_maintenance(
        self, node_id: str, *, cursor: str | None = None
    ) -> Page[MaintenanceWindow]:
        return cast(
            Page[MaintenanceWindow], self._get(f"/nodes/{node_id}/maintenance", {"cursor": cursor})
        )

    def cancel_maintenance(self, node_id: str, window_id: str) -> None:
        self._delete(f"/nodes/{node_id}/maintenance/{window_id}")

    # ------------------------------------------------------------------ API keys, SSH keys
    def create_api_key(
        self, name: str, *, scope: str = "full", idempotency_key: str | None = None
    ) -> ApiKeyCreated:
        """POST /api-keys: `scope` is `full` or `read`; the key is shown this once."""
        body = {"name": name, "scope": scope}
        return cast(ApiKeyCreated, self._create("/api-keys", body, idempotency_key, replayed=False))

    def list_api_keys(self, *, cursor: str | None = None) -> Page[ApiKey]:
        return cast(Page[ApiKey], self._get("/api-keys", {"cursor": cursor}))

    def revoke_api_key(self, key_id: str) -> None:
        self._delete(f"/api-keys/{key_id}")

    def add_ssh_key(
        self, name: str, public_key: str, *, idempotency_key: str | None = None
    ) -> SshKey:
        body = {"name": name, "public_key": public_key.strip()}
        return cast(SshKey, self._create("/me/ssh-keys", body, idempotency_key, replayed=False))

    def list_ssh_keys(self, *, cursor: str | None = None) -> Page[SshKey]:
        return cast(Page[SshKey], self._get("/me/ssh-keys", {"cursor": cursor}))

    def remove_ssh_key(self, key_id: str) -> None:
        self._delete(f"/me/ssh-keys/{key_id}")

    # ------------------------------------------------------------------ billing
    def balance(self) -> Balance:
        return cast(Balance, self._get("/billing/balance"))

    def list_transactions(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Transaction]:
        params = {"limit": limit, "cursor": cursor}
        return cast(Page[Transaction], self._get("/billing/transactions", params))

    def iter_transactions(self, **kwargs: Any) -> Iterator[Transaction]:
        return self.paginate(self.list_transactions, **kwargs)

    def add_credits(
        self,
        user_id: str,
        amount: str,
        reference: str,
        *,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """POST /billing/credits (admins)."""
        body = {
            "user_id": user_id,
            "amount": amount,
            "reference": reference,
            "description": description,
        }
        return cast(
            Transaction, self._create("/billing/credits", body, idempotency_key, replayed=True)
        )

    def earnings(self, *, every: str = "day") -> Earnings:
        return cast(Earnings, self._get("/billing/earnings", {"every": every}))

    def request_payout(self, amount: str, *, idempotency_key: str | None = None) -> Payout:
        body = {"amount": amount}
        return cast(Payout, self._create("/billing/payouts", body, idempotency_key, replayed=True))

    def list_payouts(self, *, cursor: str | None = None) -> Page[Payout]:
        return cast(Page[Payout], self._get("/billing/payouts", {"cursor": cursor}))

    def approve_payout(self, payout_id: str) -> Payout:
        return cast(Payout, self._post(f"/billing/payouts/{payout_id}/approve"))

    def reject_payout(self, payout_id: str) -> Payout:
        return cast(Payout, self._post(f"/billing/payouts/{payout_id}/reject"))

    # ------------------------------------------------------------------ webhooks
    def create_webhook(
        self, url: str, events: list[str], *, idempotency_key: str | None = None
    ) -> Webhook:
        """POST /webhooks: the answer's `secret` (for verify_signature) is shown this once."""
        body = {"url": url, "events": events}
        return cast(Webhook, self._create("/webhooks", body, idempotency_key, replayed=False))

    def list_webhooks(self, *, cursor: str | None = None) -> Page[Webhook]:
        return cast(Page[Webhook], self._get("/webhooks", {"cursor": cursor}))

    def delete_webhook(self, webhook_id: str) -> None:
        self._delete(f"/webhooks/{webhook_id}")

    def webhook_deliveries(self, webhook_id: str, *, cursor: str | None = None) -> Page[Delivery]:
        return cast(
            Page[Delivery], self._get(f"/webhooks/{webhook_id}/deliveries", {"cursor": cursor})
        )


def _compact(body: Mapping[str, Any]) -> dict[str, Any]:
    """Leave out what the caller did not set, so the server applies its own defaults."""
    return {key: value for key, value in body.items() if value is not None}


def _rental(body: Any) -> Rental:
    """The platform wraps a single rental in `{"rental": ...}`; callers want the rental."""
    if isinstance(body, dict) and isinstance(body.get("rental"), dict):
        return cast(Rental, body["rental"])
    if isinstance(body, dict) and "id" in body:
        return cast(Rental, body)
    raise ApiError(200, "the API answered without a rental", code="bad_response", body=body)
