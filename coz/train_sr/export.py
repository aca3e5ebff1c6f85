"""The final weights of a run in the formats ``coz.zoom`` (and the authors' scripts) load.

``<run>/export/``: for ``sd3``, ``model.pkl`` + ``vae_encoder.pt`` (the authors' release format:
``backbone.transformer_lora=`` / ``backbone.vae_encoder=``) and ``lora.safetensors`` (coz's own,
``backbone.weights=``); for ``sd21``, ``osediff.pkl`` (``backbone.osediff_pkl=``) and
``lora.safetensors``; for ``realesrgan``, ``realesrgan.safetensors`` (``backbone.weights=``).
``export.json`` lists them with the ``coz.zoom`` command that uses them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback

log = logging.getLogger("coz.train_sr")

ZOOM_OPTIONS = {
    "transformer_lora": "backbone.transformer_lora",
    "vae_encoder": "backbone.vae_encoder",
    "osediff_pkl": "backbone.osediff_pkl",
    "weights": "backbone.weights",
}


def zoom_command(backbone: str, files: dict[str, Path]) -> str:
    """The ``python -m coz.zoom`` line that loads these files (the release format where there is one)."""
    options = [f"{ZOOM_OPTIONS[k]}={v}" for k, v in files.items() if k in ZOOM_OPTIONS]
    if not options and "coz_lora" in files:
        options = [f"backbone.weights={files['coz_lora']}"]
    return f"python -m coz.zoom input=PHOTO backbone={backbone} " + " ".join(options)


class FinalExport(Callback):
    """At the end of training, rank 0 writes the export (after the last checkpoint)."""

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and pl_module.step > 0:
            files = pl_module.export()
            log.info("exported: %s", zoom_command(pl_module.gen.name, files))
