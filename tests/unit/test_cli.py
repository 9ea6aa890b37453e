"""The CLI's own parsing and printing, without a project (end to end: tests/serving/test_cli.py)."""

from __future__ import annotations

import re

import pytest

from bgmfit.cli import _print_results, build_parser, main


def _result(track_id: str, style: str, score: float) -> dict:
    return {"track_id": track_id, "style": style, "score": score, "distance": 0.5, "offset_seconds": 12.0}


def _spans(line: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", line)]


def test_the_results_table_stays_aligned_whatever_the_ids_lengths(capsys):
    long_id = "trecento-trecento-pmfc-06-giovanni-04-de-come-dolce-mente-bgm"  # 61 characters, a real demo id
    _print_results([_result("a-bgm", "chorale", 0.5), _result(long_id, "trecento", 0.25)], as_json=False)
    lines = capsys.readouterr().out.splitlines()
    header = _spans(lines[0])
    assert len(lines) == 3 and len(header) == 6
    for row in lines[1:]:
        spans = _spans(row)
        assert len(spans) == 6, row
        # track_id and style start under their headers; rank and the numbers end under theirs.
        assert [s[0] for s in spans[1:3]] == [h[0] for h in header[1:3]], row
        assert [s[1] for s in spans[:1] + spans[3:]] == [h[1] for h in header[:1] + header[3:]], row


def test_the_table_of_no_results_is_its_header(capsys):
    _print_results([], as_json=False)
    assert capsys.readouterr().out.split() == ["rank", "track_id", "style", "score", "distance", "from_s"]


@pytest.mark.parametrize("command", [["recommend", "clip.wav"], ["similar", "a-bgm"]])
def test_top_k_is_spelt_as_the_api_spells_it_too(command):
    parser = build_parser()
    assert parser.parse_args([*command, "--top-k", "3"]).k == 3
    assert parser.parse_args([*command, "-k", "4"]).k == 4
    assert parser.parse_args(command).k == 10


@pytest.mark.parametrize("command", [["registry"], ["similar", "a-bgm"], ["recommend", "clip.wav"]])
def test_a_read_only_command_outside_the_project_names_the_missing_store_and_creates_none(
    command, tmp_path, monkeypatch, capsys
):
    # MLflow would create an empty store at sqlite:///mlflow.db here, and every model would
    # then read as unregistered ("@champion is now none"), which points the user the wrong way.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(command) == 2
    error = capsys.readouterr().err
    assert f"no MLflow tracking store at {tmp_path / 'mlflow.db'}" in error
    assert "MLFLOW_TRACKING_URI" in error and "Traceback" not in error
    assert not (tmp_path / "mlflow.db").exists()
