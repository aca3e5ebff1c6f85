"""The Lightning side of the training checkpoints of coz.train_sr and coz.train_grpo: one mechanism
for both. The file format and the choice of the checkpoint to resume from are
:mod:`coz.run.checkpoint_files` (no Lightning there).

:class:`SafetensorsCheckpointIO` is Lightning's checkpoint IO in that format.

:class:`StepCheckpoint` is Lightning's ``ModelCheckpoint`` counting the module's optimisation steps
(``completed_steps``; Lightning's own global step counts every optimiser of a step): it writes
``checkpoints/step_XXXXXXX.safetensors`` every N steps and at the end of training, keeps the newest
``keep`` of them (0: all), and ``last.safetensors``, a hard link to the newest. A resume takes the run
folder's newest checkpoint (:func:`coz.run.checkpoint_files.newest_checkpoint`).

Lightning's ``ddp_spawn`` hands the trained weights from rank 0 back to the main process through a
``.temp.ckpt`` file that it writes and reads with the strategy's checkpoint IO, this one: despite its
name it is a safetensors file too, so nothing here ever unpickles.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import CheckpointIO

from coz.run.atomic import link_or_copy_atomic
from coz.run.checkpoint_files import STEP_KEY, SUFFIX, load_checkpoint_file, save_checkpoint_file

log = logging.getLogger(__name__)


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning's checkpoint IO, in safetensors (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


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
