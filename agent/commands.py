"""The platform's commands, carried out: start, stop, fetch logs, drain.

Every command that names a rental and cannot be carried out ends in one place, `_fail`, which
answers `instance_failed` with a failure code and acknowledges the command. A command the agent
cannot even read (bad schema, too large) is still acknowledged when its id can be read, so the
platform never resends it forever, and is answered with an `error` frame.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from agent.containers import Engine
from agent.exits import ExitWatcher, finish, send_logs
from agent.failures import ENGINE_UNAVAILABLE_REASON, EngineUnavailable, StartFailed
from agent.link import Link, NotConnected
from agent.node import NodeState
from agent.protocol import Message, ProtocolError, decode_from_platform, error_frame
from agent.selftest import SelfTest
from agent.tunnels import Tunnels

log = logging.getLogger("agent.commands")

DRAINING_REASON = "draining"
REASON_LIMIT = 2000


def flatten_errors(errors: Any, prefix: str = "") -> list[str]:
    """marshmallow's nested error messages as 'field.sub: message' lines."""
    if isinstance(errors, dict):
        out = []
        for key, value in errors.items():
            out += flatten_errors(
                value, f"{prefix}{key}." if not isinstance(value, list) else f"{prefix}{key}"
            )
        return out
    if isinstance(errors, list):
        return [
            f"{prefix.rstrip('.')}: {item}"
            if isinstance(item, str)
            else "; ".join(flatten_errors(item, prefix))
            for item in errors
        ]
    return [f"{prefix.rstrip('.')}: {errors}"]


class ProgressReport:
    """`instance_progress` for one start, at most one frame per second."""

    INTERVAL = 1.0

    def __init__(self, link: Link, rental_id: str, *, enabled: bool):
        self.link = link
        self.rental_id = rental_id
        self.enabled = enabled  # the platform understands instance_progress
        self._last: float | None = None

    def pulling(self, progress: float | None) -> None:
        if self._last is None or time.monotonic() - self._last >= self.INTERVAL:
            self._send("pulling", progress)

    def starting(self, _: float | None = None) -> None:
        if self._last is not None:  # right after a pull: keep to one frame per second
            time.sleep(max(0.0, self.INTERVAL - (time.monotonic() - self._last)))
        self._send("starting", None)

    def _send(self, phase: str, progress: float | None) -> None:
        if not self.enabled:
            return
        self._last = time.monotonic()
        data: dict[str, Any] = {"rental_id": self.rental_id, "phase": phase, "progress": progress}
        if progress is not None:
            data["progress"] = round(progress, 4)
        # Progress is advisory: the outcome is sent (or the command resent) on its own.
        with contextlib.suppress(NotConnected):
            self.link.send("instance_progress", data)


class Commands:
    def __init__(
        self,
        *,
        engine: Engine,
        link: Link,
        state: NodeState,
        tunnels: Tunnels,
        exits: ExitWatcher,
    ):
        self.engine = engine
        self.link = link
        self.state = state
        self.tunnels = tunnels
        self.exits = exits
        self.self_test = SelfTest(engine)
        # A slow image pull must not hold up a stop or a logs request.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="command")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ dispatch
    def handle(self, raw: bytes | str) -> None:
        """One frame from the platform; commands that touch the engine run on the pool."""
        try:
            message = decode_from_platform(raw)
        except ProtocolError as exc:
            self._refuse(exc)
            return
        pooled: dict[str, Callable[[Message], None]] = {
            "start_instance": self._start_instance,
            "stop_instance": self._stop_instance,
            "fetch_logs": self._fetch_logs,
            "self_test": self._self_test,
        }
        if message.event in pooled:
            self._pool.submit(self._run, pooled[message.event], message)
        elif message.event == "drain_node":
            if not self.state.draining:
                log.info("draining: new rentals are refused; running ones continue")
            self.state.draining = True
            self._quietly(self.link.ack, message.id)
        elif message.event == "welcome":
            self.state.apply_welcome(message.data)
            self._quietly(self.link.ack, message.id)
        elif message.event == "error":
            log.warning(
                "the platform reported an error: %s %s",
                message.data.get("code"),
                message.data.get("message"),
            )

    def _run(self, handler: Callable[[Message], None], message: Message) -> None:
        try:
            handler(message)
        except NotConnected as exc:
            log.warning(
                "%s %s not answered (%s); the platform sends it again after a reconnect",
                message.event,
                message.data.get("rental_id"),
                exc,
            )
        except Exception as exc:
            log.exception("%s %s failed", message.event, message.data.get("rental_id"))
            if message.event == "start_instance":
                self._quietly(
                    self._fail,
                    message.id,
                    message.data["rental_id"],
                    "engine_unavailable",
                    f"The agent could not start the instance: {exc}",
                )

    # ------------------------------------------------------------ the one failure path
    def _fail(self, command_id: str | None, rental_id: str, code: str, reason: str) -> None:
        """The rental will not start here: say why, with its code, and take the command."""
        self.link.send(
            "instance_failed",
            {"rental_id": rental_id, "reason": reason[:REASON_LIMIT], "failure_code": code},
        )
        self.link.ack(command_id)

    def _refuse(self, exc: ProtocolError) -> None:
        """A frame we cannot accept: say why, fail the rental it would start, never start it."""
        log.warning("refused a frame from the platform: %s %s", exc.message, exc.errors or "")
        try:
            self.link.send_raw(
                error_frame(exc.code, exc.message, frame_id=exc.frame_id, errors=exc.errors)
            )
            if exc.event == "start_instance" and exc.rental_id is not None:
                if exc.code == "frame_too_large":
                    details = "the command is over 64 KiB; shorten env, command or onstart"
                else:
                    details = "; ".join(flatten_errors(exc.errors)) if exc.errors else exc.message
                reason = f"The rental's settings are invalid: {details}"
                self._fail(exc.frame_id, exc.rental_id, "invalid_request", reason)
            else:
                self.link.ack(exc.frame_id)
        except NotConnected as send_exc:
            log.warning("could not answer the refused frame: %s", send_exc)

    def _quietly(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except NotConnected as exc:
            log.warning("%s", exc)

    # ------------------------------------------------------------ commands
    def _start_instance(self, message: Message) -> None:
        data = dict(message.data)
        registry_auth = data.pop("registry_auth", None)  # for the pull only; never kept or logged
        rental_id = data["rental_id"]
        if data.get("tunnel"):
            self.state.tunnel = dict(data["tunnel"])
        node_id = self.state.node_id
        assert node_id is not None
        with self.state.rental_lock(rental_id):
            try:
                if self.engine.find(node_id, rental_id) is None:
                    self._check_new_start(data)
                report = ProgressReport(
                    self.link, rental_id, enabled=self.state.understands("instance_progress")
                )
                container, created = self.engine.start(
                    node_id,
                    data,
                    registry_auth=registry_auth,
                    progress=report.pulling,
                    starting=report.starting,
                )
            except StartFailed as exc:
                log.info("rental %s failed to start: %s", rental_id, exc.reason)
                self._fail(message.id, rental_id, exc.code, exc.reason)
                return
            except EngineUnavailable as exc:
                log.error("rental %s: %s", rental_id, exc)
                self._fail(message.id, rental_id, "engine_unavailable", ENGINE_UNAVAILABLE_REASON)
                return
            finally:
                registry_auth = None
            if created:
                log.info("rental %s started: container %s", rental_id, container.container_id[:12])
            self.tunnels.sync()
            # Sent under the rental's lock, so a container that exits at once is reported
            # stopped only after it was reported started.
            self.link.send(
                "instance_started", {"rental_id": rental_id, "container_id": container.container_id}
            )
        self.exits.poke()
        self.link.ack(message.id)

    def _check_new_start(self, data: dict[str, Any]) -> None:
        """StartFailed when no new container may be started for this command."""
        expires_at = data.get("expires_at")
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise StartFailed(
                "start_timeout",
                "The start request expired before it reached the node; nothing was started.",
            )
        if self.state.draining:
            log.info("start of rental %s refused: draining", data["rental_id"])
            raise StartFailed("insufficient_resources", DRAINING_REASON)

    def _stop_instance(self, message: Message) -> None:
        data = message.data
        rental_id = data["rental_id"]
        node_id = self.state.node_id
        assert node_id is not None
        with self.state.rental_lock(rental_id):
            try:
                stopped = self.engine.stop(node_id, rental_id, grace=data["grace_seconds"])
                for container in stopped:
                    log.info("rental %s stopped (exit code %s)", rental_id, container.exit_code)
                    finish(
                        self.engine,
                        self.link,
                        self.tunnels,
                        container,
                        asked=True,
                        final_logs=self.state.understands("logs"),
                    )
            except EngineUnavailable as exc:
                # Not acknowledged: the platform sends the stop again after a reconnect.
                log.error("rental %s cannot be stopped now: %s", rental_id, exc)
                return
        if not stopped:
            self.link.send(
                "instance_stopped",
                {
                    "rental_id": rental_id,
                    "container_id": data.get("container_id"),
                    "exit_code": None,
                },
            )
        self.link.ack(message.id)
        self.state.forget(rental_id)

    def _fetch_logs(self, message: Message) -> None:
        data = message.data
        node_id = self.state.node_id
        assert node_id is not None
        try:
            found = self.engine.logs(
                node_id, data["rental_id"], tail=data["tail"], max_bytes=data["max_bytes"]
            )
        except EngineUnavailable as exc:
            log.error("logs of rental %s not read: %s", data["rental_id"], exc)
            self.link.send_raw(
                error_frame("engine_unavailable", ENGINE_UNAVAILABLE_REASON, frame_id=message.id)
            )
        else:
            send_logs(self.link, data["request_id"], data["rental_id"], found)
        self.link.ack(message.id)

    def _self_test(self, message: Message) -> None:
        """Run the benchmark container; the command is taken once its result is sent, so a
        result lost to a disconnect is measured again after the reconnect."""
        node_id = self.state.node_id
        assert node_id is not None
        log.info("self-test %s: running the benchmark container", message.data["run_id"])
        result = self.self_test.run(node_id, message.data, self.state.tunnel)
        log.info(
            "self-test %s done: %s",
            message.data["run_id"],
            "; ".join(result["failures"]) or "no failures",
        )
        self.link.send("self_test_result", result)
        self.link.ack(message.id)
