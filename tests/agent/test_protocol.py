"""The protocol's additions: every new field optional, bounded, and decoded by both ends alike."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from agent.images import PullProgress, classify_pull_error, registry_is_private
from agent.logs import log_frames
from agent.protocol import (
    MAX_FRAME_BYTES,
    ProtocolError,
    decode_from_agent,
    decode_from_platform,
    encode,
)
from agent.values import registry_host, split_image

RENTAL = str(uuid.uuid4())
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1c2VyLWtleS1mb3ItdGVzdHMtb25seS0wMDAwMDA= me@laptop"


def _frame(event: str, data: dict, id: str | None = "cmd-1") -> str:
    return json.dumps({"event": event, "data": data, "id": id, "v": 1})


def _start(**extra) -> dict:
    return {"rental_id": RENTAL, "image": "localhost/busybox:latest", **extra}


def test_todays_start_instance_still_decodes_and_new_fields_default_to_nothing():
    message = decode_from_platform(_frame("start_instance", _start(resource_limits={})))
    data = message.data
    assert data["entrypoint"] is None and data["onstart"] is None and data["ssh_keys"] == []
    assert data["registry_auth"] is None and data["expires_at"] is None
    assert (
        data["resource_limits"]["gpu_uuids"] == [] and data["resource_limits"]["pids_limit"] is None
    )


def test_start_instance_carries_the_launch_options_and_an_aware_deadline():
    data = decode_from_platform(
        _frame(
            "start_instance",
            _start(
                entrypoint=["/bin/sh", "-c"],
                onstart="echo hi",
                ssh_keys=[KEY],
                registry_auth={"username": "u", "password": "p"},
                expires_at="2026-11-27T10:00:00Z",
                resource_limits={"gpu_uuids": ["GPU-1234"], "cpu_cores": 1.5, "pids_limit": 512},
            ),
        )
    ).data
    assert data["entrypoint"] == ["/bin/sh", "-c"] and data["ssh_keys"] == [KEY]
    assert data["expires_at"] == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert data["resource_limits"]["cpu_cores"] == 1.5
    assert data["registry_auth"] == {"username": "u", "password": "p"}


@pytest.mark.parametrize(
    ("why", "extra"),
    [
        ("onstart over 4 KiB", {"onstart": "é" * 2049}),
        ("a key that is not OpenSSH", {"ssh_keys": ["-----BEGIN RSA PRIVATE KEY-----"]}),
        ("a key line with a newline", {"ssh_keys": [KEY + "\nssh-rsa AAAA x"]}),
        ("more than 32 keys", {"ssh_keys": [KEY] * 33}),
        ("credentials without a password", {"registry_auth": {"username": "u"}}),
        ("a deadline that is not a time", {"expires_at": "tomorrow"}),
        ("an empty entrypoint", {"entrypoint": []}),
        ("a pids limit of 1", {"resource_limits": {"pids_limit": 1}}),
    ],
)
def test_bad_launch_options_are_refused_with_the_frames_id_and_rental(why, extra):
    with pytest.raises(ProtocolError) as caught:
        decode_from_platform(_frame("start_instance", _start(**extra)))
    assert caught.value.code == "invalid_data", why
    assert caught.value.frame_id == "cmd-1" and caught.value.rental_id == RENTAL
    assert caught.value.event == "start_instance"


def test_an_oversized_command_is_refused_but_its_id_and_rental_can_still_be_read():
    raw = _frame("start_instance", _start(env_vars={"BIG": "x" * (MAX_FRAME_BYTES + 10)}))
    with pytest.raises(ProtocolError) as caught:
        decode_from_platform(raw)
    assert caught.value.code == "frame_too_large"
    assert (caught.value.frame_id, caught.value.rental_id) == ("cmd-1", RENTAL)
    huge = _frame("start_instance", _start(env_vars={"BIG": "x" * (2 * 1024 * 1024)}))
    with pytest.raises(ProtocolError) as beyond:
        decode_from_platform(huge)
    assert beyond.value.code == "frame_too_large" and beyond.value.frame_id is None


def test_instance_failed_takes_an_optional_failure_code_from_the_contracts_list():
    old = decode_from_agent(encode("instance_failed", {"rental_id": RENTAL, "reason": "x"}))
    assert old.data["failure_code"] is None
    new = {"rental_id": RENTAL, "reason": "gone", "failure_code": "image_not_found"}
    assert (
        decode_from_agent(encode("instance_failed", new)).data["failure_code"] == "image_not_found"
    )
    with pytest.raises(ProtocolError):
        encode("instance_failed", {**new, "failure_code": "cosmic_rays"})


def test_progress_and_logs_events_and_the_fetch_logs_command_have_schemas():
    progress = {"rental_id": RENTAL, "phase": "pulling", "progress": 0.5}
    assert decode_from_agent(encode("instance_progress", progress)).data == progress
    with pytest.raises(ProtocolError):
        encode("instance_progress", {**progress, "progress": 1.5})
    with pytest.raises(ProtocolError):
        encode("instance_progress", {**progress, "phase": "dreaming"})
    fetch = decode_from_platform(_frame("fetch_logs", {"request_id": "r1", "rental_id": RENTAL}))
    assert fetch.data["tail"] == 200 and fetch.data["max_bytes"] == 65536
    for bad in ({"tail": 0}, {"tail": 5001}, {"max_bytes": 65537}):
        with pytest.raises(ProtocolError):
            decode_from_platform(
                _frame("fetch_logs", {"request_id": "r1", "rental_id": RENTAL, **bad})
            )


def test_log_frames_stay_under_the_frame_limit_whatever_the_output_holds():
    lines = ["plain line"] * 3000 + ["\x00\x01" * 40000, "😀" * 30000, "é" * 70000, ""]
    frames = log_frames("r1", RENTAL, lines, truncated=True)
    sizes = [len(encode("logs", frame).encode()) for frame in frames]
    assert len(frames) > 3 and max(sizes) < MAX_FRAME_BYTES
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert [f["last"] for f in frames] == [False] * (len(frames) - 1) + [True]
    assert "".join(line for f in frames for line in f["lines"]).startswith("plain line" * 3000)
    empty = log_frames("r2", RENTAL, [], truncated=False)
    assert empty == [
        {
            "request_id": "r2",
            "rental_id": RENTAL,
            "lines": [],
            "truncated": False,
            "seq": 0,
            "last": True,
        }
    ]


def test_pull_errors_map_to_the_contracts_failure_codes():
    cases = {
        "manifest unknown: manifest unknown": "image_not_found",
        "reading manifest 1 in docker.io/library/nosuch: requested access to the resource is denied": "registry_auth_failed",
        "unauthorized: authentication required": "registry_auth_failed",
        'pinging container registry registry-1.docker.io: Get "https://x/v2/": dial tcp: no such host': "image_pull_failed",
        "pull access denied for nosuch, repository does not exist or may require 'docker login'": "image_not_found",
    }
    for message, code in cases.items():
        assert classify_pull_error(message, had_auth=False)[0] == code, message
    hub = "pull access denied for x, repository does not exist or may require 'docker login'"
    assert classify_pull_error(hub, had_auth=True)[0] == "registry_auth_failed"


def test_registries_on_private_loopback_or_link_local_addresses_are_recognised():
    for image in (
        "10.0.0.5:5000/x:1",
        "192.168.1.2/team/x",
        "169.254.169.254/x",
        "127.0.0.1:5000/x",
        "localhost:5000/x",
        "[::1]:5000/x",
        "100.64.0.1/x",
    ):
        assert registry_is_private(image), image
    for image in ("busybox", "library/ubuntu:22.04", "docker.io/library/ubuntu", "8.8.8.8/x"):
        assert not registry_is_private(image), image
    assert registry_host("ghcr.io/org/x:1") == "ghcr.io" and registry_host("org/x") == "docker.io"
    assert split_image("ghcr.io:443/org/x:1") == ("ghcr.io:443/org/x", "1")
    assert split_image("org/x") == ("org/x", "latest")


def test_pull_progress_is_bytes_over_announced_layers_and_never_goes_back():
    progress = PullProgress()
    assert progress.update({"status": "Pulling from library/x", "id": "latest"}) is None
    progress.update(
        {"status": "Downloading", "id": "a", "progressDetail": {"current": 50, "total": 100}}
    )
    assert progress.value == 0.5
    progress.update(
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 0, "total": 300}}
    )
    assert progress.value == 0.5  # a new layer does not move it backwards
    progress.update({"status": "Download complete", "id": "a"})
    progress.update(
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 300, "total": 300}}
    )
    assert progress.value == 1.0
