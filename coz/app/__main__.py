"""``python -m coz.app``: see :mod:`coz.app`."""

from coz.app import main

main()
