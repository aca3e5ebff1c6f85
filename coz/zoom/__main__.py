"""``python -m coz.zoom``: zoom into images with chain-of-zoom (:mod:`coz.zoom.tool`)."""

from coz.zoom import main

main()
