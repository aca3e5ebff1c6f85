"""The evaluation loop as a Lightning module: each process zooms its share of the images, scores
every scale and appends the rows to its own CSV (see :mod:`coz.evaluate.rows`).

Lightning places the process on its device and, with ``trainer.devices > 1``, spawns one worker per
device; :meth:`predict_dataloader` gives each worker every ``world_size``-th image, so each image is
scored exactly once (Lightning's own distributed sampler would pad the last batch with repeats).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader

from coz.chain import ZoomChain
from coz.evaluate.dataset import Item
from coz.evaluate.metrics import Metrics, ground_truth
from coz.evaluate.overlap import overlap_rows
from coz.evaluate.rows import BASE_FIELDS, RowWriter
from coz.images import ImageInputError, load_rgb, prepare_x0
from coz.run.timing import PhaseTimer
from coz.viz import zoom_strip

log = logging.getLogger("coz.evaluate")

OVERLAP_FIELDS = ("overlap_cos", "nonoverlap_cos")


class EvaluationModule(L.LightningModule):
    """Zoom and score ``items`` with the method of the typed ``cfg``; rows go to ``run_dir/rows/``."""

    def __init__(
        self, cfg: DictConfig, run_dir: str | Path, items: list[Item], job: dict[str, Any], label: str = ""
    ) -> None:
        super().__init__()
        self.cfg, self.run_dir, self.items, self.job = cfg, Path(run_dir), items, job
        self.label = label or f"{job['method']} on {job['dataset']}"  # the progress bar's name
        self.chain: ZoomChain | None = None  # built in setup(), in the worker, on its device

    # ------------------------------------------------------------------ set-up, in each process
    def setup(self, stage: str) -> None:
        from coz.run.cpu_share import CpuShare
        from coz.run.runtime import fixed_threads, seed_everything
        from coz.zoom.build import build_chain

        cfg = self.cfg
        seed_everything(cfg.seed)
        device = self.trainer.strategy.root_device
        self.cpu_share = CpuShare(threads=fixed_threads(cfg.threads))
        self.cpu_share.refresh()
        self.timer = PhaseTimer()
        self.chain = build_chain(cfg, device, self.timer)  # the same models and chain as coz.zoom
        m = cfg.metrics
        self.metrics = Metrics(
            list(m.names),
            list(m.full_reference),
            device=device,
            seed=m.seed,
            worst=dict(m.worst),
            gt_min_ratio=m.gt_min_ratio,
        )
        extra = OVERLAP_FIELDS if cfg.task == "overlap" else ()
        part = f"{cfg.shard.index}-{self.global_rank}"
        self.rows = RowWriter(
            self.run_dir / "rows" / f"{part}.csv", [*BASE_FIELDS, *self.metrics.columns, *extra]
        )

    def teardown(self, stage: str) -> None:
        if getattr(self, "cpu_share", None):
            self.cpu_share.close()
        if getattr(self, "bar", None):
            self.bar.close()

    def on_predict_start(self) -> None:
        from coz.run.progress import Progress

        # the unit the user waits on: one image at one scale, zoomed and scored (not Lightning's batches)
        mine = len(self.items[self.global_rank :: self.trainer.world_size])
        label = self.label if self.trainer.world_size == 1 else f"{self.label} (rank 0's share)"
        self.bar = Progress(
            mine * len(self._scales()), label, "image-scales", enabled=self.trainer.is_global_zero
        )

    def predict_dataloader(self) -> DataLoader:
        mine = self.items[self.global_rank :: self.trainer.world_size]
        return DataLoader(mine, batch_size=self.cfg.batch_size, collate_fn=list, num_workers=0)

    def transfer_batch_to_device(self, batch: list[Item], device, dataloader_idx: int) -> list[Item]:
        return batch  # file paths: the images are loaded and placed by the chain

    # ------------------------------------------------------------------ one batch
    def predict_step(self, batch: list[Item], batch_idx: int = 0) -> int:
        loaded = []
        for item in batch:
            try:
                image, _ = load_rgb(item.path, alpha=self.cfg.alpha, max_pixels=self.cfg.max_pixels)
                x0, _ = prepare_x0(image, size=self.chain.size, name=item.path.name)
                loaded.append((item, image, x0))
            except ImageInputError as err:
                self._write_failed(item, str(err), permanent=True)
        if not loaded:
            return 0
        try:
            results = self._zoom([x0 for _, _, x0 in loaded], [item.name for item, _, _ in loaded])
        except Exception as err:  # noqa: BLE001 - retried one by one so one bad image cannot sink its batch
            if len(loaded) == 1:
                self._write_failed(loaded[0][0], f"{type(err).__name__}: {err}")
                return 0
            log.warning("batch failed (%s); retrying its images one by one", err)
            return sum(self.predict_step([item]) for item, _, _ in loaded)
        for (item, image, _), (zoom, times) in zip(loaded, results, strict=True):
            self._write_scores(item, image, zoom, times)
        return len(loaded)

    def _zoom(self, x0s: list[Image.Image], names: list[str]) -> list[tuple[Any, list[dict[str, float]]]]:
        """Zoom a batch; per image and scale the SR and prompt-extraction seconds it took.

        Chain modes report cumulative time (scale 16 took two steps); direct SR and interpolation
        make each scale from x0 alone, so their time is that scale's own (the paper's Table 3)."""
        start = dict(self.timer.seconds)
        marks = []

        def on_step(n: int) -> None:
            marks.append({k: self.timer.seconds.get(k, 0.0) - start.get(k, 0.0) for k in ("sr", "prompt")})
            self.cpu_share.refresh()
            if getattr(self, "bar", None):
                self.bar.set_postfix(f"zoomed x{self.chain.factor ** len(marks)}")

        zooms = self.chain.run(x0s, on_step=on_step, names=names)
        cumulative = self.chain.mode in ("recursive", "recursive_multiscale")
        per_scale = []
        for i, mark in enumerate(marks):
            prev = marks[i - 1] if i and not cumulative else {"sr": 0.0, "prompt": 0.0}
            per_scale.append({k: (mark[k] - prev[k]) / len(x0s) for k in mark})
        return [(zoom, per_scale) for zoom in zooms]

    # ------------------------------------------------------------------ rows
    def _base(self, item: Item, scale: int) -> dict[str, Any]:
        j = self.job
        return {
            "dataset": j["dataset"],
            "method": j["method"],
            "image": item.name,
            "scale": scale,
            "zoom_mode": j["zoom_mode"],
            "backbone": j["backbone"],
            "prompt_mode": j["prompt_mode"],
        }

    def _scales(self) -> list[int]:
        return [self.chain.factor**k for k in range(1, self.chain.steps + 1)]

    def _write_failed(self, item: Item, error: str, permanent: bool = False) -> None:
        """The paper's rule: a failed image scores the worst value of every no-reference metric at
        every scale (full-reference ones stay empty: there may be no ground truth to fail against).
        An unreadable input is final; a failed zoom is tried again by a rerun."""
        log.error("%s", error)
        worst = {c: self.metrics.worst[c] for c in self.metrics.no_reference_columns}
        failed = 1 if permanent else 2
        self.rows.append(
            {
                **self._base(item, s),
                "failed": failed,
                "failed_metrics": len(worst),
                "error": error[:300],
                **worst,
            }
            for s in self._scales()
        )
        self._advance(len(self._scales()))

    def _advance(self, n: int) -> None:
        if getattr(self, "bar", None):
            self.bar.update(n)

    def _write_scores(self, item: Item, source: Image.Image, zoom, times: list[dict[str, float]]) -> None:
        extra = [{}] * len(zoom.steps)
        if self.cfg.task == "overlap":
            extra = overlap_rows(self.chain, [zoom.x0], [zoom.states])[0]
        rows = []
        for step, t, more in zip(zoom.steps, times, extra, strict=True):
            reference = None
            if self.metrics.full_reference:
                reference = ground_truth(source, step.scale, self.chain.size, self.cfg.metrics.gt_min_ratio)
            started = time.perf_counter()
            scores, failures = self.metrics.score(step.state, reference)
            metrics_s = time.perf_counter() - started
            self._advance(1)
            row = {**self._base(item, step.scale), "failed": 0, "failed_metrics": failures, "error": ""}
            row.update(
                sr_s=t["sr"], pe_s=t["prompt"], metrics_s=metrics_s, prompt=step.prompt or "", **scores
            )
            row.update({k: v for k, v in more.items() if k != "scale"})
            rows.append(row)
        self.rows.append(rows)
        if item.index < self.cfg.report.strips:
            self._save_strip(item, zoom)
        if self.cfg.report.save_states:
            from omegaconf import OmegaConf

            from coz.zoom.outputs import write_zoom

            save = OmegaConf.create({"strip": False, "gif": False, "gif_size": 256, "per_scale": True})
            write_zoom(self.run_dir, item.name, zoom, save, self.chain.factor, [])

    def _save_strip(self, item: Item, zoom) -> None:
        from coz.run.atomic import write_atomic

        labels = [f"x{s}" for s in zoom.scales]
        strip = zoom_strip(zoom.states, self.chain.factor, labels=labels, tile=256)
        path = self.run_dir / "strips" / f"{item.index:05d}-{item.name}.jpg"
        write_atomic(path, lambda p: strip.save(p, format="JPEG", quality=88))
