"""The training checkpoint files of coz.train_sr and coz.train_grpo, and which one a run resumes from.

A checkpoint is the dict Lightning builds (the module's trained tensors, the optimisers, LR
schedulers, loop progress, callbacks, and each tool's own record), stored as one ``.safetensors``
file, written atomically: every tensor under its path in the dict
(``state_dict/transformer.….lora_up.weight``, ``optimizer_states/0/state/3/exp_avg``) and everything
else as JSON in the header's metadata. No pickle: a checkpoint loads with ``safetensors`` alone and
cannot run code.

No Lightning here: a ``resume=`` that names no checkpoint is refused before Lightning (~7 s) is
imported. The Lightning side, the checkpoint IO and the step callback, is :mod:`coz.run.checkpoints`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from coz.errors import CozError
from coz.run.atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT = "coz-train-checkpoint"
SUFFIX = ".safetensors"
LAST = f"last{SUFFIX}"
STEP_KEY = "coz_step"  # the module's completed optimisation steps, in the dict and the file's metadata


# ---- nested dict <-> (tensors, JSON) ----------------------------------------------------------
def flatten(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """A JSON-able skeleton of ``obj``; its tensors go to ``tensors`` under their path."""
    if isinstance(obj, torch.Tensor):
        key = path or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: flatten(v, tensors, f"{path}/{k}") for k, v in obj.items()}}
        return {"__items__": [[_key(k), flatten(v, tensors, f"{path}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if type(obj).__name__ == "ndarray":  # numpy's RNG state (uint32): stored as int64
        return flatten(
            torch.from_numpy(obj.astype("int64") if obj.dtype.kind in "ui" else obj), tensors, path
        )
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"checkpoint entry {path or '/'} of type {type(obj).__name__} is not storable")


def _key(k: Any) -> Any:
    if isinstance(k, (int, float, bool, str)) or k is None:
        return {"__key__": k, "type": type(k).__name__}
    raise TypeError(f"checkpoint dict key {k!r} of type {type(k).__name__} is not storable")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__dict__" in obj:
        return {k: unflatten(v, tensors) for k, v in obj["__dict__"].items()}
    if "__tuple__" in obj:
        return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k["__key__"]: unflatten(v, tensors) for k, v in obj["__items__"]}
    raise ValueError(f"unknown checkpoint node {list(obj)[:3]}")


def save_checkpoint_file(checkpoint: dict[str, Any], path: str | Path) -> None:
    from safetensors.torch import save_file

    from coz.errors import TrainingDiverged
    from coz.run.finite import first_nonfinite

    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(checkpoint, tensors)
    weights = ((k, v) for k, v in tensors.items() if k.startswith("/state_dict/"))
    if (bad := first_nonfinite(weights)) is not None:  # the trainers stop before; never write one anyway
        raise TrainingDiverged(f"checkpoint {path}: {bad} holds NaN/Inf; not written")
    # safetensors refuses tensors that share memory (tied weights): copy all but the first of each
    # storage, not everything (ddp_spawn hands the whole model back through this file)
    seen: set[int] = set()
    for key, value in tensors.items():
        storage = value.untyped_storage().data_ptr()
        if storage in seen or storage == 0:
            tensors[key] = value.clone()
        seen.add(storage)
    metadata = {"format": FORMAT, "skeleton": json.dumps(skeleton)}
    if checkpoint.get(STEP_KEY) is not None:  # readable without loading the tensors (newest_checkpoint)
        metadata["step"] = str(int(checkpoint[STEP_KEY]))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint of :func:`save_checkpoint_file` (ddp_spawn's ``.temp.ckpt`` included)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CozError(f"checkpoint {path}: not a readable safetensors file ({e})") from None
    if metadata.get("format") != FORMAT:
        raise CozError(
            f"checkpoint {path}: not a coz training checkpoint (format={metadata.get('format')!r})"
        )
    return unflatten(json.loads(metadata["skeleton"]), tensors)


def checkpoint_step(path: str | Path, option: str = "resume") -> int:
    """The optimisation steps a checkpoint file was written after (its metadata; no tensor is read)."""
    from safetensors import safe_open

    from coz.run.weights import read_weights

    path = Path(path)

    def metadata() -> dict[str, str]:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return f.metadata() or {}

    found = read_weights(option, path, metadata)
    if found.get("format") != FORMAT or "step" not in found:
        raise CozError(f"{option}={path}: not a coz training checkpoint")
    return int(found["step"])


def checkpoint_identity(path: str | Path) -> dict[str, str]:
    """The tool (``coz.train_sr`` / ``coz.train_grpo``) and, for train_sr, the backbone a checkpoint
    was written by, from its metadata (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        top = json.loads((f.metadata() or {}).get("skeleton", "{}")).get("__dict__", {})
    if "coz_grpo" in top:  # each trainer's own record (coz/train_*/module.py, on_save_checkpoint)
        return {"tool": "coz.train_grpo"}
    if "coz" in top:
        return {"tool": "coz.train_sr", "backbone": str(top["coz"]["__dict__"].get("backbone"))}
    return {}


def refuse_foreign(path: Path, option: str, tool: str, backbone: str | None = None) -> None:
    """One line if the checkpoint at ``path`` was written by another trainer or for another backbone."""
    from coz.run.weights import read_weights

    found = read_weights("resume", path, lambda: checkpoint_identity(path))  # resume=PATH: cannot load it
    if found.get("tool", tool) != tool:
        raise CozError(f"{option}: {path} is a checkpoint of {found['tool']}, not of {tool}")
    if backbone is not None and found.get("backbone", backbone) != backbone:
        raise CozError(
            f"{option}: {path} is a checkpoint of backbone={found['backbone']}, not backbone={backbone}"
        )


def newest_checkpoint(folder: Path) -> Path | None:
    """The readable checkpoint of ``folder`` with the most steps (``last`` on a tie): the periodic
    step file of a run killed after writing it is newer than the ``last`` of the run before."""
    best, best_step = None, -1
    for path in sorted(Path(folder).glob(f"*{SUFFIX}"), key=lambda p: (p.stem != "last", p.name)):
        try:
            step = checkpoint_step(path)
        except Exception as err:  # noqa: BLE001 - a damaged file is skipped, the others still count
            log.warning("checkpoint %s is unreadable (%s); skipped", path, str(err).splitlines()[0])
            continue
        if step > best_step:
            best, best_step = path, step
    return best


def resume_from(
    spec: str | None, run_dir: Path, tool: str | None = None, backbone: str | None = None
) -> Path | None:
    """The checkpoint a trainer resumes from, by ``resume=`` (the same in train_sr and train_grpo):

    - ``auto`` (the default): the run folder's newest checkpoint if it has one, else a fresh start, so
      rerunning a command into its run folder resumes it;
    - ``none``: a fresh start, refused where the folder already holds checkpoints (it would train from
      scratch over the earlier run's logs and exports);
    - a path: that checkpoint file, or the newest checkpoint of that run folder.

    A checkpoint written by another ``tool`` or for another ``backbone`` is refused in one line.
    """
    here = Path(run_dir) / "checkpoints"
    mode = "auto" if spec is None else str(spec)
    if mode == "auto":
        path = newest_checkpoint(here)
        if path is not None and tool is not None:
            refuse_foreign(path, f"resume=auto (run folder {run_dir})", tool, backbone)
        return path
    if mode == "none":
        if newest_checkpoint(here):
            raise CozError(
                f"resume=none: {run_dir} already holds checkpoints; use resume=auto or another hydra.run.dir"
            )
        return None
    path = Path(mode).expanduser()
    path = newest_checkpoint(path / "checkpoints") if path.is_dir() else path
    if path is None or not path.is_file():
        raise CozError(f"resume={mode}: no checkpoint there (give a .safetensors checkpoint or a run folder)")
    if tool is not None:
        refuse_foreign(path, f"resume={mode}", tool, backbone)
    return path
