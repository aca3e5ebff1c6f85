"""``python -m coz.evaluate``: evaluation sweeps that reproduce the paper's tables (:mod:`coz.evaluate.tool`)."""

from coz.evaluate import main

main()
