"""``dvc.yaml`` declares what each stage runs: every module it imports and every params section it reads.

A stage's code is the import closure of ``bgmfit.stages.<name>`` inside ``src/bgmfit`` (imports
inside functions included, and modules named by a string, which are loaded by path), with each
package's ``__init__.py`` on the way. A file missing from a stage's deps would let ``dvc repro``
keep a stale output after that file changed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.signals import REPO

SRC = REPO / "src"
MODULE_NAME = re.compile(r"bgmfit(\.[a-z_][a-z0-9_]*)+")


def _path(module: str) -> Path | None:
    """The file of a ``bgmfit`` module or package, or ``None`` for a name that is not one."""
    base = SRC / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """The ``bgmfit`` modules that the file at ``path`` imports or names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # submodules imported by name
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MODULE_NAME.fullmatch(node.value)
        ):
            found.add(node.value)
    return {m for m in found if m.split(".")[0] == "bgmfit" and _path(m) is not None}


def import_closure(module: str) -> set[Path]:
    """Every file under ``src/bgmfit`` that running ``module`` may execute."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages on the way
        todo += sorted(_imports(_path(name)) - seen)
    return {_path(m) for m in seen}


def params_read(module: str) -> set[str]:
    """The sections a stage module loads: the first argument of each ``load_params`` call."""
    sections = set()
    for node in ast.walk(ast.parse(_path(module).read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_params":
            assert isinstance(node.args[0], ast.Constant), f"{module}: name the section as a literal"
            sections.add(node.args[0].value)
    return sections


def undeclared(stage: str, spec: dict) -> list[str]:
    """What stage ``stage`` of ``dvc.yaml`` runs or reads but does not declare, as readable lines."""
    module = f"bgmfit.stages.{stage}"
    deps = [REPO / d for d in spec.get("deps", []) if str(d).startswith("src/")]
    problems = [f"{d.relative_to(REPO)} does not exist" for d in deps if not d.exists()]
    for path in sorted(import_closure(module)):
        if not any(path == d or d in path.parents for d in deps):
            problems.append(f"deps lack {path.relative_to(REPO)}")
    declared = {str(p).split(".")[0] for p in spec.get("params", [])}
    problems += [f"params lack {s}" for s in sorted(params_read(module) - declared)]
    return problems


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_declares_its_code_and_params(stage: str):
    assert STAGES[stage]["cmd"] == f"bgmfit {stage}", "a stage runs the sub-command of its own name"
    assert not undeclared(stage, STAGES[stage])


def test_the_check_fails_when_a_dep_or_a_params_section_is_removed():
    spec = STAGES["index"]
    assert not undeclared("index", spec)
    without_models = {**spec, "deps": [d for d in spec["deps"] if d != "src/bgmfit/models"]}
    assert "deps lack src/bgmfit/models/export.py" in undeclared("index", without_models)
    without_features = {**spec, "params": [p for p in spec["params"] if p != "features"]}
    assert undeclared("index", without_features) == ["params lack features"]
