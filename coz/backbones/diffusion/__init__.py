"""One-step diffusion SR backbones (OSEDiff on SD3 and SD2.1, S3Diff), their loaders and tiled VAE."""
