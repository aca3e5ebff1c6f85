"""NIQE's pristine-image model, the one file pyiqa's ``niqe`` would download.

The same parameters ship in the basicsr 1.4.2 source distribution (``niqe_pris_params.npz``), which
pip fetches from the package registry; we convert them to the ``.mat`` pyiqa reads. With these,
pyiqa's calibration images score within 0.002 of its published values (tests/test_evaluation_metrics.py).
The first NIQE score fetches them (an installed wheel needs no checkout); ``make install`` runs
``python -m coz.evaluate.niqe_params`` ahead, so nothing downloads at test time.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from coz.errors import CozError
from coz.run.atomic import write_atomic
from coz.run.paths import cache_dir

SDIST = "basicsr-1.4.2.tar.gz"
SDIST_SHA256 = "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87"
MEMBER = "basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz"


def params_path() -> Path:
    """Where coz keeps the converted parameters (``$COZ_CACHE/pyiqa/niqe_modelparameters.mat``)."""
    return cache_dir() / "pyiqa" / "niqe_modelparameters.mat"


def find_params() -> Path:
    """The parameters to give pyiqa: ``$COZ_NIQE_PARAMS``, coz's converted copy, pyiqa's own download, or
    (first use) coz's copy fetched now; offline and absent: one line saying how to provide them."""
    if env := os.environ.get("COZ_NIQE_PARAMS"):
        if not Path(env).is_file():
            raise CozError(f"COZ_NIQE_PARAMS={env}: no such file")
        return Path(env)
    if params_path().is_file():
        return params_path()
    from torch.hub import get_dir

    pyiqa_own = Path(get_dir()) / "pyiqa" / "niqe_modelparameters.mat"
    if pyiqa_own.is_file():
        return pyiqa_own
    try:
        return install()  # first use: fetched once, checked against basicsr 1.4.2's sha256
    except CozError as err:
        raise CozError(
            f"NIQE's pristine parameters are missing ({params_path()}) and could not be fetched ({err}); "
            "connect to the package index once (pip fetches basicsr 1.4.2's source, checked by sha256) "
            "or set COZ_NIQE_PARAMS to a niqe_modelparameters.mat"
        ) from None


def install(sdist: Path | None = None) -> Path:
    """Write ``params_path()`` from the basicsr sdist (fetched with pip unless given); idempotent."""
    target = params_path()
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        if sdist is None:
            sdist = _download_sdist(Path(tmp))
        digest = hashlib.sha256(Path(sdist).read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise CozError(f"{sdist}: sha256 {digest} is not basicsr 1.4.2's ({SDIST_SHA256})")
        with tarfile.open(sdist) as tar:
            data = tar.extractfile(MEMBER).read()
    _write_mat(data, target)
    return target


def _download_sdist(folder: Path) -> Path:
    # --no-build-isolation: pip only reads the sdist's metadata; nothing is built or installed.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-build-isolation",
        "--no-binary",
        ":all:",
    ]
    cmd += ["--quiet", "--retries", "1", "-d", str(folder), "basicsr==1.4.2"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    path = folder / SDIST
    if result.returncode or not path.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CozError(f"pip could not fetch {SDIST}: {last.strip()[:200]}")
    return path


def _write_mat(npz_bytes: bytes, target: Path) -> None:
    import numpy as np
    import scipy.io

    params = np.load(io.BytesIO(npz_bytes))
    mat = {"mu_prisparam": params["mu_pris_param"], "cov_prisparam": params["cov_pris_param"]}
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, lambda p: scipy.io.savemat(p, mat))


if __name__ == "__main__":
    try:
        print(install(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
    except CozError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
