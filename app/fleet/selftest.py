"""Node self-tests: ask the agent to run the benchmark container, check what comes back, and set
`verified` from it. Functions never commit.

A run is asked for when a node connects without a passed last run, when its detected hardware
differs from the last run's, and when its owner asks. The agent's answer is accepted only with a
proof that the benchmark ran for this run's nonce (agent/bench.py): the platform recomputes the
disk file's digest and sampled entries of the matrix product, and checks the container's identity
and limits (docs/hosts.md says what that does and does not prove).
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from agent.bench import disk_digest, expected_samples, samples_match
from agent.protocol import ram_limit_bytes
from app.config import Settings
from app.db import utcnow
from app.enums import NodeStatus
from app.fleet import commands
from app.fleet.events import node_changed
from app.fleet.models import HostNode, NodeSelfTest
from app.pagination import newest_first_page

log = logging.getLogger(__name__)

QUEUED, RUNNING, PASSED, FAILED = "queued", "running", "passed", "failed"
OPEN = (QUEUED, RUNNING)
MATRIX = 512
# Measured sizes must reach this share of the declared ones (an OS reports a little less).
MEASURED_SHARE = 0.9
# Detected hardware that, when it changes, calls for a new self-test.
HARDWARE_KEYS = ("gpu_count", "gpu_model", "cpu_cores")
SIZE_KEYS = ("ram_gb", "disk_gb", "gpu_vram_gb")
_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")
FAILURE_LIMIT = 500


# ---------------------------------------------------------------- asking for a run
def _limits(specs: Mapping[str, Any]) -> dict[str, Any]:
    """The limits a whole-node rental gets: every declared core and all the declared RAM."""
    return {
        "cpu_cores": float(specs["cpu_cores"]),
        "ram_limit": f"{max(1, int(float(specs['ram_gb']) * 1024))}m",
    }


def _image(specs: Mapping[str, Any], settings: Settings) -> str:
    """The benchmark image: the GPU one (with a CUDA library) for a node that declares GPUs."""
    if int(specs.get("gpu_count") or 0) > 0 and settings.self_test_gpu_image:
        return settings.self_test_gpu_image
    return settings.self_test_image


def open_run(session: Session, node_id: uuid.UUID) -> NodeSelfTest | None:
    return session.execute(
        select(NodeSelfTest)
        .where(NodeSelfTest.node_id == node_id, NodeSelfTest.status.in_(OPEN))
        .order_by(NodeSelfTest.created_at.desc())
        .limit(1)
    ).scalar_one_or_none()


def last_run(session: Session, node_id: uuid.UUID) -> NodeSelfTest | None:
    return session.execute(
        select(NodeSelfTest)
        .where(NodeSelfTest.node_id == node_id)
        .order_by(NodeSelfTest.created_at.desc(), NodeSelfTest.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def request_run(
    session: Session, *, node: HostNode, trigger: str, settings: Settings
) -> NodeSelfTest:
    """Queue a self-test for `node` (locked by the caller), or return the one already open."""
    existing = open_run(session, node.id)
    if existing is not None:
        return existing
    connected = node.status != NodeStatus.OFFLINE
    work = {"disk_mb": settings.self_test_disk_mb, "ram_mb": settings.self_test_ram_mb}
    work["matrix"] = MATRIX
    run = NodeSelfTest(
        node_id=node.id,
        status=RUNNING if connected else QUEUED,
        trigger=trigger,
        nonce=secrets.token_hex(32),
        work=work,
        expected=dict(node.specs),
        detected=dict(node.detected_specs) if node.detected_specs else None,
        started_at=utcnow() if connected else None,
    )
    session.add(run)
    session.flush()
    commands.send_after_commit(
        session,
        node.id,
        "self_test",
        {
            "run_id": str(run.id),
            "image": _image(node.specs, settings),
            "nonce": run.nonce,
            "expected": dict(node.specs),
            "limits": _limits(node.specs),
            "work": work,
        },
    )
    log.info(
        "self-test requested",
        extra={"node_id": str(node.id), "run_id": str(run.id), "trigger": trigger},
    )
    return run


def _hardware_changed(before: Mapping[str, Any] | None, now: Mapping[str, Any]) -> bool:
    if before is None:
        return False
    if any(before.get(key) != now.get(key) for key in HARDWARE_KEYS):
        return True
    for key in SIZE_KEYS:  # a few percent of drift (a mounted volume, a kernel) is not a change
        old, new = float(before.get(key) or 0), float(now.get(key) or 0)
        if abs(old - new) > 0.05 * max(old, new, 1.0):
            return True
    old_gpus = sorted(g.get("uuid", "") for g in before.get("gpus") or [])
    return old_gpus != sorted(g.get("uuid", "") for g in now.get("gpus") or [])


def after_hello(
    session: Session, *, node: HostNode, specs: Mapping[str, Any], settings: Settings
) -> NodeSelfTest | None:
    """On connect: start queued runs' clocks, and ask for a run when the last one did not pass
    or the hardware changed since it ran. `node` is locked by the caller."""
    now = utcnow()
    session.execute(
        update(NodeSelfTest)
        .where(NodeSelfTest.node_id == node.id, NodeSelfTest.status == QUEUED)
        .values(status=RUNNING, started_at=now)
    )
    last = last_run(session, node.id)
    if last is None:
        return request_run(session, node=node, trigger="first_connect", settings=settings)
    if last.status in OPEN:
        return None
    if _hardware_changed(last.detected, specs):
        return request_run(session, node=node, trigger="hardware_change", settings=settings)
    if last.status != PASSED:
        return request_run(session, node=node, trigger="reconnect", settings=settings)
    return None


# ---------------------------------------------------------------- checking a result
def _proof_failures(
    run: NodeSelfTest, measured: Mapping[str, Any], proof: Mapping[str, Any]
) -> list[str]:
    """Why the proof does not show that the benchmark ran for this run (empty when it does)."""
    needed = (
        "nonce",
        "hostname",
        "disk_mb",
        "disk_sha256",
        "matrix",
        "cpu_samples",
        "container_id",
    )
    missing = [key for key in needed if key not in proof]
    if missing:
        return [
            "proof_missing: the result carries no benchmark proof "
            f"({', '.join(missing)}); figures are not accepted without it"
        ]
    nonce = bytes.fromhex(run.nonce)
    problems = []
    if proof["nonce"] != run.nonce:
        problems.append("proof_invalid: the benchmark ran for another nonce")
    if proof["disk_mb"] != run.work["disk_mb"] or proof["disk_sha256"] != disk_digest(
        nonce, int(run.work["disk_mb"])
    ):
        problems.append("proof_invalid: the disk file's digest is not the nonce's")
    expected = expected_samples(nonce, int(run.work["matrix"]))
    if proof["matrix"] != run.work["matrix"] or not samples_match(proof["cpu_samples"], expected):
        problems.append("proof_invalid: the matrix product's samples are wrong")
    gpus = measured.get("gpus") or []
    if gpus:  # each measured GPU must have multiplied the nonce's matrices too
        gpu_samples = proof.get("gpu_samples")
        if (
            not isinstance(gpu_samples, list)
            or len(gpu_samples) != len(gpus)
            or not all(samples_match(got, expected) for got in gpu_samples)
        ):
            problems.append("proof_invalid: the GPUs' matrix product samples are missing or wrong")
    container_id = proof["container_id"]
    if not (
        isinstance(container_id, str)
        and _CONTAINER_ID.match(container_id)
        and isinstance(proof["hostname"], str)
        and len(proof["hostname"]) >= 12
        and container_id.startswith(proof["hostname"])
    ):
        problems.append("proof_invalid: the container's hostname is not its engine id")
    limit = _limits(run.expected)
    if measured.get("container_ok"):
        wanted = ram_limit_bytes(limit["ram_limit"])
        seen = proof.get("memory_max")
        if proof.get("engine_memory") != wanted or seen not in (None, wanted):
            problems.append("proof_invalid: the container did not run with the requested limits")
    return problems


def _figure_failures(expected: Mapping[str, Any], measured: Mapping[str, Any]) -> list[str]:
    """Where the measured figures fall short of the declared ones."""
    problems = []

    def short(name: str, declared: float, got: Any, share: float = MEASURED_SHARE) -> None:
        if got is None:
            problems.append(f"{name}_unmeasured: no {name} figure")
        elif float(got) < declared * share:
            problems.append(
                f"{name}_below_declared: measured {float(got):g}, declared {declared:g}"
            )

    if not measured.get("container_ok"):
        problems.append("container_limits: the engine did not run a container with the limits")
    short("cpu_cores", float(expected.get("cpu_cores") or 0), measured.get("cpu_cores"), 1.0)
    short("ram_gb", float(expected.get("ram_gb") or 0), measured.get("ram_gb"))
    short("disk_gb", float(expected.get("disk_gb") or 0), measured.get("disk_gb"))
    if measured.get("disk_write_mbps") is None:
        problems.append("disk_write_mbps_unmeasured: no disk write figure")
    gpu_count = int(expected.get("gpu_count") or 0)
    if gpu_count > 0:
        gpus = measured.get("gpus") or []
        if len(gpus) < gpu_count:
            problems.append(f"gpu_count_below_declared: measured {len(gpus)}, declared {gpu_count}")
        if float(expected.get("tflops") or 0) > 0:
            short("tflops", float(expected["tflops"]), measured.get("tflops"))
        short("gpu_vram_gb", float(expected.get("gpu_vram_gb") or 0), measured.get("gpu_vram_gb"))
    return problems


def record_result(
    session: Session,
    *,
    node_id: str,
    run_id: str,
    nonce: str,
    measured: dict[str, Any],
    failures: list[str],
    proof: dict[str, Any],
) -> NodeSelfTest | None:
    """Check the agent's answer and settle the run and the node's `verified`.

    An answer for another node, a run that is not open, or a wrong nonce changes nothing (a
    redelivered or replayed result, or one the agent made up).
    """
    run = session.execute(
        select(NodeSelfTest).where(NodeSelfTest.id == uuid.UUID(run_id)).with_for_update()
    ).scalar_one_or_none()
    if run is None or str(run.node_id) != str(node_id) or run.status not in OPEN:
        return None
    if not secrets.compare_digest(run.nonce, nonce):
        log.warning("self-test result with a wrong nonce", extra={"run_id": run_id})
        return None
    node = session.execute(
        select(HostNode).where(HostNode.id == run.node_id).with_for_update()
    ).scalar_one()
    problems = _proof_failures(run, measured, proof)
    proven = not problems
    if proven:
        problems += _figure_failures(run.expected, measured)
    problems += [str(f)[:FAILURE_LIMIT] for f in failures]
    finish(
        session,
        run=run,
        node=node,
        measured=measured,
        proof=proof,
        failures=problems,
        proven=proven,
    )
    return run


def finish(
    session: Session,
    *,
    run: NodeSelfTest,
    node: HostNode,
    measured: dict[str, Any] | None,
    proof: dict[str, Any] | None,
    failures: list[str],
    proven: bool,
) -> None:
    now = utcnow()
    run.status = PASSED if not failures else FAILED
    run.measured = measured
    run.proof = proof
    run.failures = failures
    run.finished_at = now
    if run.started_at is None:
        run.started_at = now
    node.verified = run.status == PASSED
    node.self_test_failed = run.status == FAILED
    # Offers show figures only from a run whose proof held; a run without one shows none.
    node.measured_specs = _offer_figures(measured, now) if proven and measured else None
    node_changed(session, node.id)
    session.flush()
    log.info(
        "self-test finished",
        extra={"node_id": str(node.id), "run_id": str(run.id), "status": run.status},
    )


def _offer_figures(measured: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    keys = (
        "cpu_cores",
        "cpu_gflops",
        "ram_gb",
        "disk_gb",
        "disk_write_mbps",
        "tflops",
        "gpu_vram_gb",
        "h2d_gbps",
    )
    return {**{key: measured.get(key) for key in keys}, "tested_at": at.isoformat()}


def expire_runs(session: Session, *, now: datetime, timeout_seconds: int) -> list[str]:
    """Fail the open runs older than the timeout (the agent never answered)."""
    cutoff = now - timedelta(seconds=timeout_seconds)
    runs = list(
        session.execute(
            select(NodeSelfTest)
            .where(NodeSelfTest.status.in_(OPEN), NodeSelfTest.created_at < cutoff)
            .order_by(NodeSelfTest.created_at)
            .limit(500)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    for run in runs:
        node = session.execute(
            select(HostNode).where(HostNode.id == run.node_id).with_for_update()
        ).scalar_one()
        failure = f"timeout: no result within {timeout_seconds} s"
        finish(
            session, run=run, node=node, measured=None, proof=None, failures=[failure], proven=False
        )
    return [str(run.id) for run in runs]


def list_runs(
    session: Session, *, node_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[NodeSelfTest], str | None]:
    query = select(NodeSelfTest).where(NodeSelfTest.node_id == node_id)
    return newest_first_page(session, query, NodeSelfTest, limit=limit, cursor=cursor)
