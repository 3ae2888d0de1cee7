"""InfluxDB over the v1 HTTP API (`/write`, `/query`, `/ping`), served by 1.x, 2.x and 3.x alike."""

from __future__ import annotations

from typing import Any

import requests

from app.config import Settings, get_settings


class InfluxError(Exception):
    pass


class InfluxClient:
    def __init__(self, url: str, database: str, token: str | None = None, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.database = database
        self.timeout = timeout
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Token {token}"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> InfluxClient:
        s = settings or get_settings()
        return cls(s.influxdb_url, s.influxdb_database, s.influxdb_token)

    def ping(self) -> None:
        try:
            response = self.http.get(f"{self.url}/ping", timeout=self.timeout)
        except requests.RequestException as exc:
            raise InfluxError(f"unreachable: {exc.__class__.__name__}") from None
        if response.status_code not in (200, 204):
            raise InfluxError(f"ping answered {response.status_code}")

    def query(
        self, q: str, *, params: dict[str, Any] | None = None, database: str | None = None
    ) -> dict[str, Any]:
        data = {"q": q, "db": database or self.database, "epoch": "ms"}
        if params:
            import json

            data["params"] = json.dumps(params)
        try:
            response = self.http.post(f"{self.url}/query", data=data, timeout=self.timeout)
        except requests.RequestException as exc:
            raise InfluxError(f"unreachable: {exc.__class__.__name__}") from None
        if response.status_code != 200:
            raise InfluxError(f"query failed ({response.status_code}): {response.text[:200]}")
        body = response.json()
        for result in body.get("results", []):
            if "error" in result:
                raise InfluxError(result["error"])
        return body

    def write_lines(self, lines: list[str], *, precision: str = "ms") -> None:
        if not lines:
            return
        try:
            response = self.http.post(
                f"{self.url}/write",
                params={"db": self.database, "precision": precision},
                data="\n".join(lines).encode(),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise InfluxError(f"unreachable: {exc.__class__.__name__}") from None
        if response.status_code not in (200, 204):
            raise InfluxError(f"write failed ({response.status_code}): {response.text[:200]}")

    def ensure_database(self, retention: str = "30d") -> None:
        """Create the database and its retention policy (both idempotent)."""
        self.query(f'CREATE DATABASE "{self.database}"')
        policy = f'RETENTION POLICY "dc_metrics" ON "{self.database}" DURATION {retention}'
        try:
            self.query(f"CREATE {policy} REPLICATION 1 DEFAULT")
        except InfluxError as exc:
            if "already exists" not in str(exc):
                raise
            self.query(f"ALTER {policy} DEFAULT")
