"""The schema of ``coz.train_grpo``'s config (conf/train_grpo/train_grpo.yaml) and of each ``critic=``
option (conf/train_grpo/critic/): the keys, their types and what values they allow
(:mod:`coz.run.schema`). Values and their meaning stay in the YAML. The rules that span keys (steps a
multiple of updates, a pinned remote-code critic, ...) are :func:`coz.train_grpo.tool.check_config`'s.
"""

# No ``from __future__ import annotations``: the field types stay classes, not strings, so that
# coz.run.schema.keys_of finds the keys inside the sections (grpo.step=5 -> "did you mean grpo.steps?").
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from coz.prompts.schema import DTYPE, PROMPTS
from coz.run.schema import group, number, one_of, rule, typed, whole, words
from coz.run.shared_schemas import LOGGERS
from coz.train_grpo.loss import AGGREGATIONS, SCALES
from coz.train_grpo.rewards import WORD_MODES


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def interval(low: float, high: float, *, open_low: bool = False, open_high: bool = False):
    """A number from ``low`` to ``high``; an open end excludes its bound: (0, 1] is open at 0."""
    allowed = f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def ok(value: Any) -> bool:
        return (
            _is_number(value)
            and (value > low if open_low else value >= low)
            and (value < high if open_high else value <= high)
        )

    return rule(allowed, ok)


def _depths(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(_is_number(d) and float(d).is_integer() and d >= 0 for d in value)
    )


def _score_range(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(map(_is_number, value)) and value[0] < value[1]


# ------------------------------------------------------------------------------ critic= options
@dataclass
class Keyword:
    name: str = MISSING
    words: list[str] = words()  # may be empty in the YAML: the critic refuses that when it is built
    hit: float = number()
    miss: float = number()


@dataclass
class TinyCritic:
    name: str = MISSING
    seed: int = whole(0)
    max_pixels: int = whole(1)
    max_new_tokens: int = whole(1)
    batch_size: int = whole(1)


@dataclass
class Qwen7B:
    name: str = MISSING
    model: str = MISSING
    revision: str | None = MISSING
    dtype: str = one_of(*DTYPE)
    max_new_tokens: int = whole(1)
    batch_size: int = whole(1)
    max_pixels: int | None = whole(1, null=True)


@dataclass
class InternVL(Qwen7B):
    trust_remote_code: bool = MISSING
    backend: str = one_of("remote_code", "hf")
    image_size: int = whole(1)
    max_tiles: int = whole(1)


CRITICS = {"internvl": InternVL, "qwen7b": Qwen7B, "tiny": TinyCritic, "keyword": Keyword}
# the policy is a Qwen2.5-VL prompt VLM: the other prompt extractors (dape, none) have nothing to train
POLICIES = {name: PROMPTS[name] for name in ("vlm", "vlm_ar1", "tiny_vlm")}


# ------------------------------------------------------------------------------------ sections
@dataclass
class Data:
    root: str = MISSING
    recursive: bool = MISSING
    write_samples: bool = MISSING
    val_fraction: float = interval(0, 1, open_low=True, open_high=True)
    size: int = whole(1)
    factor: int = whole(2)
    depths: list[int] = rule("a non-empty list of zoom depths (whole numbers >= 0)", _depths)
    min_window: int = whole(1)
    position: str = one_of("random", "center")
    max_pixels: int | None = whole(1, null=True)
    num_workers: int = whole(0)


@dataclass
class Lora:
    r: int = whole(1)
    alpha: float = number(above=0)
    dropout: float = interval(0, 1, open_high=True)
    targets: list[str] = words()


@dataclass
class GRPO:
    steps: int = whole(1)
    batch_size: int = whole(1)
    generations: int = whole(2)  # GRPO compares at least 2 completions per pair
    updates_per_generation: int = whole(1)
    max_new_tokens: int = whole(1)
    temperature: float = number(above=0)
    top_k: int = whole(0)  # 0: no top-k truncation
    top_p: float = interval(0, 1, open_low=True)  # 1: no nucleus truncation
    repetition_penalty: float = number(above=0)
    scale_rewards: str = one_of(*SCALES)
    advantage_eps: float = number(0)
    epsilon_low: float = number(0)
    epsilon_high: float = number(0)
    beta: float = number(0)
    loss_aggregation: str = one_of(*AGGREGATIONS)
    gradient_checkpointing: bool = MISSING


@dataclass
class Weights:
    critic: float = number()
    phrase: float = number()
    repetition: float = number()


@dataclass
class RewardsSection:
    weights: Weights = MISSING
    score_range: list[float] = rule("a list of 2 numbers [low, high] with low < high", _score_range)
    blacklist: list[str] = words()
    ngram: int = whole(1)
    repetition_words: str = one_of(*WORD_MODES)
    max_penalty: float = number(maximum=0)  # R_rep in [max_penalty, 0]


@dataclass
class Optim:
    lr: float = number(0)
    betas: list[float] = rule(
        "a list of 2 numbers in [0, 1)",
        lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
    )
    eps: float = number(0)
    weight_decay: float = number(0)
    max_grad_norm: float = number(above=0)
    warmup_steps: int = whole(0)
    schedule: str = one_of("constant", "cosine")


@dataclass
class Val:
    every_n_steps: int = whole(0)  # 0: only at the end (and at step 0 with at_start)
    at_start: bool = MISSING
    limit: int | None = whole(0, null=True)
    pairs_per_image: int = whole(1)
    batch_size: int = whole(1)
    max_new_tokens: int = whole(1)
    repetition_penalty: float | None = number(above=0, null=True)
    samples: int = whole(0)
    rollouts: int = whole(0)


@dataclass
class Checkpoint:
    every_n_steps: int = whole(1)
    keep: int = whole(0)  # 0: all


@dataclass
class TrainerKeys:
    """The ``trainer.*`` keys coz reads itself (coz.run.trainer); any other key goes to
    ``lightning.Trainer`` as given (``+trainer.max_time=...``), which is why ``trainer`` is a free dict
    in the tool's schema and these keys are checked by :func:`check_trainer`."""

    accelerator: str = MISSING
    devices: int | str = whole(1, auto=True)
    num_nodes: int = whole(1)
    strategy: str = MISSING
    progress_bar: bool = MISSING


@dataclass
class _TrainerOnly:
    trainer: TrainerKeys = MISSING


@dataclass
class TrainGRPOTool:
    input: str | None = MISSING
    seed: int = whole(0, 2**32 - 1)  # numpy's (and Lightning's) seed range
    threads: int | str = whole(1, auto=True)
    resume: str | None = MISSING  # auto | none | PATH (coz.run.checkpoint_files.resume_from)
    data: Data = MISSING
    lora: Lora = MISSING
    grpo: GRPO = MISSING
    rewards: RewardsSection = MISSING
    optim: Optim = MISSING
    val: Val = MISSING
    checkpoint: Checkpoint = MISSING
    trainer: dict[str, Any] = MISSING
    prompt: Any = group(POLICIES)
    critic: Any = group(CRITICS)
    logger: Any = group(LOGGERS)


def check_trainer(cfg: DictConfig) -> None:
    """The ``trainer.*`` keys coz reads (:class:`TrainerKeys`), each refused in one line as the schema's."""
    mine = {spec.name for spec in fields(TrainerKeys)}
    keys = OmegaConf.create({"trainer": {k: v for k, v in cfg.trainer.items() if k in mine}})
    typed(_TrainerOnly, keys)
