"""coz.run.checkpoints and coz.run.checkpoint_files, the checkpoints of both trainers, on a tiny Lightning module: Lightning's
ModelCheckpoint counting optimisation steps (not micro-batches), every N steps and at the end, keeping
the newest N, ``last`` a hard link to the newest, safetensors files; a resume from the newest continues exactly; a damaged file is skipped, a foreign one (a pickle
``.ckpt`` too) is one line."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from coz.errors import CozError

# Lightning and coz.run.checkpoints (which imports it) are imported inside the tests: collecting this
# file in every pytest-xdist worker should not pay for them.


def tiny_module(accumulate: int = 2):
    import lightning as L

    class Tiny(L.LightningModule):
        """Manual optimisation with ``accumulate`` micro-batches per step, like the trainers; the data of
        step s is a function of s, so a resumed run sees what the uninterrupted one saw."""

        def __init__(self, accumulate: int = 2) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.net = nn.Linear(3, 1)
            self.accumulate, self.step, self.micro = accumulate, 0, 0

        @property
        def completed_steps(self) -> int:
            return self.step

        def training_step(self, batch, batch_idx):
            x = torch.randn(4, 3, generator=torch.Generator().manual_seed(self.step * 10 + self.micro))
            self.manual_backward((self.net(x) - 1).pow(2).mean() / self.accumulate)
            self.micro += 1
            if self.micro < self.accumulate:
                return
            self.micro = 0
            opt = self.optimizers()
            opt.step()
            opt.zero_grad()
            self.lr_schedulers().step()
            self.step += 1

        def configure_optimizers(self):
            from transformers import get_constant_schedule_with_warmup

            opt = torch.optim.AdamW(self.parameters(), lr=0.1)
            return [opt], [get_constant_schedule_with_warmup(opt, num_warmup_steps=2)]

        def on_save_checkpoint(self, checkpoint):
            checkpoint["tiny"] = {"step": self.step}

        def on_load_checkpoint(self, checkpoint):
            self.step = int(checkpoint["tiny"]["step"])

        def train_dataloader(self):
            return torch.utils.data.DataLoader(range(1000), batch_size=1)

    return Tiny(accumulate)


def train(folder: Path, steps: int, every: int = 2, keep: int = 0, ckpt: Path | None = None):
    import lightning as L

    from coz.run.checkpoints import SafetensorsCheckpointIO, StepCheckpoint

    torch.manual_seed(0)
    module = tiny_module()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,  # one optimiser: Lightning's global step is the optimisation step here
        logger=False,
        callbacks=[StepCheckpoint(folder / "checkpoints", every, keep)],
        plugins=[SafetensorsCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(folder),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)
    return module


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "checkpoints").iterdir())


def test_every_n_steps_keep_n_and_last_links_the_newest(tmp_path):
    from coz.run.checkpoint_files import LAST, checkpoint_step, load_checkpoint_file, newest_checkpoint

    module = train(tmp_path, steps=5, every=2, keep=2)
    assert module.step == 5
    # steps 2 and 4 periodic, 5 at the end; keep=2 dropped step 2
    assert names(tmp_path) == [LAST, "step_0000004.safetensors", "step_0000005.safetensors"]
    last = tmp_path / "checkpoints" / LAST
    assert os.path.samefile(last, tmp_path / "checkpoints" / "step_0000005.safetensors")
    assert checkpoint_step(last) == 5 and load_checkpoint_file(last)["tiny"]["step"] == 5
    assert newest_checkpoint(tmp_path / "checkpoints") == last  # a tie goes to last


def test_resume_from_the_newest_continues_exactly_and_keep_counts_the_earlier_files(tmp_path):
    from coz.run.checkpoint_files import LAST, checkpoint_step, newest_checkpoint

    straight = train(tmp_path / "straight", steps=6)
    folder = tmp_path / "resumed"
    train(folder, steps=3, keep=2)  # 2, then 3 at the end
    newest = newest_checkpoint(folder / "checkpoints")
    assert checkpoint_step(newest) == 3
    resumed = train(folder, steps=6, keep=2, ckpt=newest)
    assert resumed.step == 6
    for key, value in straight.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[key], value, rtol=0, atol=0)
    assert names(folder) == [LAST, "step_0000004.safetensors", "step_0000006.safetensors"]


def test_a_pickle_ckpt_is_no_checkpoint(tmp_path):
    """Checkpoints are safetensors only: a Lightning pickle ``.ckpt`` in the folder is not a candidate
    to resume from, and naming it is refused in one line (never unpickled)."""
    from coz.run.checkpoint_files import LAST, load_checkpoint_file, newest_checkpoint, resume_from

    train(tmp_path / "new", steps=2)
    checkpoint = load_checkpoint_file(tmp_path / "new" / "checkpoints" / LAST)
    old = tmp_path / "old" / "checkpoints"
    old.mkdir(parents=True)
    torch.save(checkpoint, old / "last.ckpt")
    assert newest_checkpoint(old) is None
    assert resume_from("auto", old.parent) is None  # a fresh start
    with pytest.raises(CozError, match=f"resume={old / 'last.ckpt'}: ") as err:
        resume_from(str(old / "last.ckpt"), tmp_path / "run", tool="coz.train_grpo")
    assert "\n" not in str(err.value)
    with pytest.raises(CozError, match="not a readable safetensors file"):
        load_checkpoint_file(old / "last.ckpt")


def test_newest_skips_damaged_files_and_foreign_files_are_one_line(tmp_path):
    from coz.run.checkpoint_files import LAST, checkpoint_step, newest_checkpoint, save_checkpoint_file

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert newest_checkpoint(folder) is None
    save_checkpoint_file({"coz_step": 6, "w": torch.zeros(1)}, folder / LAST)
    save_checkpoint_file({"coz_step": 8, "w": torch.zeros(1)}, folder / "step_0000008.safetensors")
    (folder / "step_0000010.safetensors").write_bytes(b"half a checkpoint")  # killed while writing
    assert newest_checkpoint(folder) == folder / "step_0000008.safetensors"  # killed before linking last

    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "weights.safetensors"))
    for path in (tmp_path / "weights.safetensors", folder / "step_0000010.safetensors"):
        with pytest.raises(CozError, match=f"resume={path}: ") as err:
            checkpoint_step(path)
        assert "\n" not in str(err.value)


def test_tensors_sharing_memory_are_stored(tmp_path):
    """Tied weights (one tensor under two names, or views of one storage) as in a whole model that
    ddp_spawn hands back through a checkpoint file: each is stored with its own values."""
    from coz.run.checkpoint_files import load_checkpoint_file, save_checkpoint_file

    weight = torch.randn(4, 3)
    checkpoint = {
        "embed": weight,
        "head": weight,
        "row": weight[1:2],
        "empty": torch.zeros(0),
        "e2": torch.zeros(0),
    }
    save_checkpoint_file(checkpoint, tmp_path / "tied.safetensors")
    loaded = load_checkpoint_file(tmp_path / "tied.safetensors")
    assert loaded.keys() == checkpoint.keys()
    for key, value in checkpoint.items():
        assert torch.equal(loaded[key], value), key
