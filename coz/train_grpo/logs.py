"""What a GRPO run records (on the first process only): CSV files that are the run's record, and
optionally the same on Weights & Biases (``logger=wandb``, offline unless ``WANDB_MODE`` says
otherwise; a resumed run continues its W&B run).

- ``rewards.csv``: the validation rewards per step, the paper's Figures 6 and 7 (critic, phrase,
  repetition, total; plus the critic's parse failures); ``rewards.png`` plots them.
- ``train.csv``: one row per optimizer step (rewards of the rollouts, loss, KL, clip ratio, grad norm,
  learning rate, completion length, seconds spent generating, scoring and updating).
- ``samples.csv`` and ``samples/``: a table of validation pairs with their prompts and rewards, the
  pictures of those pairs saved once.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from PIL import Image

REWARD_FIELDS = ("step", "critic", "phrase", "repetition", "total", "critic_failures", "pairs", "seconds")
SAMPLE_FIELDS = (
    "step",
    "pair",
    "source",
    "depth",
    "prompt",
    "critic_answer",
    "critic",
    "phrase",
    "repetition",
    "total",
)

ROLLOUT_FIELDS = (
    "step",
    "pair",
    "completion",
    "critic_answer",
    "critic",
    "phrase",
    "repetition",
    "total",
    "advantage",
)


class CsvFile:
    """A CSV with fixed columns, appended row by row; ``truncate_after(step)`` drops rows of later steps
    (what an interrupted run wrote after its last checkpoint)."""

    def __init__(self, path: Path, fields: tuple[str, ...] | None = None) -> None:
        self.path, self.fields = path, fields

    def append(self, row: dict[str, Any]) -> None:
        if self.fields is None:
            self.fields = tuple(row)
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k, "")) for k in self.fields})

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, [r for r in reader if int(r["step"]) <= step]
        from coz.run.atomic import write_atomic

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)

        write_atomic(self.path, write)
        self.fields = tuple(fields or ())


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


class RunLogs:
    """The run's CSV files and (``logger=wandb``) its W&B run."""

    def __init__(self, run_dir: Path, wandb_run: Any, resume_step: int | None) -> None:
        """``wandb_run``: the W&B run of the trainer's logger (``logger=wandb|both``:
        :func:`coz.run.lightning_loggers.wandb_experiment`), or None."""
        self.run_dir = run_dir
        self.rewards = CsvFile(run_dir / "rewards.csv", REWARD_FIELDS)
        self.train = CsvFile(run_dir / "train.csv")
        self.samples = CsvFile(run_dir / "samples.csv", SAMPLE_FIELDS)
        self.rollouts = CsvFile(run_dir / "rollouts.csv", ROLLOUT_FIELDS)
        # rows after the checkpoint trained from are the past of a run that crashed: drop them (a fresh
        # start drops all, e.g. those of a start killed before its first checkpoint)
        for log in (self.rewards, self.train, self.samples, self.rollouts):
            log.truncate_after(resume_step if resume_step is not None else -1)
        self.wandb = wandb_run  # the CSV files are written either way: the run's record
        if self.wandb is not None:
            self.wandb.define_metric("step")
            self.wandb.define_metric("*", step_metric="step")

    def log_train(self, row: dict[str, Any]) -> None:
        self.train.append(row)
        if self.wandb:
            self.wandb.log({"step": row["step"], **{f"train/{k}": v for k, v in row.items() if k != "step"}})

    def log_validation(self, row: dict[str, Any], samples: list[dict[str, Any]], pictures: dict) -> None:
        self.rewards.append(row)
        for sample in samples:
            self.samples.append(sample)
        # redrawn at every validation: the curves can be watched while the run goes on
        plot_rewards(self.rewards.rows(), self.run_dir / "rewards.png", self.train.rows())
        folder = self.run_dir / "samples"
        for index, (first, second) in pictures.items():
            path = folder / f"pair_{index:03d}.png"
            if not path.exists():
                folder.mkdir(exist_ok=True)
                from coz.run.atomic import write_atomic

                strip = side_by_side(first, second)
                write_atomic(path, lambda p, s=strip: s.save(p, format="PNG"))
        if self.wandb:
            import wandb

            payload = {"step": row["step"], **{f"val/{k}": v for k, v in row.items() if k != "step"}}
            table = wandb.Table(
                columns=[
                    "pair",
                    "views",
                    "prompt",
                    "critic_answer",
                    "critic",
                    "phrase",
                    "repetition",
                    "total",
                ]
            )
            for s in samples:
                path = folder / f"pair_{s['pair']:03d}.png"
                table.add_data(
                    s["pair"],
                    wandb.Image(str(path)) if path.exists() else None,
                    s["prompt"],
                    s.get("critic_answer", ""),
                    s["critic"],
                    s["phrase"],
                    s["repetition"],
                    s["total"],
                )
            payload["val/samples"] = table
            self.wandb.log(payload)

    def log_rollouts(self, step: int, rollouts: list[dict[str, Any]]) -> None:
        """A few sampled training completions of the step with the critic's raw answer, their rewards
        and advantages: what the policy is actually being pushed towards."""
        for row in rollouts:
            self.rollouts.append({"step": step, **row})
        if self.wandb and rollouts:
            import wandb

            columns = list(ROLLOUT_FIELDS[1:])
            table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rollouts])
            self.wandb.log({"step": step, "train/rollouts": table})

    def close(self) -> None:
        if self.wandb:
            self.wandb.finish()
            self.wandb = None


def side_by_side(first: Image.Image, second: Image.Image, size: int = 256) -> Image.Image:
    canvas = Image.new("RGB", (2 * size + 8, size), "white")
    canvas.paste(first.resize((size, size), Image.BICUBIC), (0, 0))
    canvas.paste(second.resize((size, size), Image.BICUBIC), (size + 8, 0))
    return canvas


def trailing_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_rewards(
    rows: list[dict[str, str]], path: Path, train: list[dict[str, str]] | None = None
) -> Path | None:
    """The four validation reward curves (greedy prompts) against the step, as the paper's Figures 6
    and 7; with ``train``, also the sampled completions' rewards, a trailing mean over the steps
    between two validations, in a lighter line."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(r["step"]) for r in rows]
    window = max(1, steps[1] - steps[0]) if len(steps) > 1 else 1
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    # fixed margins: constrained layout measures every tick label and drew the figure twice, half of a
    # tiny run's plotting time (the plot is redrawn at each validation)
    fig.subplots_adjust(left=0.045, right=0.99, bottom=0.17, top=0.9, wspace=0.25)
    titles = {
        "critic": "Critic reward",
        "phrase": "Phrase exclusion reward",
        "repetition": "Repetition penalty",
        "total": "Total reward",
    }
    for ax, (key, title) in zip(axes, titles.items(), strict=True):
        if train:
            values = trailing_mean([float(r[key]) for r in train], window)
            label = f"training (sampled, mean of {window})"
            ax.plot([int(r["step"]) for r in train], values, color="tab:orange", alpha=0.6, label=label)
        ax.plot(steps, [float(r[key]) for r in rows], marker="o", markersize=3, label="validation (greedy)")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if train:
        axes[-1].legend(fontsize=7, loc="best")
    from coz.run.atomic import write_atomic

    write_atomic(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return path
