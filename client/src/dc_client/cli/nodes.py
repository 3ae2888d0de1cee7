"""Host commands: dc nodes register|ls|show|drain|undrain|rotate-key|metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from dc_client.cli import render
from dc_client.cli.context import json_option, state
from dc_client.cli.rentals import _collect
from dc_client.types import Node

SPEC_FIELDS = ("gpu_model", "gpu_count", "gpu_vram_gb", "tflops", "cpu_cores", "ram_gb", "disk_gb")
DETECT_TIMEOUT = 60


def register(cli: click.Group) -> None:
    cli.add_command(nodes)


@click.group()
def nodes() -> None:
    """My host nodes."""


@nodes.command("register")
@click.option(
    "--file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON file in the API's shape: {name?, specs, pricing, location}.",
)
@click.option("--detect", is_flag=True, help="Fill the specs from `dc-agent detect --json`.")
@click.option("--name")
@click.option("--gpu-model")
@click.option("--gpu-count", type=click.IntRange(min=0))
@click.option("--vram", "gpu_vram_gb", type=click.FloatRange(min=0), help="GB per GPU.")
@click.option("--tflops", type=click.FloatRange(min=0))
@click.option("--cpu-cores", type=click.IntRange(min=1))
@click.option("--ram", "ram_gb", type=click.FloatRange(min=0), help="GB.")
@click.option("--disk", "disk_gb", type=click.FloatRange(min=0), help="GB.")
@click.option("--cuda", "cuda_version")
@click.option("--rate", "hourly_rate", help="Price of the whole node per hour, e.g. 1.20.")
@click.option("--auto-price/--fixed-price", "auto_match_market", default=None)
@click.option("--min-rate", "min_hourly_rate")
@click.option("--country", help="ISO 3166 alpha-2, e.g. DE.")
@click.option("--city")
@click.option("--lat", type=float)
@click.option("--lng", type=float)
@json_option
def nodes_register(from_file: Path | None, detect: bool, name: str | None, **flags: Any) -> None:
    """Register a node; prints its agent key (dcn_..., shown this once).

    Sources, later ones winning: --file, then --detect, then the flags."""
    body = build_registration(from_file, detect, name, flags)
    created = (
        state()
        .client()
        .create_node(body["specs"], body["pricing"], body["location"], name=body.get("name"))
    )
    if state().json:
        render.emit_json(created)
        return
    _print_node(created["node"])
    render.out.print(f"\nagent key  {created['api_key']}", soft_wrap=True)
    render.err.print(
        "[yellow]Copy the agent key now (it is not shown again), then start the agent:\n"
        f"  dc-agent --platform-url {state().client().base_url} --api-key {created['api_key']}"
    )


def build_registration(
    from_file: Path | None, detect: bool, name: str | None, flags: dict[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"specs": {}, "pricing": {}, "location": {}}
    if from_file is not None:
        try:
            loaded = json.loads(from_file.read_text())
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--file") from exc
        if not isinstance(loaded, dict):
            raise click.BadParameter("expected a JSON object", param_hint="--file")
        for part in ("specs", "pricing", "location"):
            body[part].update(loaded.get(part) or {})
        if loaded.get("name"):
            body["name"] = loaded["name"]
    if detect:
        body["specs"].update(detected_specs())
    groups = {
        "specs": (*SPEC_FIELDS, "cuda_version"),
        "pricing": ("hourly_rate", "auto_match_market", "min_hourly_rate"),
        "location": ("country", "city", "lat", "lng"),
    }
    for part, names in groups.items():
        for key in names:
            if flags.get(key) is not None:
                body[part][key] = flags[key]
    if name:
        body["name"] = name
    missing = [f"--{k.replace('_', '-')}" for k in SPEC_FIELDS if k not in body["specs"]]
    if "hourly_rate" not in body["pricing"]:
        missing.append("--rate")
    if "country" not in body["location"]:
        missing.append("--country")
    if missing:
        hint = "" if detect else " (or --detect, or --file)"
        raise click.UsageError(f"missing {', '.join(missing)}{hint}")
    body["pricing"].setdefault("auto_match_market", False)
    return body


def detected_specs() -> dict[str, Any]:
    """The specs the agent detects on this machine (`dc-agent detect --json`)."""
    agent = shutil.which("dc-agent")
    if agent is None:
        raise click.UsageError(
            "--detect needs the host agent (dc-agent) on this machine; install it, or give the "
            "specs with flags or --file"
        )
    try:
        done = subprocess.run(
            [agent, "detect", "--json"],
            capture_output=True,
            text=True,
            timeout=DETECT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise click.ClickException(f"dc-agent detect did not answer in {DETECT_TIMEOUT}s") from exc
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise click.ClickException(
            f"`dc-agent detect --json` failed ({done.returncode}): {why[0]} "
            "(an agent without the detect subcommand needs upgrading)"
        )
    try:
        found = json.loads(done.stdout)
    except ValueError as exc:
        raise click.ClickException("`dc-agent detect --json` did not print JSON") from exc
    specs = found.get("specs", found) if isinstance(found, dict) else {}
    picked = {key: specs[key] for key in SPEC_FIELDS if specs.get(key) is not None}
    if not picked.get("gpu_model"):
        picked["gpu_model"] = "none"  # a CPU-only node
    if specs.get("cuda_version"):
        picked["cuda_version"] = specs["cuda_version"]
    picked.setdefault("tflops", 0)  # not measured by detection; --tflops or a self-test sets it
    return picked


NODE_COLUMNS: list[render.Column] = [
    ("ID", lambda n: n.get("id")),
    ("NAME", lambda n: n.get("name")),
    ("STATUS", lambda n: _node_status(n)),
    (
        "GPU",
        lambda n: (
            f"{(n.get('specs') or {}).get('gpu_count')}× {(n.get('specs') or {}).get('gpu_model')}"
        ),
    ),
    ("$/HR", lambda n: render.money((n.get("pricing") or {}).get("hourly_rate"))),
    ("VERIFIED", lambda n: n.get("verified")),
    ("LAST SEEN", lambda n: render.when(n.get("last_seen_at"))),
]


def _node_status(node: Mapping[str, Any]) -> str:
    status = str(node.get("status"))
    return f"{status} (draining)" if node.get("draining") else status


@nodes.command("ls")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
def nodes_ls(limit: int) -> None:
    """List my nodes."""
    items, cursor = _collect(state().client().list_nodes, limit)
    if state().json:
        render.emit_json({"items": items, "next_cursor": cursor})
        return
    render.table(items, NODE_COLUMNS, empty="No nodes; register one with `dc nodes register`.")


@nodes.command("show")
@click.argument("node_id", metavar="NODE")
@json_option
def nodes_show(node_id: str) -> None:
    """Show one node."""
    _print_node(state().client().get_node(node_id))


@nodes.command("drain")
@click.argument("node_id", metavar="NODE")
@json_option
def nodes_drain(node_id: str) -> None:
    """Take no new rentals (running ones go on)."""
    _print_node(state().client().drain_node(node_id))


@nodes.command("undrain")
@click.argument("node_id", metavar="NODE")
@json_option
def nodes_undrain(node_id: str) -> None:
    """Offer the node again."""
    _print_node(state().client().undrain_node(node_id))


@nodes.command("rotate-key")
@click.argument("node_id", metavar="NODE")
@json_option
def nodes_rotate_key(node_id: str) -> None:
    """Give the node a new agent key; the old one stops working at once."""
    body = state().client().rotate_node_key(node_id)
    if state().json:
        render.emit_json(body)
        return
    render.out.print(body["api_key"], soft_wrap=True)
    render.err.print("[yellow]Restart the agent with this key; it is not shown again.")


@nodes.command("metrics")
@click.argument("node_id", metavar="NODE")
@click.option("--since", default="1h", show_default=True)
@click.option("--every", default="1m", show_default=True)
@json_option
def nodes_metrics(node_id: str, since: str, every: str) -> None:
    """Heartbeat metrics of a node."""
    body = state().client().node_metrics(node_id, since=since, every=every)
    if state().json:
        render.emit_json(body)
        return
    render.table(
        body.get("node") or [],
        [
            ("TIME", lambda p: render.when(p.get("time"))),
            ("CPU %", lambda p: p.get("cpu_utilization")),
            ("CPU °C", lambda p: p.get("cpu_temp")),
            ("RAM MB", lambda p: p.get("ram_usage_mb")),
            ("DISK GB", lambda p: p.get("disk_usage_gb")),
        ],
        empty=f"No metrics for the last {since}.",
    )
    for gpu in body.get("gpus") or []:
        render.out.print(f"\nGPU {gpu.get('index')}")
        render.table(
            gpu.get("points") or [],
            [
                ("TIME", lambda p: render.when(p.get("time"))),
                ("UTIL %", lambda p: p.get("gpu_utilization")),
                ("°C", lambda p: p.get("gpu_temp")),
                ("MEM MB", lambda p: p.get("gpu_memory_used_mb")),
                ("W", lambda p: p.get("gpu_power_w")),
            ],
            empty="No points.",
        )


def _print_node(node: Node) -> None:
    if state().json:
        render.emit_json(node)
        return
    specs = node.get("specs") or {}
    pricing = node.get("pricing") or {}
    render.fields(
        [
            ("id", node.get("id")),
            ("name", node.get("name")),
            ("status", _node_status(node)),
            ("verified", node.get("verified")),
            (
                "gpu",
                f"{specs.get('gpu_count')}× {specs.get('gpu_model')} ({specs.get('gpu_vram_gb')} GB)",
            ),
            (
                "cpu / ram / disk",
                f"{specs.get('cpu_cores')} cores / {specs.get('ram_gb')} GB / {specs.get('disk_gb')} GB",
            ),
            ("price", f"{render.money(pricing.get('hourly_rate'))}/hr"),
            ("location", render.location(node.get("location"))),
            ("last seen", render.when(node.get("last_seen_at"))),
        ]
    )
