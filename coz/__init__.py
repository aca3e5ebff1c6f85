"""Chain-of-Zoom: extreme super-resolution by scale autoregression (Kim et al., 2025)."""

__version__ = "0.1.0"
