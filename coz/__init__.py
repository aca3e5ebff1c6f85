"""Chain-of-Zoom: extreme super-resolution by scale autoregression (Kim et al., 2025).

``coz.Zoomer`` and ``coz.zoom_image`` are the Python API (:mod:`coz.api`); they are imported on
first use, so ``import coz`` stays cheap.
"""

__version__ = "0.1.0"

_API = ("Zoomer", "ZoomResult", "zoom_image")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from coz import api

        return getattr(api, name)
    raise AttributeError(f"module 'coz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
