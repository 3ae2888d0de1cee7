"""A rental's output as `logs` frames: read from the engine, cut to size, chunked under the limit."""

from __future__ import annotations

import json
from typing import Any

from agent.protocol import MAX_FRAME_BYTES, MAX_LOG_BYTES

FINAL_REQUEST = "final"  # the request_id of the logs sent when a rental's container goes away
FINAL_TAIL = 20000  # lines read for the final logs before they are cut to MAX_LOG_BYTES
# Room left in a frame for the envelope and the other fields.
_CHUNK_BYTES = MAX_FRAME_BYTES - 2048


def read_logs(container: Any, *, tail: int, max_bytes: int) -> tuple[list[str], bool]:
    """(the last lines, truncated): at most `tail` lines and `max_bytes` bytes of output."""
    raw: bytes = container.logs(stdout=True, stderr=True, tail=tail, timestamps=False)
    truncated = len(raw) > max_bytes
    if truncated:
        raw = raw[-max_bytes:]
        cut = raw.find(b"\n")
        if 0 <= cut < len(raw) - 1:
            raw = raw[cut + 1 :]  # start at a whole line
    text = raw.decode("utf-8", errors="replace")
    return text.splitlines(), truncated


def _encoded(text: str) -> int:
    return len(json.dumps(text))  # escapes count: a NUL takes six bytes on the wire


def _pieces(line: str) -> list[str]:
    """A line that alone would not fit a frame, split into pieces that do."""
    if _encoded(line) <= _CHUNK_BYTES:
        return [line]
    pieces, start = [], 0
    step = _CHUNK_BYTES // 12  # twelve bytes per character at worst (a \\uXXXX surrogate pair)
    while start < len(line):
        pieces.append(line[start : start + step])
        start += step
    return pieces


def log_frames(
    request_id: str, rental_id: str, lines: list[str], truncated: bool
) -> list[dict[str, Any]]:
    """The data of each `logs` frame, in order; every frame encodes well under MAX_FRAME_BYTES."""
    chunks: list[list[str]] = [[]]
    size = 0
    for line in lines:
        for piece in _pieces(line):
            cost = _encoded(piece) + 1
            if chunks[-1] and size + cost > _CHUNK_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append(piece)
            size += cost
    return [
        {
            "request_id": request_id,
            "rental_id": rental_id,
            "lines": chunk,
            "truncated": truncated,
            "seq": seq,
            "last": seq == len(chunks) - 1,
        }
        for seq, chunk in enumerate(chunks)
    ]


__all__ = ["FINAL_REQUEST", "FINAL_TAIL", "MAX_LOG_BYTES", "log_frames", "read_logs"]
