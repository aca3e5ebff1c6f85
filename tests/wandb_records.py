"""Read an offline W&B run back from its ``run-<id>.wandb`` file, without network.

The file is W&B's transaction log: a 7-byte header (``:W&B``, a magic number, a version), then
LevelDB-log-format records (32 KiB blocks; each record a 7-byte header of CRC, length and type,
split across blocks as FULL or FIRST/MIDDLE/LAST pieces) whose payloads are W&B's own protobuf
``Record`` messages (``wandb.proto.wandb_internal_pb2``). wandb 0.31 reads these files only in its
Go core, so the framing is read here and the messages with wandb's own classes.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Every ``Record`` of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pieces = 7, b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # a block's tail too short for a header is padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            pieces = payload
        elif kind == FIRST:
            pieces = payload
            continue
        elif kind == MIDDLE:
            pieces += payload
            continue
        elif kind == LAST:
            pieces += payload
        record = pb.Record()
        record.ParseFromString(pieces)
        yield record


@dataclass
class Run:
    """What a test wants of a run: its identity, config, history rows, summary, metric definitions."""

    id: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # metric glob/name -> its step metric


def _value(text: str):
    return json.loads(text)


def read_run(path: Path, wait_s: float = 60.0) -> Run:
    """The run in ``path``, once its ``exit`` record is there: wandb's core process writes the file
    on its own schedule, and ``run.finish()`` may return before it has (seen in wandb 0.31)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = list(records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    run = Run()
    for record in found:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run  # later run records (updates) may leave fields empty: keep what was set
            run.id = r.run_id or run.id
            run.group, run.job_type = r.run_group or run.group, r.job_type or run.job_type
            run.name, run.tags = r.display_name or run.name, list(r.tags) or run.tags
            for item in r.config.update:
                run.config[item.key] = _value(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[item.key] = _value(item.value_json)
        elif kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = _value(item.value_json)
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                run.summary[key] = _value(item.value_json)
        elif kind == "metric":
            m = record.metric
            run.metrics[m.name or m.glob_name] = m.step_metric
    return run


def offline_runs(folder: Path) -> list[Path]:
    """The ``run-*.wandb`` files under ``folder`` (one per W&B run started there), oldest first."""
    return sorted(Path(folder).rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
