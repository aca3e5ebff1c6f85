"""The ``zoom=full`` settings (conf/shared/zoom/full.yaml), apart from the full-image code so that
backbones can name them without importing it (``coz.full_image`` imports the backbones' base)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from coz.tiling import GAUSSIAN_VARIANCE

#: x0's sides are trimmed to multiples of this: 4x then gives whole 2x2 patches of 8x latents.
SIDE_MULTIPLE = 4
VAE_TILINGS = ("fast", "shared_norm", "blended")


@dataclass(frozen=True)
class FullImageOptions:
    """The ``zoom=full`` settings (conf/shared/zoom/full.yaml); tile sizes in the units named."""

    latent_tile: int = 64  # diffusion backbones: latent tiles (64 latents = 512 px)
    latent_overlap: int = 16
    pixel_tile: int = 128  # other backbones: low-res pixel tiles (128 px -> 512 px)
    pixel_overlap: int = 32
    vae_encoder_tile: int = 1024  # pixels
    vae_encoder_overlap: int = 64
    vae_decoder_tile: int = 128  # latents (1024 px)
    vae_decoder_overlap: int = 16
    vae_tiling: str = (
        "fast"  # fast (the released VAEHook fast mode) | shared_norm (exact statistics) | blended
    )
    vae_encoder_pad: int = 32  # fast, shared_norm: context pixels around each encoder tile
    vae_decoder_pad: int = 11  # fast, shared_norm: context latents around each decoder tile
    tile_variance: float = GAUSSIAN_VARIANCE
    latent_shift: str | None = "none"  # None: the backbone's own setting
    multiscale: bool = True  # AR-2: the whole-image context goes with each view
    context: str = "input"  # input (x0, fixed for every step, as released) | current (this step's source)
    tile_view: str = (
        "decoded"  # decoded (the backbone's own views: SD3's VAE decode of the tile latent) | upsampled
    )
    prompt_batch: int = 16  # views per prompt-extractor call
    input_size: int | None = None  # None: the input as it is
    max_output_pixels: int = 300_000_000

    def __post_init__(self) -> None:
        pairs = {
            "latent": (self.latent_tile, self.latent_overlap),
            "pixel": (self.pixel_tile, self.pixel_overlap),
            "vae_encoder": (self.vae_encoder_tile, self.vae_encoder_overlap),
            "vae_decoder": (self.vae_decoder_tile, self.vae_decoder_overlap),
        }
        for name, (tile, overlap) in pairs.items():
            if not 0 <= overlap < tile:
                raise ValueError(
                    f"zoom.{name}_tile={tile}, zoom.{name}_overlap={overlap}: need 0 <= overlap < tile"
                )
        if self.latent_tile % 2 or self.vae_encoder_tile % 8:
            raise ValueError("zoom.latent_tile must be even and zoom.vae_encoder_tile a multiple of 8")
        if self.prompt_batch < 1 or self.tile_variance <= 0 or self.max_output_pixels < 1:
            raise ValueError(
                "zoom.prompt_batch, zoom.tile_variance and zoom.max_output_pixels must be positive"
            )
        if self.tile_view not in ("decoded", "upsampled"):
            raise ValueError(f"zoom.tile_view={self.tile_view!r}: use decoded or upsampled")
        if self.context not in ("input", "current"):
            raise ValueError(f"zoom.context={self.context!r}: use input or current")
        if self.vae_tiling not in VAE_TILINGS:
            raise ValueError(f"zoom.vae_tiling={self.vae_tiling!r}: use one of {', '.join(VAE_TILINGS)}")
        if self.vae_encoder_pad < 0 or self.vae_encoder_pad % 8 or self.vae_decoder_pad < 0:
            raise ValueError("zoom.vae_encoder_pad must be a multiple of 8 and zoom.vae_decoder_pad >= 0")
        if self.latent_shift not in (None, "none", "test", "train"):
            raise ValueError(f"zoom.latent_shift={self.latent_shift!r}: use none, test, train or backbone")
        if self.input_size is not None and self.input_size < SIDE_MULTIPLE:
            raise ValueError(f"zoom.input_size={self.input_size}: must be null or at least {SIDE_MULTIPLE}")

    @classmethod
    def from_config(cls, node) -> FullImageOptions:
        """From the ``zoom`` config node (unknown keys such as ``mode`` and ``steps`` are ignored);
        ``latent_shift: backbone`` keeps the backbone's own setting."""
        values = {f.name: node[f.name] for f in dataclasses.fields(cls) if f.name in node}
        if values.get("latent_shift") == "backbone":
            values["latent_shift"] = None
        return cls(**values)
