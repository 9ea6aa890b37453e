"""`bgmfit recommend / match / similar / registry` on the tiny project, without a server."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest

from tests.integration.helpers import bgmfit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def melody(served_project: Path) -> dict:
    with open(served_project / "data/raw/manifest.csv", newline="") as f:
        return next(r for r in csv.DictReader(f) if r["role"] == "foreground" and r["split"] == "test")


def _ok(project: Path, *args: str) -> str:
    result = bgmfit(project, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_recommend_match_and_similar_answer_from_the_registry_champions(served_project: Path, melody: dict):
    clip = f"data/raw/{melody['path']}"
    ranked = json.loads(_ok(served_project, "recommend", clip, "-k", "3", "--json"))
    assert len(ranked) == 3 and all(r["role"] == "bgm" for r in ranked)

    table = _ok(served_project, "recommend", clip, "-k", "2", "--method", "triplet")
    assert table.splitlines()[0].split()[:3] == ["rank", "track_id", "style"] and len(table.splitlines()) == 3

    own = f"{melody['work_id']}-bgm"
    fit = json.loads(_ok(served_project, "match", clip, own, "--json"))
    assert [r["track_id"] for r in fit] == [own] and 0.0 < fit[0]["score"] < 1.0

    similar = json.loads(_ok(served_project, "similar", own, "-k", "2", "--json"))
    assert len(similar) == 2 and own not in {r["track_id"] for r in similar}


def test_registry_lists_both_champions(served_project: Path):
    listing = _ok(served_project, "registry")
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert {(r[0], r[2]) for r in rows} >= {("bgmfit-match", "champion"), ("bgmfit-triplet", "champion")}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("recommend", "params.yaml"), "not decodable as audio"),
        (("recommend", "missing.wav"), "missing.wav: cannot read"),
        (("match", "params.yaml"), "the following arguments are required: ID"),
        (("similar", "no-such-track"), "unknown track id 'no-such-track'"),
        (("registry", "rollback", "bgmfit-match"), "replaced no earlier champion"),
        (("registry", "rollback"), "needs a model name"),
        (("registry", "promote", "bgmfit-match"), "promote needs a model name"),
        (("registry", "promote", "bgmfit-match", "99"), "bgmfit-match has no version '99'"),
    ],
)
def test_bad_cli_input_is_one_line_without_a_traceback(served_project: Path, args, message):
    result = bgmfit(served_project, *args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_tracking_server_is_one_line_naming_it(served_project: Path, monkeypatch):
    # A user whose MLFLOW_TRACKING_URI names a server that is not running (here, a port just freed).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ci:s3cret@127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refuse at once, not after minutes
    result = bgmfit(served_project, "registry")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"bgmfit registry: error: MLflow tracking store http://ci:***@127.0.0.1:{port}: " in result.stderr
    assert "Connection refused" in result.stderr and "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr, "the password stays out of logs"
