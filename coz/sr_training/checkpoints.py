"""Training checkpoints as safetensors, written atomically, every N steps, plus ``last``.

Lightning builds the checkpoint dict (the module's state -- only the trained tensors, see
:meth:`~coz.sr_training.module.SRTrainingModule.state_dict` --, the optimisers, LR schedulers,
loop progress, the grad scaler, and coz's own record: step, stage, RNG states, skipped files);
:class:`SafetensorsCheckpointIO` stores it as one ``.safetensors`` file: every tensor under its
path in the dict (``state_dict/transformer.….lora_up.weight``, ``optimizer_states/0/state/3/exp_avg``)
and everything else as JSON in the header's metadata. No pickle: a checkpoint loads with
``safetensors`` alone and cannot run code. ``ckpt_path=last`` resumes from ``checkpoints/last.safetensors``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.plugins.io import CheckpointIO

from coz.atomic import atomic_path, link_or_copy_atomic
from coz.errors import CozError

log = logging.getLogger(__name__)

FORMAT = "coz-train-checkpoint"
LAST = "last.safetensors"


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

    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(checkpoint, tensors)
    # safetensors refuses tensors that share memory; checkpoints are small (only what trains)
    tensors = {k: v.clone() for k, v in tensors.items()}
    metadata = {"format": FORMAT, "skeleton": json.dumps(skeleton)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CozError(f"checkpoint {path}: not a readable safetensors file ({e})") from None
    if metadata.get("format") != FORMAT:
        raise CozError(
            f"checkpoint {path}: not a coz.train_sr checkpoint (format={metadata.get('format')!r})"
        )
    return unflatten(json.loads(metadata["skeleton"]), tensors)


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning's checkpoint IO, in safetensors (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


class StepCheckpoint(Callback):
    """Save ``checkpoints/step_XXXXXXX.safetensors`` every ``every`` optimisation steps and at the end,
    keep ``last.safetensors`` pointing at the newest (a hard link), drop all but the newest ``keep``."""

    def __init__(self, folder: Path, every: int, keep: int = 0) -> None:
        self.folder, self.every, self.keep = Path(folder), int(every), int(keep)
        self.saved: list[Path] = []
        self.last_step: int | None = None  # the step saved last in this process

    def setup(self, trainer, pl_module, stage: str) -> None:
        # ``keep`` counts the checkpoints of earlier (resumed) runs in this folder too
        self.saved = sorted(self.folder.glob("step_*.safetensors"))

    def _save(self, trainer, step: int) -> None:
        # Decided on the step alone, the same on every rank: save_checkpoint is a collective under
        # DDP / FSDP. An existing file of this step (from before a resume) is overwritten atomically.
        if step == self.last_step:  # the end of training right after a periodic save
            return
        self.last_step = step
        path = self.folder / f"step_{step:07d}.safetensors"
        trainer.save_checkpoint(str(path), weights_only=False)
        if trainer.is_global_zero:
            link_or_copy_atomic(path, self.folder / LAST)
            self.saved = [p for p in self.saved if p != path] + [path]
            if self.keep > 0:
                for old in self.saved[: -self.keep]:
                    old.unlink(missing_ok=True)
                self.saved = self.saved[-self.keep :]
            log.info("checkpoint: %s", path)
        trainer.strategy.barrier()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.step
        if pl_module.stepped_now and self.every > 0 and step % self.every == 0:
            self._save(trainer, step)

    def on_train_end(self, trainer, pl_module) -> None:
        if pl_module.step > 0:
            self._save(trainer, pl_module.step)


def resolve_ckpt_path(value: Any, run_dir: Path) -> str | None:
    """``ckpt_path``: null (a fresh run), ``last`` (this run folder's last checkpoint) or a file."""
    if value in (None, "", "null"):
        return None
    if str(value) == "last":
        path = run_dir / "checkpoints" / LAST
        if not path.is_file():
            raise CozError(
                f"ckpt_path=last: no checkpoint in {path.parent}; resume a run with "
                "hydra.run.dir=<its folder> ckpt_path=last, or give ckpt_path=<file>.safetensors"
            )
        return str(path)
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise CozError(f"ckpt_path={value}: no such file")
    return str(path)
