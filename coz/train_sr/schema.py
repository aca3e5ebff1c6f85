"""The schema of ``coz.train_sr``'s config (conf/train_sr/train_sr.yaml) and of its ``degradation=``
options (conf/train_sr/degradation/): the keys, their types and what values they allow
(:mod:`coz.run.schema`). Values and their meaning stay in the YAML. ``backbone=`` and ``logger=`` reuse
the shared schemas; ``trainer.*`` also takes any other ``lightning.Trainer`` argument, so only the keys
coz reads itself are declared (:class:`TrainerKeys`, checked by :func:`check_trainer`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import MISSING, DictConfig

from coz.backbones.schema import BACKBONES
from coz.run.schema import ConfigError, group, number, numbers, one_of, rule, whole, words
from coz.run.shared_schemas import LOGGERS
from coz.train_sr.degradation import KINDS
from coz.train_sr.generators import GENERATORS
from coz.train_sr.kernels import KERNEL_TYPES
from coz.train_sr.prompts import MODES

# the backbones coz.train_sr trains (tiny_realesrgan and tiny_span have no config: tests build them)
TRAINABLE = {name: schema for name, schema in BACKBONES.items() if name in GENERATORS}
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp", "deepspeed")
# lightning.Trainer's precision values (lightning.fabric.connector._PRECISION_INPUT), and auto
PRECISIONS = (
    "auto",
    *("64-true", "64", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true"),
    *("transformer-engine", "transformer-engine-float16"),
)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def defaulted(spec: Any, default: Any) -> Any:
    """``spec`` (a rule's field) with a default: for the keys of a list's items, which no YAML fills."""
    return field(default=default, metadata=spec.metadata)


# ------------------------------------------------------------------------------------------ data
@dataclass
class Source:
    """One item of ``data.sources``: ``prob`` and ``limit`` may be left out."""

    path: str = MISSING
    prob: Any = defaulted(
        rule(
            "a number >= 0 or size",
            lambda v: v == "size" or (isinstance(v, int | float) and not isinstance(v, bool) and v >= 0),
        ),
        1.0,
    )
    limit: int | None = defaulted(whole(1, null=True), None)


@dataclass
class Data:
    sources: list[Source] = rule(
        "your training images, e.g. [{path: /data/LSDIR, prob: 1}, {path: /data/ffhq.txt, prob: 1, "
        "limit: 10000}] (folders, or .txt lists of paths)",
        lambda v: len(v) > 0,
    )
    crop: int = rule(
        "a positive multiple of 32 (4x down, then the VAE's 8x)",
        lambda v: _whole(v) and v > 0 and v % 32 == 0,
    )
    hflip: bool = MISSING
    vflip: bool = MISSING
    batch_size: int = whole(1)
    num_workers: int = whole(0)
    max_tries: int = whole(1)


@dataclass
class Stage:
    """One item of ``stages``; ``name`` left out: the degradation's."""

    name: str | None = None
    degradation: str = one_of(*KINDS)
    steps: int = whole(1)


# ----------------------------------------------------------------------------------- degradation
@dataclass
class Kernel:
    kernel_list: list[str] = rule(
        "a list of " + ", ".join(KERNEL_TYPES), lambda v: all(k in KERNEL_TYPES for k in v)
    )
    kernel_prob: list[float] = numbers(minimum=0)
    sinc_prob: float = number(0, 1)
    sigma: list[float] = numbers(2, minimum=0)
    betag_range: list[float] = numbers(2, minimum=0)
    betap_range: list[float] = numbers(2, minimum=0)


@dataclass
class FirstDegradation:
    resize_prob: list[float] = numbers(3, 0, 1)  # up, down, keep
    resize_range: list[float] = numbers(2, minimum=0)
    gaussian_noise_prob: float = number(0, 1)
    noise_range: list[float] = numbers(2, minimum=0)
    poisson_scale_range: list[float] = numbers(2, minimum=0)
    gray_noise_prob: float = number(0, 1)
    jpeg_range: list[float] = numbers(2, 0, 100)
    kernel: Kernel = MISSING


@dataclass
class SecondDegradation(FirstDegradation):
    blur_prob: float = number(0, 1)


@dataclass
class RealESRGANDegradation:
    name: str = MISSING
    scale: int = whole(1)
    resize_back: str = one_of("random", "bicubic")
    round_8bit: bool = MISSING
    bicubic_back: str = one_of("pil_bicubic", "bicubic")
    first: FirstDegradation = MISSING
    second: SecondDegradation = MISSING
    final_sinc_prob: float = number(0, 1)


DEGRADATIONS = {"realesrgan": RealESRGANDegradation}


# ------------------------------------------------------------------------------- model and losses
@dataclass
class Model:
    latent_shift: str | None = one_of("train", "test", "none", null=True)
    negative_prompt: str = MISSING


@dataclass
class Loss:
    l2: float = number(0)
    lpips: float = number(0)
    lpips_weights: str | None = MISSING
    dmd: float = number(0)
    reg_diffusion: float = number(0)


def _t_range(value: Any) -> bool:
    return value is None or (len(value) == 2 and all(0 <= t <= 1000 for t in value) and value[0] < value[1])


@dataclass
class Regulariser:
    rank: int = whole(1)
    alpha: float | None = number(above=0, null=True)
    targets: list[str] | None = words(null=True)
    fake_adapters: str = one_of("others", "all")  # SD2.1's fake UNet
    cfg_scale: float | None = number(0, null=True)
    shift: float = number(above=0)
    sigma_fp16: bool = MISSING
    timesteps: str | None = one_of("batch", "sample", null=True)
    loss_space: str | None = one_of("x0", "target", null=True)
    dmd_t_range: list[int] | None = rule("[low, high] with 0 <= low < high <= 1000 (or null)", _t_range)
    diffusion_t_range: list[int] | None = rule("[low, high] with 0 <= low < high <= 1000 (or null)", _t_range)


@dataclass
class Optim:
    lr: float = number(0)
    betas: list[float] = numbers(2, 0, 1)
    weight_decay: float = number(0)
    eps: float = number(0)
    max_grad_norm: float = number(0)
    accumulate: int = whole(1)
    warmup_steps: int = whole(0)


@dataclass
class Prompts:
    mode: str | None = one_of(*MODES, null=True)
    ram_weights: str | None = MISSING
    tags: str | None = MISSING
    thresholds: str | None = MISSING
    dape_weights: str | None = MISSING
    text: str = MISSING
    seed: int = whole(0)
    threshold: float = number(0, 1)


# ----------------------------------------------------------------------- checkpoints, logs, val
@dataclass
class Checkpoint:
    every_n_steps: int = whole(0)
    keep: int = whole(0)


@dataclass
class Log:
    every_n_steps: int = whole(0)
    images_every: int = whole(0)
    images: int = whole(1)
    progress_bar: bool = MISSING


@dataclass
class Val:
    every_n_steps: int = whole(0)
    images: int = whole(1)
    source: str | None = MISSING
    metrics: list[str] = words()


@dataclass
class TrainerKeys:
    """The ``trainer.*`` keys coz reads itself (coz.run.trainer.INTERPRETED)."""

    accelerator: str = rule("text: auto, cpu, gpu...", lambda v: isinstance(v, str))
    devices: Any = rule(
        "a whole number >= 1, -1 (every GPU) or auto",
        lambda v: v == "auto" or (_whole(v) and (v >= 1 or v == -1)),
    )
    num_nodes: int = whole(1)
    strategy: str = one_of(*STRATEGIES)
    precision: Any = rule(
        "one of " + ", ".join(PRECISIONS), lambda v: not isinstance(v, bool) and str(v) in PRECISIONS
    )


def check_trainer(trainer: DictConfig) -> None:
    """The declared keys of ``trainer``, and no other key that lightning.Trainer does not take."""
    from coz.run.trainer import trainer_kwargs

    for spec in fields(TrainerKeys):
        key = f"trainer.{spec.name}"
        if spec.name not in trainer:
            raise ConfigError(f"{key} is missing: give {key}=...")
        value = trainer[spec.name]
        found = spec.metadata["rule"]
        if not found.ok(value):
            raise ConfigError(f"{key}={value}: must be {found.allowed}")
    trainer_kwargs(trainer)  # +trainer.max_tme=...: one line now, not after the run folder is written


# ------------------------------------------------------------------------------------- the tool
@dataclass
class TrainSR:
    seed: int = whole(0, 2**32 - 1)  # numpy's (and Lightning's) seed range
    threads: int | str = whole(1, auto=True)
    resume: str | None = MISSING  # auto, none, a checkpoint or a run folder (coz.run.checkpoint_files)
    gradient_checkpointing: bool = MISSING
    deterministic: bool = MISSING
    data: Data = MISSING
    stages: list[Stage] = rule("a list of at least one {name, degradation, steps}", lambda v: len(v) > 0)
    model: Model = MISSING
    loss: Loss = MISSING
    regulariser: Regulariser = MISSING
    optim: Optim = MISSING
    prompts: Prompts = MISSING
    checkpoint: Checkpoint = MISSING
    log: Log = MISSING
    val: Val = MISSING
    trainer: dict[str, Any] = MISSING  # TrainerKeys, and any other lightning.Trainer argument
    backbone: Any = group(TRAINABLE)
    degradation: Any = group(DEGRADATIONS)
    logger: Any = group(LOGGERS)
