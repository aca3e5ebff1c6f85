"""python -m coz.study: build a study from zoom runs, rate it over HTTP (many raters at once, resumes,
no double votes, no method names on the page, votes kept through a kill -9), and the report's
numbers against scipy and hand arithmetic on the same votes."""

from __future__ import annotations

import csv
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import browser
import numpy as np
import pytest
from inprocess_cli import run_cli_here
from omegaconf import OmegaConf
from PIL import Image

from coz.study.analysis import PAIRED, stars
from coz.study.assign import balanced_questions
from coz.study.manifest import load_manifest, plan_of
from coz.study.server import StudyApp, make_server
from coz.study.tool import build_command, command_line, report_command
from coz.study.votes import VoteStore, default_url

REPO = Path(__file__).resolve().parent.parent
# the paper's three prompt modes, named as a sweep names them
METHODS = {"ar1": "prompt=vlm_ar1", "ar2": "prompt=vlm", "grpo": "prompt=vlm prompt.adapter=ckpt"}
OVERRIDES = {"ar1": ["prompt=vlm_ar1"], "ar2": ["prompt=vlm"], "grpo": ["prompt=vlm", "prompt.adapter=ckpt"]}
WORDS = {"ar1": "one", "ar2": "two", "grpo": "three"}  # each mode's prompts (no method name in them)
INSTRUCTIONS = {
    "welcome": "Welcome.",
    "image": "Rate the zoom.",
    "text": "Rate the text.",
    "thanks": "Thanks.",
}


def study_config(**values):
    """conf/study/study.yaml with ``values`` set, as the command line composes it."""
    from hydra import compose, initialize_config_dir

    from coz.run.cli import tool_config_dir

    with initialize_config_dir(config_dir=tool_config_dir("study"), version_base="1.3"):
        cfg = compose(config_name="study", overrides=["command=build"])
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@pytest.fixture(scope="module")
def zoom_run(samples, tmp_path_factory) -> Path:
    """A real coz.zoom run folder (bicubic, 96 px, 2 steps, 3 of the sample photos)."""
    from hydra import compose, initialize_config_dir

    from coz.run.cli import tool_config_dir
    from coz.zoom.tool import run

    base = tmp_path_factory.mktemp("zoom")
    for photo in sorted(samples)[:3]:
        shutil.copy(photo, base / photo.name)
    overrides = [f"input={base}", "backbone=bicubic", "zoom.size=96", "zoom.steps=2", "save.gif_size=32"]
    with initialize_config_dir(config_dir=tool_config_dir("zoom"), version_base="1.3"):
        cfg = compose(config_name="zoom", overrides=overrides)
    run(cfg, run_dir=base / "run")
    return base / "run"


@pytest.fixture(scope="module")
def sweep(zoom_run, tmp_path_factory) -> Path:
    """An evaluate-style sweep folder: one job per prompt mode, each the zoom run with that mode's
    prompts and overrides (what a sweep over prompt modes leaves: ``<n>-<overrides>/``)."""
    root = tmp_path_factory.mktemp("sweep")
    for number, key in enumerate(METHODS):
        job = root / f"{number}-{','.join(OVERRIDES[key])}"
        shutil.copytree(zoom_run, job)
        (job / ".hydra").mkdir(exist_ok=True)
        (job / ".hydra" / "overrides.yaml").write_text(
            "".join(f"- {o}\n" for o in ["input=x", *OVERRIDES[key]])
        )
        for record_path in (job / "images").glob("*/zoom.json"):
            record = json.loads(record_path.read_text())
            record["prompts"] = [f"{WORDS[key]} describes {record['name']} at step {i}" for i in (1, 2)]
            record_path.write_text(json.dumps(record))
    return root


@pytest.fixture(scope="module")
def built_study(sweep, tmp_path_factory) -> Path:
    """The sweep's study, built once for the module (tests get a copy: their votes stay their own)."""
    cfg = study_config(
        **{
            "from": [str(sweep)],
            "raters": 6,
            "per_rater": 2,
            "media.tile": 32,
            "media.gif_size": 32,
            "media.view_size": 48,
        }
    )
    folder = tmp_path_factory.mktemp("built") / "study"
    build_command(cfg, folder)
    return folder


@pytest.fixture()
def study(built_study, tmp_path) -> dict:
    """A fresh copy of the built study (no votes yet), as build left it."""
    shutil.copytree(built_study, tmp_path / "study")
    return load_manifest(tmp_path / "study")


# ---------------------------------------------------------------------------------------- build


def test_build_names_methods_as_the_sweep_and_shows_each_methods_prompt(study, sweep):
    assert study["methods"] == list(METHODS.values())
    kinds = [q["kind"] for q in study["questions"].values()]
    assert kinds.count("image") == 3 and kinds.count("text") == 3  # one of each per image
    folder = Path(study["folder"])
    for spec in study["questions"].values():
        assert set(spec["samples"]) == set(METHODS.values())
        for method, sample in spec["samples"].items():
            for key in ("strip", "gif", "view"):
                if key in sample:
                    assert re.fullmatch(r"media/[0-9a-f]{16}\.(png|gif)", sample[key])
                    assert (folder / sample[key]).is_file()
            if spec["kind"] == "text":  # the last step's prompt, beside the state it zoomed into
                key = next(k for k, m in METHODS.items() if m == method)
                assert sample["text"] == f"{WORDS[key]} describes {spec['image']} at step 2"
                view = np.asarray(Image.open(folder / sample["view"]).convert("RGB"))
                # 48 px: the white box around the center 1/4 (pixels 18..29), the region step 2 zoomed into
                assert (view[18, 18:30] == 255).all() and (view[29, 18:30] == 255).all()
                assert (view[18:30, 18] == 255).all() and not (view[20:28, 20:28] == 255).all()


def test_runs_without_prompts_get_image_questions_only(zoom_run, tmp_path):
    """Two real null-prompt runs (bicubic, nearest: the zoom run and a copy named otherwise)."""
    twin = tmp_path / "nearest"
    shutil.copytree(zoom_run, twin)
    (twin / ".hydra").mkdir(exist_ok=True)
    (twin / ".hydra" / "overrides.yaml").write_text("- backbone=nearest\n")
    cfg = study_config(
        **{"from": [str(zoom_run), str(twin)], "raters": 2, "media.tile": 32, "media.gif_size": 32}
    )
    build_command(cfg, tmp_path / "study")
    manifest = load_manifest(tmp_path / "study")
    assert manifest["methods"] == ["backbone=bicubic", "backbone=nearest"]
    assert manifest["kinds"] == ["image"] and {q["kind"] for q in manifest["questions"].values()} == {"image"}
    from coz.errors import CozError

    text_only = study_config(**{"from": [str(zoom_run), str(twin)], "questions": ["text"]})
    with pytest.raises(CozError, match=r"questions=\[text\]: no run of from= has prompts"):
        build_command(text_only, tmp_path / "text-only")  # was: a study of 0 questions, exit 0
    assert not (tmp_path / "text-only").exists()


def test_balanced_assignment_every_question_and_method_equally_often():
    rng = random.Random(3)
    for questions, per_rater, raters in ((7, 5, 25), (10, 3, 11), (4, 4, 9), (3, 5, 2)):
        ids = [f"q{i}" for i in range(questions)]
        plan = balanced_questions(ids, per_rater, raters, rng)
        counts = {q: sum(q in chosen for chosen in plan) for q in ids}
        assert max(counts.values()) - min(counts.values()) <= 1
        assert all(len(chosen) == len(set(chosen)) == min(per_rater, questions) for chosen in plan)


def test_rater_plans_cover_every_method_in_shuffled_order(study):
    slots = study["raters"]
    assert len(slots) == 6
    for plan in slots:
        assert [study["questions"][e["question"]]["kind"] for e in plan] == ["image"] * 2 + ["text"] * 2
        for entry in plan:
            assert sorted(entry["order"]) == sorted(METHODS.values())
    orders = {tuple(e["order"]) for plan in slots for e in plan}
    assert len(orders) > 1  # shuffled, not the same order everywhere
    seen = [e["question"] for plan in slots for e in plan]
    counts = [seen.count(q) for q in study["questions"]]
    assert max(counts) - min(counts) <= 1  # 6 slots x 2 of 3 questions per kind: each 4 times


def test_a_run_given_twice_or_an_evaluate_job_without_states_is_refused(sweep, tmp_path):
    from coz.errors import CozError
    from coz.study.sources import find_runs

    job = tmp_path / "sweep" / "0-method=coz"
    (job / "rows").mkdir(parents=True)
    with pytest.raises(CozError, match="report.save_states=true"):
        find_runs([str(tmp_path / "sweep")])
    job = sorted(sweep.iterdir())[0]
    with pytest.raises(CozError, match="is given twice"):
        find_runs([str(job), str(sweep)])
    twin = tmp_path / "twin"  # the same overrides in two folders: told apart by folder name
    shutil.copytree(job, twin)
    runs = find_runs([str(job), str(twin)])
    assert [r.method for r in runs] == [job.name, "twin"]


def test_bad_from_is_one_line_and_exit_2(tmp_path, monkeypatch, capfd):
    """The command line's entry point in this process (its stderr as a program's, by file descriptor;
    the study's real program runs are kill -9's below and test_typed_configs' bad values)."""
    from coz.study.tool import main

    out = tmp_path / "study"
    args = ["build", f"from={tmp_path}/missing,{tmp_path}", f"hydra.run.dir={out}"]
    result = run_cli_here(main, args, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: from={tmp_path}/missing: no such folder"
    assert result.stderr.count("\n") == 1 and not out.exists()
    result = run_cli_here(main, [], tmp_path, monkeypatch, capfd)  # no command: one line before Hydra starts
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "build|serve|report" in result.stderr


def test_command_line_reads_from_and_questions_as_lists():
    assert command_line(["build", "from=a,b", "questions=image,text"]) == [
        "command=build", "from=[a,b]", "questions=[image,text]",
    ]  # fmt: skip
    assert command_line(["serve", "study=s"]) == ["command=serve", "study=s", "hydra.run.dir=."]
    assert command_line(["build", "from=a", "questions=text"]) == [
        "command=build",
        "from=[a]",
        "questions=[text]",
    ]
    assert "choose a command" in command_line(["frobnicate"])


# ---------------------------------------------------------------------------------------- serve


class Server:
    """The study's page on a free port, in this process (each request on its own thread)."""

    def __init__(
        self, manifest: dict, access_code: str | None = None, instructions: dict = INSTRUCTIONS
    ) -> None:
        self.store = VoteStore(default_url(manifest["folder"]), manifest["sha256"])
        self.app = StudyApp(manifest, self.store, instructions, access_code)
        self.httpd = make_server(self.app, "127.0.0.1", 0)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.store.close()


def request(port: int, method: str, path: str, form: dict | None = None, cookie: str | None = None):
    """(status, headers, body) without following redirects."""
    from urllib.parse import urlencode

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = urlencode(form).encode() if form is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
    if cookie:
        headers["Cookie"] = cookie
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read().decode("utf-8", "replace")
    conn.close()
    return response.status, dict(response.getheaders()), data


class Rater:
    """A simulated rater: starts, then answers every question with seeded random scores."""

    def __init__(self, port: int, seed: int, code: str | None = None) -> None:
        self.port, self.rng, self.pages = port, random.Random(seed), []
        status, headers, _ = request(port, "POST", "/start", {"code": code} if code is not None else {})
        assert status == 303, status
        self.link = headers["Location"]
        self.cookie = headers["Set-Cookie"].split(";")[0]
        self.answers: list[tuple[str, dict[str, str]]] = []

    def page(self) -> str:
        status, _, body = request(self.port, "GET", self.link)
        assert status == 200
        self.pages.append(body)
        return body

    def answer_one(self) -> bool:
        """Answer the page's question; False on the thank-you page."""
        body = self.page()
        found = re.search(r"name='question' value='([^']+)'", body)
        if found is None:
            assert "Thank you" in body
            return False
        samples = len(set(re.findall(r"name='(s\d+)'", body)))
        form = {"question": found[1], **{f"s{i}": str(self.rng.randint(1, 5)) for i in range(samples)}}
        status, headers, _ = request(self.port, "POST", self.link, form)
        assert status == 303 and headers["Location"] == self.link
        self.answers.append((found[1], form))
        return True


def expected_votes(manifest: dict, store: VoteStore, rater: Rater) -> set[tuple]:
    """(rater, question, method, score) the rater's answers mean, mapped through their own order."""
    rater_id = store.rater(rater.link.rsplit("/", 1)[1])
    plan = {e["question"]: e["order"] for e in plan_of(manifest, rater_id)}
    return {
        (rater_id, question, method, int(form[f"s{i}"]))
        for question, form in rater.answers
        for i, method in enumerate(plan[question])
    }


def test_twenty_raters_at_once_no_vote_lost_or_doubled(study):
    server = Server(study)
    try:
        raters: list[Rater] = []
        errors: list[BaseException] = []

        def rate(seed: int) -> None:
            try:
                rater = Rater(server.port, seed)
                raters.append(rater)
                while rater.answer_one():
                    pass
                question, form = rater.answers[0]  # the same answer again, and a different one
                assert request(server.port, "POST", rater.link, form)[0] == 303
                changed = {**form, "s0": str(6 - int(form["s0"]) if form["s0"] != "3" else 1)}
                assert request(server.port, "POST", rater.link, changed)[0] == 303
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=rate, args=(seed,)) for seed in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[0]
        votes = server.store.all_votes()
        got = [(v["rater_id"], v["question"], v["method"], v["score"]) for v in votes]
        assert len(got) == len(set(got))
        expected = set().union(*(expected_votes(study, server.store, r) for r in raters))
        assert set(got) == expected  # every answer, each once, the first answer standing
        assert len(got) == 20 * 4 * 3  # 20 raters x 4 questions x 3 methods
        assert {v["rater_id"] for v in votes} == set(range(1, 21))
        # balanced: every method rated equally often, every question within one of the others
        assert {sum(v["method"] == m for v in votes) for m in METHODS.values()} == {80}
        for plan in raters:
            assert "Thank you" in plan.page()
    finally:
        server.close()


def test_method_names_never_reach_the_rater(study):
    server = Server(study)
    try:
        rater = Rater(server.port, 1)
        while rater.answer_one():
            pass
        pages = rater.pages + [request(server.port, "GET", "/")[2]]
        for page in pages:
            for secret in ("vlm", "adapter", "ckpt", "prompt=", "ar1", "grpo"):
                assert secret not in page
            for media in re.findall(r"src='([^']+)'", page):
                assert re.fullmatch(r"/media/[0-9a-f]{16}\.(png|gif)", media)
                status, headers, _ = request(server.port, "GET", media)
                assert status == 200 and headers["Content-Type"].startswith("image/")
        assert request(server.port, "GET", "/manifest.json")[0] == 404
        assert request(server.port, "GET", "/media/../manifest.json")[0] == 404
    finally:
        server.close()


def test_reload_and_restart_resume_at_the_next_question(study):
    server = Server(study)
    rater = Rater(server.port, 2)
    assert "Question 1 of 4" in rater.page() and "Question 1 of 4" in rater.page()  # a reload
    rater.answer_one()
    rater.answer_one()
    server.close()
    server = Server(study)  # a new server on the same database
    try:
        rater.port = server.port
        assert "Question 3 of 4" in rater.page()
        status, headers, _ = request(server.port, "GET", "/", cookie=rater.cookie)  # back at the address
        assert status == 303 and headers["Location"] == rater.link
        assert request(server.port, "GET", "/r/unknownrater123")[0] == 404
    finally:
        server.close()


def test_bad_answers_and_access_code_record_nothing(study):
    server = Server(study, access_code="zoom42")
    try:
        assert request(server.port, "POST", "/start", {"code": "wrong"})[0] == 403
        assert "Access code" in request(server.port, "GET", "/")[2]
        rater = Rater(server.port, 3, code="zoom42")
        body = rater.page()
        question = re.search(r"name='question' value='([^']+)'", body)[1]
        assert (
            request(server.port, "POST", rater.link, {"question": question, "s0": "4", "s1": "9", "s2": "1"})[
                0
            ]
            == 400
        )
        assert request(server.port, "POST", rater.link, {"question": question, "s0": "4"})[0] == 400
        foreign = next(q for q in study["questions"] if q not in {e["question"] for e in study["raters"][0]})
        assert (
            request(server.port, "POST", rater.link, {"question": foreign, "s0": "1", "s1": "1", "s2": "1"})[
                0
            ]
            == 400
        )
        assert server.store.all_votes() == []
    finally:
        server.close()


def test_a_form_of_no_valid_length_is_refused_unread_and_records_nothing(study, caplog):
    """Content-Length -1 would read until the client closes (memory without bound, before the access
    code is checked); a length that is not a number, or over the limit, is refused the same way,
    with the connection closed (the unread body must not pass for a next request). A client that
    goes away mid-request is a debug line, not a traceback."""
    import socket

    server = Server(study, access_code="zoom42")
    try:
        answers = {}
        for length in ("-1", "abc", "99999999"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(
                    f"POST /start HTTP/1.1\r\nContent-Length: {length}\r\n\r\ncode=zoom42&x=".encode()
                )
                sock.sendall(b"y" * 100_000)  # more body than any form: never read
                reply = b""
                while chunk := sock.recv(65536):  # to the end: the server closes the connection
                    reply += chunk
            answers[length] = reply.split(b"\r\n", 1)[0].decode()
        assert answers == {
            "-1": "HTTP/1.1 400 Bad Request",
            "abc": "HTTP/1.1 400 Bad Request",
            "99999999": "HTTP/1.1 413 Request Entity Too Large",
        }
        assert server.store.all_votes() == [] and server.store.count_raters() == 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /start HTTP/1.1\r\nContent-Length: 40\r\n\r\ncode=")  # and gone
        assert request(server.port, "GET", "/")[0] == 200  # still serving
        assert "Traceback" not in caplog.text
    finally:
        server.close()


def test_a_database_of_another_study_is_refused(study, tmp_path):
    from coz.errors import CozError

    url = f"sqlite:///{tmp_path / 'hosted.sqlite'}"  # any SQLAlchemy URL: here another SQLite file
    VoteStore(url, "0" * 64).close()
    with pytest.raises(CozError, match="holds the votes of another study"):
        VoteStore(url, study["sha256"])
    with pytest.raises(CozError, match="not a SQLAlchemy URL"):
        VoteStore("not a url", study["sha256"])


def test_kill_9_keeps_every_committed_vote(study):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    def start() -> tuple[subprocess.Popen, int]:
        process = subprocess.Popen(
            [sys.executable, "-m", "coz.study", "serve", f"study={study['folder']}", "port=0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        for line in process.stdout:
            if found := re.search(r"http://127\.0\.0\.1:(\d+)/", line):
                return process, int(found[1])
        raise AssertionError(f"the server did not start: {process.wait()}")

    process, port = start()
    try:
        raters = [Rater(port, seed) for seed in range(3)]
        for rater in raters:
            for _ in range(2):
                rater.answer_one()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        process, port = start()
        for rater in raters:
            rater.port = port
            assert "Question 3 of 4" in rater.page()
        store = VoteStore(default_url(study["folder"]), study["sha256"])
        with store.engine.connect() as conn:  # the file is in WAL mode: a commit is durable at once
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        got = {(v["rater_id"], v["question"], v["method"], v["score"]) for v in store.all_votes()}
        assert got == set().union(*(expected_votes(study, store, r) for r in raters))
        assert len(got) == 3 * 2 * 3
        store.close()
    finally:
        process.kill()
        process.wait(timeout=30)


# --------------------------------------------------------------------------------------- report


# rater -> (question, {method key: score}); two image questions each, four raters; rater 5 answers
# one text question with a constant score
TABLE = {
    1: [("image-0", {"ar1": 2, "ar2": 3, "grpo": 5}), ("image-2", {"ar1": 1, "ar2": 3, "grpo": 4})],
    2: [("image-0", {"ar1": 2, "ar2": 3, "grpo": 5}), ("image-4", {"ar1": 2, "ar2": 4, "grpo": 5})],
    3: [("image-2", {"ar1": 2, "ar2": 2, "grpo": 4}), ("image-4", {"ar1": 2, "ar2": 4, "grpo": 5})],
    4: [("image-0", {"ar1": 1, "ar2": 2, "grpo": 3}), ("image-2", {"ar1": 1, "ar2": 4, "grpo": 4})],
    5: [("text-1", {"ar1": 3, "ar2": 3, "grpo": 3})],
}


def test_report_matches_scipy_and_hand_arithmetic(study, tmp_path, capsys):
    from scipy import stats

    store = VoteStore(default_url(study["folder"]), study["sha256"])
    for rater, answers in TABLE.items():
        assert store.new_rater()[0] == rater
        for question, scores in answers:
            spec = study["questions"][question]
            store.vote(
                rater, question, spec["kind"], spec["image"], {METHODS[k]: s for k, s in scores.items()}
            )
    store.close()
    cfg = study_config(command="report", study=study["folder"])
    report_command(cfg)
    out = Path(study["folder"]) / "report"
    mos = {(r["kind"], r["method"]): r for r in csv.DictReader((out / "mos.csv").open())}
    for key in METHODS:
        scores = [s[key] for answers in list(TABLE.values())[:4] for _, s in answers]
        row = mos[("image", METHODS[key])]
        assert float(row["mos"]) == pytest.approx(sum(scores) / 8)
        hand_std = math.sqrt(sum((s - sum(scores) / 8) ** 2 for s in scores) / 7)
        assert float(row["std"]) == pytest.approx(hand_std)
        assert int(row["votes"]) == 8 and int(row["raters"]) == 4
    assert float(mos[("text", METHODS["ar1"])]["mos"]) == 3.0
    tests = {(r["kind"], r["a"], r["b"]): r for r in csv.DictReader((out / "ttests.csv").open())}
    for a, b in (("ar1", "ar2"), ("ar1", "grpo"), ("ar2", "grpo")):
        means_a = [np.mean([s[a] for _, s in TABLE[r]]) for r in range(1, 5)]
        means_b = [np.mean([s[b] for _, s in TABLE[r]]) for r in range(1, 5)]
        row = tests[("image", METHODS[a], METHODS[b])]
        expected = stats.ttest_rel(means_a, means_b)
        assert row["test"] == PAIRED and int(row["n"]) == 4
        assert float(row["p"]) == pytest.approx(expected.pvalue)
        d = np.subtract(means_a, means_b)  # the paired t by hand: mean difference over its standard error
        assert float(row["t"]) == pytest.approx(d.mean() / (d.std(ddof=1) / 2))
        assert row["stars"] == stars(expected.pvalue)
    # by hand: per-rater differences ar1-grpo -3, -3, -2.5, -2.5: t = -2.75 / (0.2887 / 2) = -19.05,
    # p = 0.0003 (3 df); ar1-ar2 -1.5, -1.5, -1, -2: t = -7.35, p = 0.005; ar2-grpo t = -5, p = 0.015
    assert [
        tests[("image", METHODS[a], METHODS[b])]["stars"]
        for a, b in (("ar1", "grpo"), ("ar1", "ar2"), ("ar2", "grpo"))
    ] == ["***", "**", "*"]
    assert (out / "mos.png").stat().st_size > 10_000 and "<img src='data:image/png" in (
        out / "report.html"
    ).read_text()
    # the documented rule: a constant rater is left out, and listed
    report_command(study_config(command="report", study=study["folder"], **{"exclude.constant": True}))
    excluded = list(csv.DictReader((out / "excluded.csv").open()))
    assert [int(r["rater"]) for r in excluded] == [5] and "same score" in excluded[0]["reason"]
    assert not any(r["kind"] == "text" for r in csv.DictReader((out / "mos.csv").open()))
    capsys.readouterr()
    report_command(study_config(command="report", study=study["folder"], **{"exclude.min_votes": 10_000}))
    assert "(every vote excluded (see above): report.html" in capsys.readouterr().out  # not "no votes yet"


def test_stars_follow_the_papers_thresholds():
    assert [stars(p) for p in (0.0009, 0.001, 0.0099, 0.01, 0.049, 0.05, float("nan"))] == [
        "***", "**", "**", "*", "*", "n.s.", "n/a",
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------- browser

SCREENSHOT = REPO / "experiments" / "study" / "rating-page.jpg"
REPORT_SHOT = REPO / "experiments" / "study" / "report.jpg"


@pytest.mark.skipif(browser.chromium() is None, reason=browser.MISSING)
def test_five_raters_answer_in_headless_chromium(sweep, study, tmp_path):
    """Five raters click through the study in a real browser (each with a fresh cookie jar), every
    click lands in the database, the report follows. The question page and the report are captured
    (tmp_path; COZ_UPDATE_SCREENSHOT=1 also refreshes the README's pictures in experiments/study/,
    from a study of five raters built with media at the size a real study shows)."""
    update = os.environ.get("COZ_UPDATE_SCREENSHOT") == "1"
    cfg = study_config(
        **{"from": [str(sweep)], "raters": 5, "per_rater": 2, "media.tile": 128, "media.gif_size": 160}
    )
    if update:
        build_command(cfg, tmp_path / "readme-study")
        study = load_manifest(tmp_path / "readme-study")
    server = Server(study, instructions=OmegaConf.to_container(cfg.instructions))  # the paper's wording
    rng = random.Random(0)
    clicked: dict[str, list[int]] = {}
    try:
        with browser.browser_tab(1200, 1500) as tab:
            for rater in range(5):
                tab.call("Network.clearBrowserCookies")
                tab.call("Page.navigate", url=f"http://127.0.0.1:{server.port}/")
                tab.wait_for("document.readyState === 'complete' && !!document.querySelector('button')")
                tab.js("document.querySelector('form').submit()")  # Start
                for number in range(1, 5):
                    tab.wait_for(f"document.body.innerText.includes('Question {number} of 4')")
                    samples = tab.js(
                        "new Set([...document.querySelectorAll('input[type=radio]')].map(e => e.name)).size"
                    )
                    scores = [rng.randint(1, 5) for _ in range(samples)]
                    if rater == 0 and number == 1:
                        tab.wait_for("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
                        tab.screenshot(tmp_path / "rating-page.jpg")
                    for position, score in enumerate(scores):
                        tab.js(
                            f"document.querySelector(\"input[name='s{position}'][value='{score}']\").click()"
                        )
                    link = tab.js("document.querySelector('form').getAttribute('action')")
                    clicked.setdefault(link, []).extend(scores)
                    tab.js("document.querySelector('button[type=submit]').click()")
                tab.wait_for("document.body.innerText.includes('Thank you')")
        votes = server.store.all_votes()
        assert len(votes) == 5 * 4 * 3 and len({v["rater_id"] for v in votes}) == 5
        for link, scores in clicked.items():  # each rater's clicks, in page order, are their votes
            rater_id = server.store.rater(link.rsplit("/", 1)[1])
            plan = plan_of(study, rater_id)
            mine = {(v["question"], v["method"]): v["score"] for v in votes if v["rater_id"] == rater_id}
            assert [mine[(e["question"], m)] for e in plan for m in e["order"]] == scores
    finally:
        server.close()
    report_command(study_config(command="report", study=study["folder"]))
    assert "<img src='data:image/png" in (Path(study["folder"]) / "report" / "report.html").read_text()
    assert Image.open(tmp_path / "rating-page.jpg").size[0] >= 1000
    if update:
        with browser.browser_tab(1100, 1250) as tab:  # the report, as the README shows it
            tab.call("Page.navigate", url=(Path(study["folder"]) / "report" / "report.html").as_uri())
            tab.wait_for("document.readyState === 'complete' && document.images[0].complete")
            tab.screenshot(tmp_path / "report.jpg")
        for shot, target in (
            (tmp_path / "rating-page.jpg", SCREENSHOT),
            (tmp_path / "report.jpg", REPORT_SHOT),
        ):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp.jpg")
            tmp.write_bytes(shot.read_bytes())
            tmp.replace(target)  # atomically: a failed run leaves the last good picture


def test_report_to_wandb_logs_the_tables_and_chart(study):
    from wandb_records import offline_runs, read_run

    store = VoteStore(default_url(study["folder"]), study["sha256"])
    for rater, answers in list(TABLE.items())[:2]:
        store.new_rater()
        for question, scores in answers:
            spec = study["questions"][question]
            store.vote(
                rater, question, spec["kind"], spec["image"], {METHODS[k]: s for k, s in scores.items()}
            )
    store.close()
    report_command(study_config(command="report", study=study["folder"], wandb=True))
    out = Path(study["folder"]) / "report"
    (path,) = offline_runs(out)
    run = read_run(path)
    assert run.job_type == "study"
    assert any("chart/_type" in row for row in run.history)
    table = json.loads(next((out / "wandb").rglob("mos_*.table.json")).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert rows == [
        {
            **row,
            "mos": float(row["mos"]),
            "std": float(row["std"]),
            "votes": int(row["votes"]),
            "raters": int(row["raters"]),
        }
        for row in csv.DictReader((out / "mos.csv").open())
    ]
    assert run.summary["image/prompt=vlm/mos"] == pytest.approx(13 / 4)  # rater 1: 3, 3; rater 2: 3, 4
