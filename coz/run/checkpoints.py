"""The training checkpoints of coz.train_sr and coz.train_grpo: one mechanism for both.

Lightning builds the checkpoint dict (the module's state -- only the trained tensors --, the
optimisers, LR schedulers, loop progress, callbacks, and each tool's own record);
:class:`SafetensorsCheckpointIO` stores it as one ``.safetensors`` file, written atomically: every
tensor under its path in the dict (``state_dict/transformer.….lora_up.weight``,
``optimizer_states/0/state/3/exp_avg``) and everything else as JSON in the header's metadata. No
pickle: a checkpoint loads with ``safetensors`` alone and cannot run code.

:class:`StepCheckpoint` is Lightning's ``ModelCheckpoint`` counting the module's optimisation steps
(``completed_steps``; Lightning's own global step counts every optimiser of a step): it writes
``checkpoints/step_XXXXXXX.safetensors`` every N steps and at the end of training, keeps the newest
``keep`` of them (0: all), and ``last.safetensors``, a hard link to the newest. A resume takes the run
folder's newest checkpoint (:func:`newest_checkpoint`).

Lightning's ``ddp_spawn`` hands the trained weights from rank 0 back to the main process through a
``.temp.ckpt`` file that it writes and reads with the strategy's checkpoint IO, this one: despite its
name it is a safetensors file too, so nothing here ever unpickles.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import CheckpointIO

from coz.errors import CozError
from coz.run.atomic import atomic_path, link_or_copy_atomic

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


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning's checkpoint IO, in safetensors (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


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


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` every ``every`` optimisation steps and at the end of training, keeping the
    newest ``keep`` (0: all) and ``last.safetensors`` (a hard link to the newest).

    The step is the module's ``completed_steps`` (optimisation steps done; the same on every rank, so
    every rank takes the same decision: saving is a collective under DDP / FSDP). The files' top-k
    bookkeeping is ModelCheckpoint's, restored on resume; an existing file of the same step (from
    before a resume) is overwritten atomically."""

    FILE_EXTENSION = SUFFIX

    def __init__(self, folder: Path, every: int, keep: int = 0) -> None:
        super().__init__(
            dirpath=str(folder),
            filename="step_{step:07d}",
            auto_insert_metric_name=False,
            monitor="step",
            mode="max",  # the newest are the best
            save_top_k=int(keep) if int(keep) > 0 else -1,
            save_last="link",
            every_n_train_steps=int(every),
            save_on_train_epoch_end=False,
            enable_version_counter=False,
        )
        self.every = int(every)
        self.saved_step: int | None = None  # the step saved last in this process

    def setup(self, trainer, pl_module, stage: str) -> None:
        with warnings.catch_warnings():  # a resumed run's folder holds its checkpoints, of course
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self.saved_step = int(pl_module.completed_steps)  # resumed: that step is on disk already

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(pl_module.completed_steps)
        if self.every > 0 and step > 0 and step % self.every == 0:
            self._save_step(trainer, step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass  # steps, not epochs: the end of training is on_train_end's

    def on_validation_end(self, trainer, pl_module) -> None:
        pass

    def on_train_end(self, trainer, pl_module) -> None:
        step = int(pl_module.completed_steps)
        if step > 0:
            self._save_step(trainer, step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[STEP_KEY] = int(pl_module.completed_steps)

    def _save_step(self, trainer, step: int) -> None:
        if step == self.saved_step:  # the end of training right after a periodic save
            return
        self.saved_step = step
        candidates = self._monitor_candidates(trainer)
        candidates["step"] = torch.tensor(step)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
        if trainer.is_global_zero:
            log.info("checkpoint: %s", self._last_checkpoint_saved)

    @staticmethod
    def _link_checkpoint(trainer, filepath: str, linkpath: str) -> None:
        # a hard link replaced atomically (Lightning's: remove, then a symbolic link)
        if trainer.is_global_zero and Path(filepath).resolve() != Path(linkpath).resolve():
            link_or_copy_atomic(filepath, linkpath)
        trainer.strategy.barrier()
