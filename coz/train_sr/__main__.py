"""``python -m coz.train_sr``: train a one-step diffusion sr backbone, coarse-to-fine (:mod:`coz.train_sr.tool`)."""

from coz.train_sr import main

main()
