"""The README's recipes name commands, flags, params and files that exist.

The recipes themselves are followed for real by the integration, serving and UI tests; this
catches the drift between prose and code that those cannot see: a renamed flag, a make target
or a params key in a copy-pasteable line.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import yaml

from bgmfit import config
from bgmfit.cli import build_parser
from tests.signals import REPO

DOCS = [
    REPO / "README.md",
    REPO / "CHANGELOG.md",
    REPO / "docs/results.md",
    REPO / "corpus/README.md",
    REPO / "benchmarks/README.md",
]
SECTIONS = {
    "fetch": config.FetchParams,
    "features": config.FeaturesParams,
    "train_match": config.TrainMatchParams,
    "train_triplet": config.TrainTripletParams,
    "evaluate": config.EvaluateParams,
    "register": config.RegisterParams,
    "index": config.IndexParams,
    "package": config.PackageParams,
}


def _shell_lines() -> list[str]:
    """Every command line of every fenced bash block, continuation lines joined."""
    lines = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def _commands(program: str) -> list[list[str]]:
    """The simple commands of the docs that start with ``program``, as argument lists."""
    found = []
    for line in _shell_lines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in {"&&", "||", "|", ";", "&"}:
                if words and words[0] == program:
                    found.append(words)
                words = []
            else:
                words.append(token)
    return found


def test_the_docs_have_recipes_to_check():
    assert len(_commands("bgmfit")) >= 5 and len(_commands("make")) >= 4 and len(_commands("dvc")) >= 4


@pytest.mark.parametrize("words", _commands("bgmfit"), ids=" ".join)
def test_every_bgmfit_command_in_the_docs_parses(words: list[str]):
    build_parser().parse_args(words[1:])  # argparse exits (and fails the test) on a wrong flag


def test_every_make_target_in_the_docs_exists():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    for words in _commands("make"):
        assert set(words[1:]) <= targets, f"{' '.join(words)}: no such target in the Makefile"


def test_every_param_set_in_the_docs_is_valid():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    overrides = [w for words in _commands("dvc") for w in words if re.fullmatch(r"\w+\.\w+=\S+", w)]
    assert overrides
    for override in overrides:
        key, value = override.split("=", 1)
        section, name = key.split(".")
        assert section in SECTIONS and name in params[section], f"{override}: no such key in params.yaml"
        config.params_from_dict(section, SECTIONS[section], params[section] | {name: yaml.safe_load(value)})


def test_every_repository_path_the_docs_name_exists():
    for doc in DOCS:
        named = re.findall(r"`((?:src|scripts|benchmarks|tests|docs|\.github)/[\w./-]+)`", doc.read_text())
        for path in named:
            assert (REPO / path).exists(), f"{doc.name} names {path}, which does not exist"


def test_the_readme_is_a_guide_of_about_250_lines():
    assert len((REPO / "README.md").read_text().splitlines()) <= 260


def test_the_results_page_is_what_the_committed_metrics_give():
    # scripts/results.py writes docs/results.md from metrics/*.json; `make results` after each run.
    check = subprocess.run(
        [sys.executable, "scripts/results.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
