"""The MLflow UI in a real headless Chromium: both networks' runs side by side, and the aliases.

The tiny served project's store (every stage run by the real CLI) is opened with ``mlflow ui``
on 127.0.0.1. Chromium is Debian's, installed by this check where it is missing, and driven
by Playwright. Screenshots are kept in ``build/ui-check/`` for a person to look at.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from tests.conftest import SCREENSHOTS
from tests.integration.helpers import environment
from tests.system import free_port, local_server

pytestmark = [pytest.mark.slow, pytest.mark.ui]

# The text of the cells in the metrics row of a link, one per run, in the order of the URL.
ROW_CELLS = """link => {
  const cell = link.parentElement;
  const board = cell.closest(".ReactVirtualized__Grid").parentElement.parentElement;
  return [...board.querySelectorAll(".ReactVirtualized__Grid__innerScrollContainer > div")]
    .filter(d => d !== cell && d.style.top === cell.style.top)
    .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left))
    .map(d => d.innerText.trim());
}"""


def metric_row(page, key: str) -> list[str]:
    """The cells of metric ``key`` in the comparison, one per run.

    The metrics table is a virtualised grid: a row exists in the page only while it is scrolled
    into view. This scrolls it with the mouse wheel, as a person would, and matches the cells to
    the name by their row offset: MLflow's column of names does not follow the wheel exactly.
    """
    values = page.locator(".ReactVirtualized__Grid").nth(1)
    link = page.locator("a[title='Plot chart']").filter(has_text=re.compile(rf"^{re.escape(key)}$"))
    values.hover()
    page.mouse.wheel(0, -100_000)
    for _ in range(100):
        page.wait_for_timeout(150)
        if link.count() and link.first.is_visible():
            break
        page.mouse.wheel(0, 90)
    assert link.count(), f"metric {key} is not in the comparison"
    return link.first.evaluate(ROW_CELLS)


@dataclass(frozen=True)
class UI:
    url: str
    client: mlflow.MlflowClient


@pytest.fixture(scope="module")
def ui(served_project: Path, tmp_path_factory) -> UI:
    """`mlflow ui` on the served project's store, on 127.0.0.1; stopped when the module is done."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    store = f"sqlite:///{served_project / 'mlflow.db'}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store]
    with local_server(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        f"{base}/health",
        tmp_path_factory.mktemp("mlflow-ui") / "mlflow-ui.log",
        cwd=served_project,
        env=environment(),
    ):
        yield UI(base, mlflow.MlflowClient(tracking_uri=store))


@pytest.fixture
def page(browser):
    """A fresh tab for each test, tall enough to show a whole comparison."""
    page = browser.new_page(viewport={"width": 1440, "height": 2400})
    page.set_default_timeout(60_000)
    yield page
    page.close()


def _close_assistant(page) -> None:
    """MLflow 3 opens an assistant panel beside every page; it would hide half the comparison."""
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.first.click()


def test_both_networks_runs_compare_side_by_side(ui: UI, page):
    runs = []
    for name in ("train_match", "train_triplet"):
        experiment = ui.client.get_experiment_by_name(name)
        runs += ui.client.search_runs([experiment.experiment_id], order_by=["start_time DESC"], max_results=1)
    assert len(runs) == 2, "the served project has a run of each network"
    query = {"runs": [r.info.run_id for r in runs], "experiments": [r.info.experiment_id for r in runs]}
    page.goto(f"{ui.url}/#/compare-runs?" + "&".join(f"{k}={json.dumps(v)}" for k, v in query.items()))
    page.get_by_text("Comparing 2 Runs from 2 Experiments").wait_for()
    page.locator("a[title='Plot chart']").first.wait_for(state="attached")
    _close_assistant(page)

    def row(header: str) -> list[str]:
        title = page.get_by_role("rowheader", name=header, exact=True)
        cells = page.get_by_role("row").filter(has=title).first.locator("td")
        return [c.inner_text().strip() for c in cells.all()]

    assert row("Run Name:") == [r.info.run_name for r in runs]
    assert row("Experiment Name:") == ["train_match", "train_triplet"]
    for column, run in enumerate(runs):
        for key, value in run.data.params.items():
            assert row(key)[column] == value, f"param {key} of {run.info.run_name}"
    for column, (run, headline) in enumerate(
        zip(runs, ("test/model/roc_auc", "test/model/map_at_10"), strict=True)
    ):
        for key in (headline, "train/loss"):
            cells = metric_row(page, key)
            # The UI rounds to 3 decimals.
            assert float(cells[column]) == pytest.approx(run.data.metrics[key], abs=6e-4), (key, cells)
    # Scrolling the metrics leaves MLflow's column of metric names behind (a UI quirk); the
    # screenshot is of the page as it opens, names and values in step.
    page.reload()
    page.get_by_text("Comparing 2 Runs from 2 Experiments").wait_for()
    page.locator("a[title='Plot chart']").first.wait_for(state="attached")
    _close_assistant(page)
    page.screenshot(path=SCREENSHOTS / "compare-runs.png", full_page=True)
    assert (SCREENSHOTS / "compare-runs.png").stat().st_size > 50_000


@pytest.mark.parametrize("model", ["bgmfit-match", "bgmfit-triplet"])
def test_the_registry_page_shows_the_champion_alias(ui: UI, page, model: str):
    champion = ui.client.get_model_version_by_alias(model, "champion").version
    page.goto(f"{ui.url}/#/models/{model}")
    row = page.get_by_role("row").filter(has=page.get_by_text(f"Version {champion}", exact=True))
    row.wait_for()
    _close_assistant(page)
    # The alias tag reads "@ champion"; the gate's own tag on the version reads "gate : champion".
    assert "@ champion" in " ".join(row.inner_text().split())
    page.screenshot(path=SCREENSHOTS / f"registry-{model}.png")
