"""``coz-fetch`` / ``python -m coz.fetch``: download the authors' released weights and the base
models, check them against what the registry pins (:mod:`coz.fetch.registry`), and lay them out
where ``<option>=auto`` finds them (:mod:`coz.fetch.local`)."""


def main() -> None:
    from coz.fetch.cli import main as cli_main

    cli_main()
