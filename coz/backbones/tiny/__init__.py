"""Offline random-weight twins of the diffusion backbones, built from configs (tests, demos)."""
