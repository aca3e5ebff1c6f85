"""Training data: sources mixed by probability, crops, bad files skipped and counted, the step layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from coz.errors import CozError
from coz.train_sr.data import Layout, StepSampler, TrainingImages, list_source
from coz.train_sr.stages import Stages


def _image(path, size, colour):
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture()
def folders(tmp_path):
    red, blue = tmp_path / "red", tmp_path / "blue"
    (red / "sub").mkdir(parents=True)
    blue.mkdir()
    _image(red / "a.png", (80, 70), (255, 0, 0))
    _image(red / "sub" / "b.jpg", (64, 64), (255, 0, 0))
    _image(blue / "c.png", (90, 90), (0, 0, 255))
    return red, blue


def test_folders_recursive_and_path_lists(folders, tmp_path):
    red, blue = folders
    assert [p.name for p in list_source(red)] == ["a.png", "b.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\nred/a.png\n\nblue/c.png\n")
    assert [p.name for p in list_source(listing)] == ["a.png", "c.png"]
    assert [p.name for p in list_source(listing, limit=1)] == ["a.png"]
    with pytest.raises(CozError, match="no such folder"):
        list_source(tmp_path / "missing")


def test_sources_mixed_by_probability(folders):
    red, blue = folders
    data = TrainingImages([{"path": red, "prob": 3}, {"path": blue, "prob": 1}], crop=32, seed=0)
    reds = [int(data[i]["hr"][0, 0, 0]) > 200 for i in range(400)]
    assert abs(np.mean(reds) - 0.75) < 0.06


def test_crops_flips_and_determinism(folders):
    red, _ = folders
    data = TrainingImages([{"path": red}], crop=32, seed=3)
    item = data[5]
    assert item["hr"].shape == (3, 32, 32) and item["hr"].dtype.is_floating_point is False
    assert (data[5]["hr"] == item["hr"]).all() and data[5]["skipped"] == 0
    assert "deg" not in item  # bicubic stage: no draws


def test_bad_and_small_files_are_skipped_and_counted(folders, tmp_path):
    red, _ = folders
    (red / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (red / "empty.jpg").write_bytes(b"")
    _image(red / "tiny.png", (16, 16), (0, 255, 0))
    data = TrainingImages([{"path": red}], crop=32, seed=0)
    items = [data[i] for i in range(60)]
    assert sum(item["skipped"] for item in items) > 0
    assert all(item["hr"].shape == (3, 32, 32) and int(item["hr"][1, 0, 0]) == 0 for item in items)


def test_a_source_of_only_bad_files_fails_in_one_line(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    data = TrainingImages([{"path": tmp_path}], crop=32, max_tries=5)
    with pytest.raises(CozError) as err:
        data[0]
    assert "\n" not in str(err.value) and "unreadable or too-small" in str(err.value)


def test_realesrgan_stage_items_carry_their_own_draws(folders):
    from omegaconf import OmegaConf

    from coz.run.cli import CONFIG_DIR

    deg = OmegaConf.to_container(OmegaConf.load(f"{CONFIG_DIR}/train_sr/degradation/realesrgan.yaml"))
    stages = Stages([{"degradation": "realesrgan", "steps": 2}, {"degradation": "bicubic", "steps": 2}])
    layout = Layout(batch=2, accumulate=1, world=1)
    data = TrainingImages(
        [{"path": folders[0]}], crop=32, layout=layout, stage_kind=stages.kind_at, degradation=deg
    )
    a, b = data[0]["deg"], data[1]["deg"]
    assert not (a["kernel1"] == b["kernel1"]).all()  # per-item kernels
    # per-item resizes too, as the released dataset degrades each image on its own
    assert len({float(data[i]["deg"]["scale1"]) for i in range(4)}) > 1
    assert "deg" not in data[4]  # step 2: the bicubic stage


def test_sampler_layout_resume_and_ranks():
    layout = Layout(batch=2, accumulate=2, world=2)
    r0 = list(StepSampler(layout, 0, 0, 4))
    r1 = list(StepSampler(layout, 1, 0, 4))
    flat = sorted(i for batch in r0 + r1 for i in batch)
    assert flat == list(range(16))  # every index once over both ranks
    assert list(StepSampler(layout, 0, 2, 4)) == r0[2:]  # resuming at micro-batch 2 continues exactly
    # len is the epoch's whole length: a resumed Lightning loop counts the 2 batches done before
    assert len(StepSampler(layout, 0, 2, 4)) == 4
    assert all(layout.step_of_item(i) == 0 for i in r0[0] + r0[1] + r1[0] + r1[1])
    assert all(layout.step_of_item(i) == 1 for i in r0[2] + r1[3])


def test_stages():
    stages = Stages(
        [{"name": "a", "degradation": "realesrgan", "steps": 3}, {"degradation": "bicubic", "steps": 2}]
    )
    assert [stages.index_at(s) for s in range(6)] == [0, 0, 0, 1, 1, 1]
    assert stages.total == 5 and stages.at(3).name == "bicubic" and stages.at(3).start == 3
    with pytest.raises(CozError, match="degradation"):
        Stages([{"degradation": "gaussian", "steps": 1}])
