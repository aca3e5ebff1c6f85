"""The schema of ``coz.evaluate``'s config (conf/evaluate/evaluate.yaml) and of its own groups
(``dataset=``, ``method=``, ``metrics=``; ``experiment=`` presets only set other keys), on the keys
it shares with coz.zoom (:class:`coz.zoom.schema.ChainKeys`). See :mod:`coz.run.schema`.

:func:`typed_config` is the tool's entry: the typed config, then the rules that join several keys
(:func:`check_config`). :class:`CheckBeforeSweep` applies it once to a ``-m`` sweep's config, before
the sweep makes its folder, so a bad value is one line instead of one failure per job.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, fields
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from coz.run.exit_codes import USAGE
from coz.run.schema import ConfigError, Rule, number, one_of, rule, typed, whole, words
from coz.zoom.schema import ChainKeys


@dataclass
class Dataset:
    """``dataset=`` (div2k, div8k, folder, samples): ``name`` is the rows' label, not a choice."""

    name: str | None = MISSING  # null: the folder's name
    root: str | None = MISSING
    limit: int | None = whole(1, null=True)


@dataclass
class Method:
    """``method=`` (nn, direct, coz, ...): the zoom and prompt options it picks, and a label."""

    label: str | None = MISSING


@dataclass
class Metrics:
    """``metrics=`` (paper, offline, none): pyiqa names (checked when they load)."""

    names: list[str] = words()
    full_reference: list[str] = words()
    gt_min_ratio: float = number(0)
    worst: dict[str, float] = MISSING
    seed: int = whole(0)


@dataclass
class Shard:
    index: int = whole(0)  # below count: check_config
    count: int = whole(1)


@dataclass
class Report:
    strips: int = whole(0)
    save_states: bool = MISSING
    html: bool = MISSING
    plots: bool = MISSING


@dataclass
class TrainerKeys:
    """The ``trainer.*`` keys coz.evaluate reads itself; any other key goes to lightning.Trainer as
    it is (``+trainer.max_time=...``), so the section is a free dict checked by :func:`check_config`."""

    accelerator: str = one_of("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")
    devices: int | str = whole(1, auto=True)
    num_nodes: int = whole(1)
    strategy: str = rule(
        "a Lightning strategy name, e.g. auto, ddp or ddp_spawn", lambda v: isinstance(v, str)
    )


@dataclass
class EvaluateTool(ChainKeys):
    table: str = MISSING
    paper_dataset: str | None = MISSING
    labels: dict[str, str] = MISSING
    not_implemented: list[str] = words()
    needs_adapter: bool = MISSING
    task: str = one_of("metrics", "overlap")
    input: str | None = MISSING
    method: Method = MISSING
    dataset: Dataset = MISSING
    metrics: Metrics = MISSING
    trainer: dict[str, Any] = MISSING
    shard: Shard = MISSING
    report: Report = MISSING


def typed_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` typed and checked: what coz.evaluate runs on, or a one-line :class:`ConfigError`."""
    cfg = typed(EvaluateTool, without_other_prompts_keys(cfg))
    check_config(cfg)
    return cfg


def without_other_prompts_keys(cfg: DictConfig) -> DictConfig:
    """``cfg`` without the ``prompt.`` keys that only another prompt option has. A sweep's jobs share
    one config: a table preset sets its VLM rows' keys (``prompt.clean``, ``prompt.max_new_tokens``,
    ``prompt.adapter``) for every job, and users pass ``prompt.adapter=`` to the whole sweep, so the
    null and DAPE jobs leave them out. A key no prompt option has is still refused."""
    from coz.prompts.schema import PROMPTS

    prompt = cfg.get("prompt") if isinstance(cfg, DictConfig) else None
    if not isinstance(prompt, DictConfig) or prompt.get("name") not in PROMPTS:
        return cfg
    own = {spec.name for spec in fields(PROMPTS[prompt.name])}
    anyones = {spec.name for schema in PROMPTS.values() for spec in fields(schema)}
    foreign = [key for key in prompt if key not in own and key in anyones]
    if not foreign:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for key in foreign:
            del cfg.prompt[key]
    return cfg


def check_config(cfg: DictConfig) -> None:
    """The rules no single key's type or range can say."""
    if cfg.zoom.mode == "full":  # the tables score the 512-px views of the zoom chain
        raise ConfigError(
            "zoom=full: evaluate scores the zoom chain; use recursive_multiscale, recursive, onestep, nearest or bicubic"
        )
    if cfg.shard.index >= cfg.shard.count:
        raise ConfigError(f"shard.index={cfg.shard.index}: must be below shard.count={cfg.shard.count}")
    for spec in fields(TrainerKeys):
        found: Rule = spec.metadata["rule"]
        if spec.name not in cfg.trainer:
            raise ConfigError(f"trainer.{spec.name}: missing; it must be {found.allowed}")
        value = cfg.trainer[spec.name]
        if not found.ok(value):
            raise ConfigError(f"trainer.{spec.name}={value}: must be {found.allowed}")


class CheckBeforeSweep(Callback):
    """A Hydra callback (evaluate.yaml's ``hydra.callbacks``): a ``-m`` sweep's config, typed once
    before the sweep writes anything. A value the sweep itself varies is checked per job."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        job = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
        try:
            hydra_args = OmegaConf.select(config, "hydra.overrides.hydra", default=None) or []
            given = [o for o in hydra_args if o.startswith("hydra.run.dir=")]
            if given and not any(o.startswith("hydra.sweep.dir=") for o in hydra_args):
                # a sweep writes under hydra.sweep.dir: the folder given alone would be ignored
                raise ConfigError(
                    f"{given[0]}: this is a sweep (a preset or -m), whose jobs go in numbered folders under "
                    f"hydra.sweep.dir=; give hydra.sweep.dir={given[0].split('=', 1)[1]} (a rerun into it resumes)"
                )
            typed_config(job)
        except ConfigError as err:  # Hydra turns a callback's exception into a warning: exit here
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(USAGE) from None
