"""The Lightning module of ``coz.train_sr``: OSEDiff's training step, coarse-to-fine.

One optimisation step (after ``accumulate`` micro-batches), docs/fidelity.md "Training the SR backbone":

1. the loader's HR crops (B, 3, S, S) are degraded on the device by the current stage's pipeline
   (Real-ESRGAN two-stage or bicubic 4x) -> LR (B, 3, S/4, S/4), resized back to S for diffusion
   backbones;
2. prompts: tags of the HR crops; the generator restores the LR view -> SR in [-1, 1] and its
   clean latent z0;
3. generator loss ``l2 * MSE(SR, HR) + lpips * LPIPS(SR, HR) + dmd * DMD(z0)``, plus the fake
   score LoRA's own diffusion loss ``reg_diffusion * L_diff(stopgrad(z0))``. The two losses touch
   disjoint parameters (DMD runs the score models without grad, L_diff sees a detached z0), so one
   backward of their sum gives each exactly its own gradient (and DDP one reduction per step);
4. each optimiser (SD3: transformer LoRA, VAE-encoder LoRA, fake LoRA: three AdamW, as the
   authors' port; SD2.1: generator (UNet LoRA, conv_in, VAE LoRA) and fake LoRA: two, as OSEDiff)
   clips its gradients to ``optim.max_grad_norm`` and steps; LR schedulers step.

Randomness per step (the VAE posterior noise, DMD and diffusion-loss timesteps and noise) is
seeded from (seed, step, micro-batch, rank) and the data from (seed, item index), so a resumed run
continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from coz.backbones.seeded import seeded
from coz.run.divergence import check_training
from coz.train_sr.data import Layout, StepSampler, TrainingImages
from coz.train_sr.degradation import training_view
from coz.train_sr.losses import LPIPSLoss, l2_loss
from coz.train_sr.regulariser import step_seed
from coz.train_sr.stages import Stages

log = logging.getLogger("coz.train_sr")


def _reopen_the_epoch(checkpoint: dict[str, Any]) -> None:
    """A run is one epoch whose length is the stages' steps from ``self.step`` on. A checkpoint of the
    last step (or the end of training) records that epoch as over (``is_last_batch``, epoch processed),
    and Lightning (max_epochs=1) would then train nothing: continuing with more steps must go on with
    the same epoch, so mark it unfinished (the loader covers the remaining steps by itself)."""
    fit = checkpoint.get("loops", {}).get("fit_loop")
    if not fit:
        return
    fit["epoch_loop.batch_progress"]["is_last_batch"] = False
    for counts in fit["epoch_progress"].values():  # started, not processed nor completed: mid-epoch
        counts["ready"] = counts["started"] = 1
        counts["processed"] = counts["completed"] = 0
    checkpoint["epoch"] = 0


class SRTrainingModule(L.LightningModule):
    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.gen = self.prompts = self.reg = self.lpips = None  # built in configure_model, in each process
        w = cfg.loss
        self.weights = {k: w[k] for k in ("l2", "lpips", "dmd", "reg_diffusion")}
        self.stages = Stages(OmegaConf.to_container(cfg.stages, resolve=True))
        self.accumulate = cfg.optim.accumulate
        self.step = 0  # completed optimisation steps
        self.micro = 0  # micro-batches into the current step
        self.stepped_now = False
        self.skipped_files = 0
        self.stage_index: int | None = None
        self._clock: float | None = None
        self._images_since = 0
        self._pending_state: dict[str, Any] | None = None

    def configure_model(self) -> None:
        """Build the backbone, the regulariser, LPIPS and the prompt tagger in this process (after
        a spawn, nothing large is pickled; under FSDP, inside its init context)."""
        if self.gen is not None:
            return
        from coz.train_sr.generators import build_generator
        from coz.train_sr.prompts import TrainingPrompts

        cfg = self.cfg
        if self.weights["lpips"] > 0:  # first: without its weights, fail before the large model loads
            self.lpips = LPIPSLoss(cfg.loss.lpips_weights)
        generator = build_generator(cfg.backbone, cfg.model)
        self.gen = generator
        self.models = nn.ModuleDict(generator.modules())  # registered: devices, DDP, FSDP
        diffusion = hasattr(generator.backbone, "vae")
        if diffusion and (self.weights["dmd"] > 0 or self.weights["reg_diffusion"] > 0):
            with seeded(cfg.seed):  # the fake LoRA's init is seeded too
                self.reg = generator.regulariser(cfg.regulariser)
        self.prompts = TrainingPrompts(cfg.prompts) if diffusion else None
        if cfg.gradient_checkpointing:
            generator.set_gradient_checkpointing(True)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)
            self._pending_state = None

    @property
    def completed_steps(self) -> int:
        """Optimisation steps done (what the checkpoints count: coz.run.checkpoints.StepCheckpoint)."""
        return self.step

    def export(self) -> dict[str, Path]:
        """The final weights in coz.zoom's formats (rank 0), listed in export/export.json."""
        import json

        from coz.run.atomic import write_text_atomic

        folder = self.run_dir / "export"
        check_training("train_sr", self.step, "weight", self.state_dict(), self.run_dir / "checkpoints")
        files = self.gen.export(folder)
        record = {
            "step": self.step,
            "backbone": self.gen.name,
            "files": {k: str(v) for k, v in files.items()},
        }
        write_text_atomic(folder / "export.json", json.dumps(record, indent=2))
        return files

    # ---- what checkpoints hold: only what trains -------------------------------------------
    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        if self.gen is None:
            return dict(self._pending_state or {})
        state = {f"generator/{k}": v for k, v in self.gen.trainable_state().items()}
        if self.reg is not None:
            state.update({f"regulariser/{k}": v.detach() for k, v in self.reg.fake.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False):
        if self.gen is None:  # e.g. ddp_spawn hands rank 0's weights back to the parent: keep them
            self._pending_state = dict(state)
            return None
        self.gen.load_trainable_state(
            {k.removeprefix("generator/"): v for k, v in state.items() if k.startswith("generator/")}
        )
        reg = {k.removeprefix("regulariser/"): v for k, v in state.items() if k.startswith("regulariser/")}
        if self.reg is not None:
            own = self.reg.fake.state_dict()
            for key, value in reg.items():  # one line, not torch's size-mismatch traceback
                if key in own and own[key].shape != value.shape:
                    from coz.errors import CozError

                    raise CozError(
                        f"checkpoint does not match the regulariser: {key} is {tuple(value.shape)}, "
                        f"not {tuple(own[key].shape)} (the checkpoint was written with another "
                        "regulariser.rank)"
                    )
            self.reg.fake.load_state_dict(reg, strict=True)
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["coz"] = {
            "tool": "coz.train_sr",  # what coz.run.checkpoint_files.resume_from checks
            "step": self.step,
            "stage": self.stages.index_at(self.step),
            "stage_name": self.stages.at(self.step).name,
            "skipped_files": self.skipped_files,
            "backbone": self.gen.name,
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
            },
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = checkpoint["coz"]
        if record["backbone"] != self.gen.name:
            from coz.errors import CozError

            raise CozError(f"checkpoint was trained with backbone={record['backbone']}, not {self.gen.name}")
        self.step, self.skipped_files = int(record["step"]), int(record["skipped_files"])
        rng = record["rng"]
        py = rng["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        np_state = rng["numpy"]
        np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(rng["cuda"]))
        _reopen_the_epoch(checkpoint)
        log.info("resumed at step %d, stage %s", self.step, self.stages.at(self.step).name)

    # ---- optimisers -------------------------------------------------------------------------
    def optimiser_names(self) -> list[str]:
        names = list(self.gen.optimiser_groups())
        return names + (["regulariser_lora"] if self.reg is not None else [])

    def configure_optimizers(self):
        o = self.cfg.optim
        groups = dict(self.gen.optimiser_groups())
        if self.reg is not None:
            groups["regulariser_lora"] = self.reg.parameters_to_train()
        optimisers = [
            torch.optim.AdamW(
                params,
                lr=o.lr,
                betas=tuple(o.betas),
                weight_decay=o.weight_decay,
                eps=o.eps,
            )
            for params in groups.values()
        ]
        from transformers import get_constant_schedule_with_warmup

        # transformers' (and diffusers') linear warm-up: step s of the first w trains at lr * s / w (0 at
        # the first step), then lr; w = 0 is a constant lr. Stepped once per optimisation step.
        schedulers = [
            get_constant_schedule_with_warmup(opt, num_warmup_steps=o.warmup_steps) for opt in optimisers
        ]
        return optimisers, schedulers

    # ---- data -------------------------------------------------------------------------------
    def layout(self) -> Layout:
        return Layout(self.cfg.data.batch_size, self.accumulate, int(self.trainer.world_size))

    def train_dataloader(self):
        d = self.cfg.data
        layout = self.layout()
        dataset = TrainingImages(
            OmegaConf.to_container(d.sources, resolve=True),
            crop=d.crop,
            hflip=d.hflip,
            vflip=d.vflip,
            seed=self.cfg.seed,
            layout=layout,
            stage_kind=self.stages.kind_at,
            degradation=OmegaConf.to_container(self.cfg.degradation, resolve=True),
            max_tries=d.max_tries,
        )
        start, stop = self.step * self.accumulate, self.stages.total * self.accumulate
        sampler = StepSampler(layout, int(self.trainer.global_rank), start, stop)
        workers = d.num_workers
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if workers > 0 else None,
        )

    def on_fit_start(self) -> None:
        self.gen.to(self.device)
        if self.prompts is not None:
            self.prompts.to(self.device)
        if (
            self.reg is not None
            and hasattr(self.reg.family, "frozen_conv_in")
            and self.reg.family.frozen_conv_in
        ):
            self.reg.family.frozen_conv_in = {
                k: v.to(self.device) for k, v in self.reg.family.frozen_conv_in.items()
            }
        for module in self.models.values():  # frozen base weights stay in eval mode (no dropout)
            module.eval()
        self._clock = time.perf_counter()

    def on_train_start(self) -> None:
        from coz.run.progress import Progress
        from coz.run.trainer import follow_the_configured_lr

        follow_the_configured_lr(self.trainer, self.cfg.optim.lr)  # optim.lr may change on a resume

        # our own bar, not Lightning's ("Epoch 0/0 ... v_num"): optimiser steps towards the stages'
        # total, counting on from the checkpoint after a resume, with the latest losses
        shown = self.trainer.is_global_zero and self.cfg.log.progress_bar
        self.bar = Progress(self.stages.total, "train_sr", "steps", initial=self.step, enabled=shown)
        self.validation = None
        if self.trainer.is_global_zero and self.cfg.val.every_n_steps > 0:
            from coz.train_sr.validation import Validation

            self.validation = Validation(self.cfg, self.device)

    def on_train_end(self) -> None:
        if getattr(self, "bar", None):
            self.bar.close()

    def on_train_epoch_start(self) -> None:
        for module in self.models.values():
            module.eval()

    # ---- the step ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.stepped_now = False
        stage_index = self.stages.index_at(self.step)
        if stage_index != self.stage_index:
            stage = self.stages.stages[stage_index]
            verb = "starting" if self.stage_index is None else "switching to"
            log.info(
                "step %d: %s stage %d/%d %r (%s degradation, steps %d-%d)",
                self.step, verb, stage_index + 1, len(self.stages), stage.name, stage.degradation,
                stage.start, stage.start + stage.steps - 1,
            )  # fmt: skip
            self.stage_index = stage_index
        kind = self.stages.kind_at(self.step)
        rank = int(self.trainer.global_rank)
        seed = step_seed(self.cfg.seed, self.step, self.micro, rank)
        self.gen.reseed(seed % 2**62)
        generator = torch.Generator(device=self.device).manual_seed(step_seed(seed, 1))

        hr = batch["hr"].to(self.device).float() / 255.0  # (B, 3, S, S)
        with torch.no_grad():
            deg, back = self.cfg.degradation, None  # CNNs restore the LR batch (B, 3, S/4, S/4) itself
            if self.gen.takes_upsampled_input:  # diffusion backbones: the LR view resized back to S
                back = deg.bicubic_back if kind == "bicubic" else "bicubic"
                if kind == "realesrgan" and deg.resize_back == "random":
                    back = "random"
            x = training_view(hr, kind, batch.get("deg"), deg.scale, back, deg.round_8bit)
            prompts = self.prompts(hr) if self.prompts is not None else [""] * hr.shape[0]
        target = hr * 2 - 1
        sr, z0, cond = self.gen.restore(x, prompts)
        terms: dict[str, torch.Tensor] = {"l2": l2_loss(sr, target)}
        if self.lpips is not None:
            terms["lpips"] = self.lpips(sr, target)
        if self.reg is not None and self.weights["dmd"] > 0:
            terms["dmd"] = self.reg.dmd_loss(z0, cond, generator)
        generator_loss = sum(self.weights[k] * v for k, v in terms.items())
        loss = generator_loss
        if self.reg is not None and self.weights["reg_diffusion"] > 0:
            terms["reg_diffusion"] = self.reg.diffusion_loss(z0, cond, generator)
            loss = loss + self.weights["reg_diffusion"] * terms["reg_diffusion"]
        check_training("train_sr", self.step + 1, "loss term", terms, self.run_dir / "checkpoints")
        self.manual_backward(loss / self.accumulate)
        self.skipped_files += int(torch.as_tensor(batch["skipped"]).sum())
        self._images_since += hr.shape[0]
        self.micro += 1
        if self.micro < self.accumulate:
            return
        self.micro = 0
        self._optimiser_step()
        self.step += 1
        check_training("train_sr", self.step, "weight", self.state_dict(), self.run_dir / "checkpoints")
        self.stepped_now = True
        scores = {}
        if getattr(self, "validation", None) and self.step % self.cfg.val.every_n_steps == 0:
            scores = self.validation.run(self.gen, self.prompts, self.step, self.run_dir, self.loggers)
        self._log(terms, generator_loss, stage_index, scores)
        if getattr(self, "bar", None):
            self.bar.update()
        every = self.cfg.log.images_every
        if every and (self.step % every == 0 or self.step == 1):
            self._log_images(x, sr, hr)

    def _optimiser_step(self) -> None:
        optimisers = self.optimizers()
        optimisers = optimisers if isinstance(optimisers, list) else [optimisers]
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        max_norm = self.cfg.optim.max_grad_norm
        if scaler is not None:  # fp16: one scale update for all optimisers (coz/train_sr/amp.py)
            from coz.train_sr.amp import step_with_one_scale

            step_with_one_scale(scaler, [opt.optimizer for opt in optimisers], max_norm)
        else:
            for opt in optimisers:
                if max_norm > 0:
                    self.clip_gradients(opt, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")
                opt.step()
                opt.zero_grad(set_to_none=True)
        schedulers = self.lr_schedulers()
        for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
            sched.step()

    def _log(
        self, terms: dict[str, torch.Tensor], generator_loss: torch.Tensor, stage_index: int, scores: dict
    ) -> None:
        """The step's row (every ``log.every_n_steps``, and whenever validation ``scores`` come with it:
        one row per step, never two)."""
        every = max(1, self.cfg.log.every_n_steps)
        if self.step % every and self.step != 1 and not scores:
            return
        now = time.perf_counter()
        elapsed = now - (self._clock or now)
        metrics = {f"loss/{k}": float(v.detach()) for k, v in terms.items()}
        metrics["loss/generator"] = float(generator_loss.detach())
        optimisers = self.optimizers()
        optimisers = optimisers if isinstance(optimisers, list) else [optimisers]
        for name, opt in zip(self.optimiser_names(), optimisers, strict=True):
            metrics[f"lr/{name}"] = float(opt.param_groups[0]["lr"])
        metrics.update(scores)
        metrics["stage"] = float(stage_index)
        metrics["data/skipped_files"] = float(self.skipped_files)
        if elapsed > 0:
            ips = self._images_since * int(self.trainer.world_size) / elapsed
            metrics["throughput/images_per_s"] = ips
            metrics["throughput/steps_per_s"] = ips / (
                self.cfg.data.batch_size * self.accumulate * int(self.trainer.world_size)
            )
        self._clock, self._images_since = now, 0
        if getattr(self, "bar", None):
            self.bar.set_postfix(
                **{k.removeprefix("loss/"): v for k, v in metrics.items() if k.startswith("loss/")}
            )
        # Straight to the loggers, once: self.log_dict would have Lightning re-log these last values at
        # every later batch (micro-batches and steps between two logged ones), repeating rows.
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.step)
                logger.save()

    def _log_images(self, x: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor) -> None:
        """A grid of LR (as the backbone saw it) / SR / HR crops, saved under images/ and sent to W&B."""
        if not self.trainer.is_global_zero:
            return
        import torch.nn.functional as F
        from PIL import Image

        from coz.run.atomic import write_atomic

        n = min(self.cfg.log.images, hr.shape[0])
        size = hr.shape[-2:]
        lr_view = F.interpolate(x[:n].float(), size=size, mode="nearest") if x.shape[-2:] != size else x[:n]
        rows = [lr_view.float(), ((sr[:n].detach().float().clamp(-1, 1) + 1) / 2), hr[:n].float()]
        grid = torch.cat([torch.cat(list(r), dim=-1) for r in rows], dim=-2)  # (3, 3S, nS)
        array = (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(array)
        path = self.run_dir / "images" / f"step_{self.step:07d}.png"
        write_atomic(path, lambda p: image.save(p, format="PNG"))
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(
                    "samples/lr_sr_hr", images=[image], step=self.step, caption=["rows: LR, SR, HR"]
                )
