"""The GRPO loop as a Lightning module (paper Algorithm 2).

One training step = one optimizer step. Every ``updates_per_generation`` steps a generation round
begins: the step's view pairs are rendered with coz.zoom's messages, G completions per pair are
sampled, scored by the critic and the two rule rewards, the rewards of every process are gathered and
turned into group-relative advantages, and the old (when updates > 1) and reference (when beta != 0)
log-probabilities are taken. Each step of the round then updates the adapter with the clipped-ratio
loss. Validation (greedy decoding, as coz.zoom runs the VLM) runs at step 0, every
``val.every_n_steps`` and at the end, over the fixed validation pairs split between processes.

Only the adapter is trainable and only the adapter is checkpointed: the base model and the critic are
rebuilt from their sources on resume. Each step reseeds torch from (seed, rank, step), and the pairs
of a step are a function of the same, so a resumed run continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from coz.run.divergence import check_training
from coz.train_grpo.data import Geometry, Pair, TrainPairs, ValPairs, val_specs
from coz.train_grpo.loss import group_advantages, grpo_loss
from coz.train_grpo.rewards import Rewards, RewardWeights

log = logging.getLogger("coz.train_grpo")

# Per completion: critic, phrase, repetition, total, critic failed (0/1).
N_REWARD_COLUMNS = 5


def geometry(cfg: DictConfig) -> Geometry:
    d = cfg.data
    return Geometry(d.size, d.factor, tuple(d.depths), d.min_window, d.position)


def build_rewards(cfg: DictConfig) -> Rewards:
    r = cfg.rewards
    return Rewards(
        RewardWeights(r.weights.critic, r.weights.phrase, r.weights.repetition),
        blacklist=list(r.blacklist),
        ngram=r.ngram,
        max_penalty=r.max_penalty,
        score_range=tuple(r.score_range),
        repetition_words=r.repetition_words,
    )


def _identity(batch):
    return batch


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7919 + step) % 2**63


class GRPOModule(L.LightningModule):
    def __init__(self, cfg: DictConfig, run_dir: str | Path, train: list[Path], val: list[Path]) -> None:
        super().__init__()
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.train_paths, self.val_paths = list(train), list(val)
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold the adapter only
        self.geometry = geometry(cfg)
        self.rewards = build_rewards(cfg)
        self.resume_step: int | None = None
        self._round: dict[str, Any] | None = None
        self._last_validated = -1
        self.policy = None  # built in setup(), in each process, on its device

    # ------------------------------------------------------------------ set-up, in each process
    def setup(self, stage: str) -> None:
        from coz.run.cpu_share import CpuShare
        from coz.run.runtime import fixed_threads, seed_everything
        from coz.train_grpo.critic import build_critic
        from coz.train_grpo.policy import PolicyIO, build_policy

        cfg = self.cfg
        seed_everything(cfg.seed)
        self.cpu_share = CpuShare(threads=fixed_threads(cfg.threads))
        device = self.trainer.strategy.root_device
        self.policy, processor = build_policy(
            cfg.prompt, cfg.lora, device, gradient_checkpointing=cfg.grpo.gradient_checkpointing
        )
        self.io = PolicyIO(self.policy, processor, multiscale=cfg.prompt.multiscale)
        self.critic = build_critic(cfg.critic, device)
        self.train_data = TrainPairs(
            self.train_paths,
            self.geometry,
            cfg.grpo.batch_size,
            cfg.seed,
            rank=self.global_rank,
            updates=cfg.grpo.updates_per_generation,
            max_pixels=cfg.data.max_pixels,
        )
        v = cfg.val
        self.val_specs = val_specs(len(self.val_paths), self.geometry, cfg.seed, v.limit, v.pairs_per_image)
        self.logs = None
        if self.global_rank == 0:
            from coz.run.lightning_loggers import wandb_experiment
            from coz.train_grpo.logs import RunLogs

            self.logs = RunLogs(self.run_dir, wandb_experiment(self.trainer), self.resume_step)

    def teardown(self, stage: str) -> None:
        if getattr(self, "cpu_share", None):
            self.cpu_share.close()
        if getattr(self, "logs", None):
            self.logs.close()

    def configure_optimizers(self):
        o = self.cfg.optim
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
        )
        from transformers import get_scheduler

        # transformers' schedules: a linear warm-up (step s of the first w trains at lr * s / w, 0 at the
        # first step), then constant or a half cosine to 0 at grpo.steps; w = 0: no warm-up. Stepped once
        # per optimizer step, in training_step.
        names = {"constant": "constant_with_warmup", "cosine": "cosine"}  # "constant" would drop the warm-up
        scheduler = get_scheduler(
            names[o.schedule],
            optimizer,
            num_warmup_steps=o.warmup_steps,
            num_training_steps=self.cfg.grpo.steps,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        workers = self.cfg.data.num_workers
        self.train_data.start = self.global_step  # resume: the pair stream continues where it stopped
        return DataLoader(
            self.train_data,
            batch_size=None,
            collate_fn=_identity,
            num_workers=workers,
            persistent_workers=False,
            prefetch_factor=2 if workers else None,
        )

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        return batch  # PIL images: the processor places the tensors

    # ------------------------------------------------------------------ checkpoints: the adapter only
    @property
    def completed_steps(self) -> int:
        """Optimizer steps done (what the checkpoints count: coz.run.checkpoints.StepCheckpoint)."""
        return int(self.global_step)

    def trainable_keys(self) -> set[str]:
        return {f"policy.{n}" for n, p in self.policy.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["coz_grpo"] = {"tool": "coz.train_grpo", "step": self.global_step}
        if self.trainer.is_global_zero:
            self.save_adapter(self.run_dir / "adapters" / f"step-{self.global_step:06d}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = self.trainable_keys() - set(checkpoint["state_dict"])
        if missing:
            from coz.errors import CozError

            raise CozError(
                f"checkpoint holds no weights for {len(missing)} adapter tensor(s), e.g. {sorted(missing)[0]}: "
                "it was written with another lora: config"
            )

    def save_adapter(self, folder: Path) -> Path:
        """``save_pretrained`` into ``folder`` atomically (written beside it, then renamed)."""
        import shutil

        tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
        shutil.rmtree(tmp, ignore_errors=True)
        self.policy.save_pretrained(str(tmp))
        from coz.run.atomic import usual_mode

        for file in tmp.rglob("*"):  # safetensors writes 0600 files; outputs get the usual mode
            if file.is_file():
                usual_mode(file)
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():  # moved aside, not deleted, until the new one is in place
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        return folder

    # ------------------------------------------------------------------ the loop
    def on_train_start(self) -> None:
        from coz.run.progress import Progress
        from coz.run.trainer import follow_the_configured_lr

        follow_the_configured_lr(self.trainer, self.cfg.optim.lr)  # optim.lr may change on a resume

        # our own bar, not Lightning's: the pair stream is endless (Lightning would show "Epoch 0/-2"),
        # and a resumed run counts on from its checkpoint towards grpo.steps
        shown = self.trainer.is_global_zero and self.cfg.trainer.progress_bar
        steps = self.cfg.grpo.steps
        self.bar = Progress(steps, "train_grpo", "steps", initial=self.global_step, enabled=shown)
        if self.global_step == 0 and self.cfg.val.at_start:
            self.validate_policy(0)

    def on_train_end(self) -> None:
        if getattr(self, "bar", None):
            self.bar.close()
        if self.trainer.is_global_zero:
            self.save_adapter(self.run_dir / "adapter")

    def training_step(self, batch: tuple[int, list[Pair] | None], batch_idx: int) -> None:
        index, pairs = batch
        step = self.global_step
        if index != step:
            raise RuntimeError(f"pair stream at batch {index} but the trainer is at step {step}")
        torch.manual_seed(step_seed(self.cfg.seed, self.global_rank, step))
        self.cpu_share.refresh()
        g = self.cfg.grpo
        timings = {}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if pairs is not None:
            self._round = self.rollout(pairs, timings)
        elif self._round is None:
            raise RuntimeError("resumed inside a generation round (checkpoint steps must divide by updates)")
        r = self._round

        started = time.perf_counter()
        logps = self.io.token_logps(r["rollout"], g.temperature)
        old = r["old_logps"] if r["old_logps"] is not None else logps.detach()
        loss, stats = grpo_loss(
            logps,
            old,
            r["advantages"],
            r["rollout"].mask,
            ref_logps=r["ref_logps"],
            beta=g.beta,
            epsilon_low=g.epsilon_low,
            epsilon_high=g.epsilon_high,
            aggregation=g.loss_aggregation,
            max_completion_length=g.max_new_tokens,
        )
        checkpoints = self.run_dir / "checkpoints"
        check_training("train_grpo", step + 1, "loss term", {"grpo": loss}, checkpoints)
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        trained = ((n, p) for n, p in self.policy.named_parameters() if p.requires_grad)
        check_training("train_grpo", step + 1, "weight", dict(trained), checkpoints)
        timings["update_s"] = time.perf_counter() - started
        if self.device.type == "cuda":  # this step's peak, generation and update together
            timings["peak_gpu_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20

        done = step + 1
        if getattr(self, "bar", None):
            self.bar.set_postfix(reward=float(r["summary"]["total"]), loss=float(loss.detach()))
            self.bar.update(1)
        if self.logs:
            row = {"step": done, "loss": float(loss.detach()), **r["summary"], "grad_norm": float(grad_norm)}
            row.update({k: float(v) for k, v in stats.items()}, lr=lr, **timings)
            self.logs.log_train(row)
        every = self.cfg.val.every_n_steps
        if (every > 0 and done % every == 0) or done == g.steps:
            if self.logs:
                self.logs.log_rollouts(done, rollout_rows(r, g.generations, self.cfg.val.rollouts))
            self.validate_policy(done)

    def rollout(self, pairs: list[Pair], timings: dict[str, float]) -> dict[str, Any]:
        """Sample G completions per pair, score them, and compute the advantages (Algorithm 2, 2-17)."""
        from coz.train_grpo.policy import sampling_kwargs

        g = self.cfg.grpo
        G = g.generations
        firsts = [p.first for p in pairs for _ in range(G)]
        seconds = [p.second for p in pairs for _ in range(G)]
        started = time.perf_counter()
        inputs = self.io.encode(firsts, seconds)
        rollout = self.io.generate(inputs, **sampling_kwargs(g, self.io.pad_id()))
        timings["generate_s"] = time.perf_counter() - started

        started = time.perf_counter()
        answers = self.critic.answer(rollout.texts, firsts, seconds)
        rewards = self.rewards.score(rollout.texts, answers)
        timings["score_s"] = time.perf_counter() - started
        local = torch.tensor(
            [[x.critic, x.phrase, x.repetition, x.total, float(x.critic_failed)] for x in rewards],
            device=self.device,
        )  # (N, 5)
        everyone = self.all_gather(local).reshape(-1, N_REWARD_COLUMNS)  # (world * N, 5)
        advantages = group_advantages(everyone[:, 3], G, g.scale_rewards, g.advantage_eps)
        n = len(rewards)
        advantages = advantages[self.global_rank * n : (self.global_rank + 1) * n]

        old_logps = ref_logps = None
        if g.updates_per_generation > 1 or g.beta != 0.0:
            with torch.no_grad():
                if g.updates_per_generation > 1:
                    old_logps = self.io.token_logps(rollout, g.temperature)
                if g.beta != 0.0:
                    ref_logps = self.io.reference_logps(rollout, g.temperature)
        group_std = everyone[:, 3].view(-1, G).std(dim=1) if G > 1 else torch.zeros(1)
        means = everyone.mean(dim=0)
        summary = {
            "critic": float(means[0]),
            "phrase": float(means[1]),
            "repetition": float(means[2]),
            "total": float(means[3]),
            "critic_failures": float(means[4]),
            "total_std": float(everyone[:, 3].std()) if len(everyone) > 1 else 0.0,
            "zero_std_groups": float((group_std < 1e-6).float().mean()),
            "completion_tokens": float(rollout.mask.sum(1).float().mean()),
        }
        return {
            "rollout": rollout,
            "advantages": advantages.to(self.device),
            "old_logps": old_logps,
            "ref_logps": ref_logps,
            "summary": summary,
            "texts": rollout.texts,
            "answers": answers,
            "rewards": rewards,
        }

    # ------------------------------------------------------------------ validation (Figures 6 and 7)
    @torch.no_grad()
    def validate_policy(self, step: int) -> dict[str, float]:
        """Greedy prompts for this process's share of the validation pairs; the reward means over all."""
        from coz.train_grpo.policy import greedy_kwargs

        if step == self._last_validated:
            return {}
        self._last_validated = step
        started = time.perf_counter()
        v = self.cfg.val
        mine = self.val_specs[self.global_rank :: self.trainer.world_size]
        loader = DataLoader(
            ValPairs(
                self.val_paths,
                mine,
                self.geometry,
                self.cfg.data.max_pixels,
            ),
            batch_size=v.batch_size,
            collate_fn=_identity,
            num_workers=self.cfg.data.num_workers,
        )
        sums = torch.zeros(N_REWARD_COLUMNS + 1, device=self.device)  # the five columns, then the count
        samples, pictures = [], {}
        kwargs = greedy_kwargs(v, self.io.pad_id())
        from tqdm.auto import tqdm

        shown = self.global_rank == 0 and self.cfg.trainer.progress_bar
        for batch in tqdm(loader, desc=f"validation at step {step}", leave=False, disable=not shown):
            pairs = [p for p in batch if p is not None]
            if not pairs:
                continue
            firsts, seconds = [p.first for p in pairs], [p.second for p in pairs]
            rollout = self.io.generate(self.io.encode(firsts, seconds), **kwargs)
            answers = self.critic.answer(rollout.texts, firsts, seconds)
            for pair, text, reward in zip(
                pairs, rollout.texts, self.rewards.score(rollout.texts, answers), strict=True
            ):
                sums += torch.tensor(
                    [
                        reward.critic,
                        reward.phrase,
                        reward.repetition,
                        reward.total,
                        float(reward.critic_failed),
                        1.0,
                    ],
                    device=self.device,
                )
                if self.global_rank == 0 and len(samples) < v.samples:
                    samples.append(
                        {
                            "step": step,
                            "pair": pair.index,
                            "source": pair.source,
                            "depth": pair.depth,
                            "prompt": text,
                            "critic_answer": reward.critic_answer,
                            "critic": reward.critic,
                            "phrase": reward.phrase,
                            "repetition": reward.repetition,
                            "total": reward.total,
                        }
                    )
                    pictures[pair.index] = (pair.first, pair.second)
        totals = self.all_gather(sums).reshape(-1, N_REWARD_COLUMNS + 1).sum(dim=0)
        count = max(1.0, float(totals[-1]))
        row = {
            "step": step,
            "critic": float(totals[0]) / count,
            "phrase": float(totals[1]) / count,
            "repetition": float(totals[2]) / count,
            "total": float(totals[3]) / count,
            "critic_failures": float(totals[4]) / count,
            "pairs": int(totals[-1]),
            "seconds": time.perf_counter() - started,
        }
        if row["pairs"] == 0:  # no validation image could be read: nothing to report, not a zero
            log.warning("step %d validation: no readable validation pair; nothing logged", step)
            return row
        if self.logs:
            self.logs.log_validation(row, samples, pictures)
        log.info(
            "step %d validation: total %.4f (critic %.4f, phrase %.4f, repetition %.4f) over %d pairs",
            step,
            row["total"],
            row["critic"],
            row["phrase"],
            row["repetition"],
            row["pairs"],
        )
        return row


def rollout_rows(round_: dict[str, Any], generations: int, count: int) -> list[dict[str, Any]]:
    """The first ``count`` completions of a generation round (this process's), with the critic's raw
    answer, the rewards and the advantage: the first pair's group first, as the loss saw them."""
    rows = []
    advantages = round_["advantages"].tolist()
    for i, (text, answer, reward) in enumerate(
        zip(round_["texts"], round_["answers"], round_["rewards"], strict=True)
    ):
        if i >= count:
            break
        rows.append(
            {
                "pair": i // generations,
                "completion": text,
                "critic_answer": answer if isinstance(answer, str) else str(answer),
                "critic": reward.critic,
                "phrase": reward.phrase,
                "repetition": reward.repetition,
                "total": reward.total,
                "advantage": advantages[i],
            }
        )
    return rows
