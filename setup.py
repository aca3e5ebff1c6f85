"""The package list, the one thing pyproject.toml cannot say: the configs stay in the top-level
conf/ and ship inside the package as coz.conf ([tool.setuptools.package-dir] maps it there),
which package discovery alone cannot find."""

from setuptools import find_namespace_packages, find_packages, setup

CONFIG_PACKAGES = ["coz.conf", *(f"coz.conf.{name}" for name in find_namespace_packages(where="conf"))]
setup(packages=[*find_packages(include=["coz", "coz.*"]), *CONFIG_PACKAGES])
