"""Real Lightning training of both networks, on a tiny synthetic feature store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import pytest
import torch

from bgmfit.config import TrainMatchParams, TrainTripletParams, load_params
from bgmfit.data.datamodules import PairDataModule, TripletDataModule
from bgmfit.data.pairs import fit_grade
from bgmfit.data.store import FeatureStore
from bgmfit.errors import BgmfitError
from bgmfit.metrics import partner_retrieval
from bgmfit.models.match_module import MatchModule
from bgmfit.models.triplet_module import TripletModule
from bgmfit.stages import train_match, train_triplet
from bgmfit.tracking.runs import tracking_uri
from bgmfit.training import stage_run, train
from tests.integration.helpers import bgmfit, write_params, write_synthetic_store
from tests.signals import REPO

pytestmark = pytest.mark.slow


def _params(cls, section: str, **overrides):
    params = load_params(section, cls, REPO / "params.yaml")
    return params.model_copy(update=dict(accelerator="cpu", min_epochs=1, **overrides))


def test_fast_dev_run_trains_both_networks(project: Path):
    store = FeatureStore.load(project / "data/features")
    match = MatchModule(101, 8, 1, 3, 8, 8, False, 0.0, 1e-3, 0.0)
    triplet = TripletModule(32 * 20, 16, 8, 0.0, 0.2, "semi-hard", 1e-3, 0.0)
    for module, data in (
        (match, PairDataModule(store, batch_size=8, seed=0)),
        (triplet, TripletDataModule(store, "mfcc_frames", 3, 3, 2, seed=0)),
    ):
        trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False)
        trainer.fit(module, datamodule=data)
        assert trainer.global_step == 1


def test_the_instance_term_trains_on_two_copies_of_each_track(tmp_path: Path, rng):
    store = FeatureStore.load(write_synthetic_store(tmp_path / "features", rng, copies=True))
    assert store.copies_track.size > 0
    match = MatchModule(101, 8, 1, 3, 8, 8, False, 0.0, 1e-3, 0.0, instance_weight=1.0)
    triplet = TripletModule(32 * 20, 16, 8, 0.0, 0.2, "semi-hard", 1e-3, 0.0, instance_weight=1.0)
    for module, data in (
        (match, PairDataModule(store, batch_size=8, seed=0, two_views=True)),
        (triplet, TripletDataModule(store, "mfcc_frames", 3, 3, 2, seed=0, two_views=True)),
    ):
        trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False)
        trainer.fit(module, datamodule=data)
        # Two copies of one track are not yet nearer each other than other tracks: the term is
        # well above zero, and the total loss carries it.
        instance = float(trainer.callback_metrics["train/instance_loss"])
        assert instance > 0.1 and float(trainer.callback_metrics["train/loss"]) > instance


def test_val_ranking_metrics_are_the_evaluations_over_every_val_pair(project: Path):
    store = FeatureStore.load(project / "data/features")
    module = MatchModule(101, 8, 1, 3, 8, 8, False, 0.0, 1e-3, 0.0, head="interactions").eval()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (logged,) = trainer.validate(
        module, datamodule=PairDataModule(store, batch_size=8, seed=0), verbose=False
    )
    foregrounds, bgms = store.foregrounds("val"), store.bgms("val")
    fused = torch.from_numpy(store.fused)
    with torch.no_grad():
        scores = np.stack([module(fused[[f] * len(bgms)], fused[bgms]).numpy() for f in foregrounds])
    relevance = np.array([[fit_grade(store, f, b) for b in bgms] for f in foregrounds])
    expected = partner_retrieval(scores, relevance)
    assert logged["val/mrr"] == pytest.approx(expected["mrr"], abs=1e-5)
    assert logged["val/ndcg_at_10"] == pytest.approx(expected["ndcg@10"], abs=1e-5)
    assert 0 < logged["val/mrr"] <= 1 and 0 <= logged["val/auroc"] <= 1


# Warnings about our own choices that every `make run` would print: the run id file sits beside
# the checkpoints, metrics are logged per epoch, and MLflow resolves a local path as two sources.
_OWN_CHOICES = (
    "exists and is not empty",
    "smaller than the logging interval",
    "interpreted in multiple ways",
)


def test_training_stages_log_a_run_with_curves_params_lineage_and_model(project: Path, recwarn):
    threads = {"match": 2, "triplet": 1}  # 2: not the count make gives every process (1)
    before = torch.get_num_threads()
    try:
        summary = train_match.run(
            _params(TrainMatchParams, "train_match", max_epochs=2, batch_size=8, threads=threads["match"])
        )
        train_triplet.run(
            _params(
                TrainTripletParams,
                "train_triplet",
                max_epochs=2,
                batches_per_epoch=3,
                styles_per_batch=3,
                tracks_per_style=3,
                threads=threads["triplet"],
            )
        )
    finally:
        torch.set_num_threads(before)
    noise = [str(w.message) for w in recwarn if any(s in str(w.message) for s in _OWN_CHOICES)]
    assert not noise, noise
    assert summary["epochs"] == 2
    client = mlflow.MlflowClient()
    for name in ("match", "triplet"):
        record = json.loads((project / f"models/{name}/training.json").read_text())
        run = client.get_run(record["run_id"])
        assert run.info.status == "FINISHED"
        assert run.info.run_name.startswith(f"train_{name} "), "runs are named after their network"
        assert run.data.params["max_epochs"] == "2" and "embed_dim" in run.data.params
        assert run.data.tags["git_commit"] and "dvc_features_md5" in run.data.tags
        # CPU results depend on the thread count (the order of float sums): a param, and runs record it.
        assert run.data.tags["torch_threads"] == str(threads[name])
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2  # one point per epoch
        assert run.inputs.dataset_inputs, "the dataset lineage is logged"
        model = mlflow.pyfunc.load_model(record["model_uri"])  # MLflow's own loader, from weights + config
        example = model.input_example
        assert model.predict(example).shape[0] == len(example) and len(record["weights_sha256"]) == 64
        assert (project / f"models/{name}/model.ckpt").is_file()


def test_resume_continues_from_last_checkpoint_with_its_step_count(project: Path):
    first = train_match.run(_params(TrainMatchParams, "train_match", max_epochs=2, batch_size=8, patience=50))
    record = json.loads((project / "models/match/training.json").read_text())
    resumed = train_match.run(
        _params(TrainMatchParams, "train_match", max_epochs=4, batch_size=8, patience=50, resume=True)
    )
    again = json.loads((project / "models/match/training.json").read_text())
    assert resumed["epochs"] == 4 and resumed["steps"] == 2 * first["steps"]
    # A finished run is never reopened: the checkpoint continues in a new run that names it.
    client = mlflow.MlflowClient()
    assert again["run_id"] != record["run_id"]
    assert client.get_run(again["run_id"]).data.tags["bgmfit.resumed_from"] == record["run_id"]
    assert client.get_run(record["run_id"]).info.status == "FINISHED"


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.parametrize("network", ["match", "triplet"])
def test_a_resumed_fit_repeats_the_unbroken_one_bit_for_bit(project: Path, network: str):
    """Dropout draws from torch's global generator: last.ckpt carries its state, and the first
    epoch after a resume draws the loader seed an unbroken epoch draws, so the epochs after a
    resume see the batches and masks of a fit that never stopped (see training._RandomState)."""
    if network == "match":
        stage, cls, shape = train_match, TrainMatchParams, {"batch_size": 8}
    else:
        stage, cls = train_triplet, TrainTripletParams
        shape = {"batches_per_epoch": 3, "styles_per_batch": 3, "tracks_per_style": 3}
    settings = {"patience": 50, "dropout": 0.3, **shape}  # without dropout there would be nothing to draw
    checkpoints = project / f"models/{network}/checkpoints"

    unbroken = stage.run(_params(cls, f"train_{network}", max_epochs=4, **settings))
    expected = _weights(checkpoints / "last.ckpt")
    shutil.rmtree(checkpoints)
    stage.run(_params(cls, f"train_{network}", max_epochs=2, **settings))
    resumed = stage.run(_params(cls, f"train_{network}", max_epochs=4, resume=True, **settings))
    got = _weights(checkpoints / "last.ckpt")

    assert unbroken["epochs"] == 4 and resumed == unbroken  # epochs, steps and the best score
    assert got.keys() == expected.keys()
    differing = [k for k in expected if not torch.equal(got[k], expected[k])]
    assert not differing, f"resumed weights differ from the unbroken fit's in {differing}"


def test_a_failed_resume_leaves_the_earlier_finished_run_as_it_was(project: Path, capfd):
    train_match.run(_params(TrainMatchParams, "train_match", max_epochs=1, batch_size=8))
    run_id = json.loads((project / "models/match/training.json").read_text())["run_id"]
    (project / "models/match/checkpoints/last.ckpt").write_bytes(b"torn")
    with pytest.raises(BgmfitError, match=r"last\.ckpt: not a readable checkpoint"):
        train_match.run(_params(TrainMatchParams, "train_match", max_epochs=2, batch_size=8, resume=True))
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "FINISHED"
    # auto: the torn checkpoint is set aside and a new run trains from scratch, saying so.
    train_match.run(_params(TrainMatchParams, "train_match", max_epochs=1, batch_size=8, resume="auto"))
    assert "resume: auto: " in capfd.readouterr().err
    assert client.get_run(run_id).info.status == "FINISHED"
    assert json.loads((project / "models/match/training.json").read_text())["run_id"] != run_id


def _epoch_of(checkpoint: Path) -> int:
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"])
    except Exception:  # not there yet, or being written
        return -1


def test_a_training_killed_with_sigkill_resumes_with_auto_losing_at_most_one_epoch(project: Path):
    """kill -9 in mid-run, for real; then resume: auto continues the same run with no step logged twice."""
    import signal
    import subprocess
    import sys
    import time

    from tests.integration.helpers import environment

    settings = {"max_epochs": 150, "min_epochs": 150, "batch_size": 8, "patience": 500, "accelerator": "cpu"}
    write_params(project, train_match=settings | {"resume": "auto"})
    command = [sys.executable, "-m", "bgmfit", "train_match"]
    training = subprocess.Popen(command, cwd=project, env=environment(), stderr=subprocess.PIPE, text=True)
    last = project / "models/match/checkpoints/last.ckpt"
    deadline = time.monotonic() + 300
    while _epoch_of(last) < 3 and training.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    training.send_signal(signal.SIGKILL)
    training.communicate(timeout=60)
    assert training.returncode == -signal.SIGKILL, "the fit ended before it could be killed"
    client = mlflow.MlflowClient(tracking_uri())  # this project's store, not an earlier test's
    run_id = (project / "models/match/checkpoints/mlflow_run_id").read_text().strip()
    assert client.get_run(run_id).info.status == "RUNNING", "nothing could close it"
    logged = len(client.get_metric_history(run_id, "train/loss"))
    saved = _epoch_of(last)  # the index of the last epoch it holds
    assert saved >= logged - 2, f"last.ckpt at epoch {saved}, {logged} epochs logged"

    resumed = subprocess.run(
        command, cwd=project, env=environment(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: continuing" in resumed.stderr and "marked FAILED" in resumed.stderr
    record = json.loads((project / "models/match/training.json").read_text())
    assert record["run_id"] == run_id and client.get_run(run_id).info.status == "FINISHED"
    assert record["epochs"] == 150
    for key in ("train/loss", "val/loss"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)) == 150, f"{key}: {len(steps)} points, {len(set(steps))} steps"


# The process dies the instant last.ckpt of epoch 2 is on disk: the narrowest window a kill -9 can hit.
_DIE_AFTER_LAST_CKPT = """
import os, lightning
save = lightning.Trainer.save_checkpoint
def save_then_die(trainer, filepath, *args, **kwargs):
    save(trainer, filepath, *args, **kwargs)
    if str(filepath).endswith("last.ckpt") and trainer.current_epoch == 2:
        os._exit(9)
lightning.Trainer.save_checkpoint = save_then_die
from bgmfit.cli import main
raise SystemExit(main(["train_match"]))
"""


def test_a_run_killed_just_after_last_ckpt_is_written_resumes_with_every_epochs_metrics(project: Path):
    """Each epoch's metrics are logged before its last.ckpt is written, so that kill loses no point."""
    import subprocess
    import sys

    from tests.integration.helpers import environment

    settings = {"max_epochs": 5, "min_epochs": 5, "batch_size": 8, "patience": 100, "accelerator": "cpu"}
    write_params(project, train_match=settings | {"resume": "auto"})
    killed = subprocess.run(
        [sys.executable, "-c", _DIE_AFTER_LAST_CKPT], cwd=project, env=environment(), timeout=600
    )
    assert killed.returncode == 9, "the fit ended before it wrote last.ckpt of epoch 2"
    resumed = subprocess.run(
        [sys.executable, "-m", "bgmfit", "train_match"],
        cwd=project,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: continuing" in resumed.stderr
    client = mlflow.MlflowClient(tracking_uri())
    run_id = json.loads((project / "models/match/training.json").read_text())["run_id"]
    for key in ("train/loss", "val/loss"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)) == 5, f"{key}: steps {sorted(steps)}"


def test_a_killed_run_that_is_not_resumed_is_marked_failed_with_the_reason(project: Path):
    import signal
    import subprocess
    import sys
    import time

    from tests.integration.helpers import environment

    settings = {"max_epochs": 40, "min_epochs": 40, "batch_size": 8, "patience": 100, "accelerator": "cpu"}
    write_params(project, train_match=settings | {"resume": False})
    command = [sys.executable, "-m", "bgmfit", "train_match"]
    training = subprocess.Popen(command, cwd=project, env=environment(), stderr=subprocess.DEVNULL)
    id_file = project / "models/match/checkpoints/mlflow_run_id"
    deadline = time.monotonic() + 300
    while _epoch_of(id_file.parent / "last.ckpt") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = id_file.read_text().strip()
    training.send_signal(signal.SIGKILL)
    training.wait(60)
    write_params(project, train_match=settings | {"max_epochs": 1, "min_epochs": 1})
    again = subprocess.run(
        command, cwd=project, env=environment(), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    run = mlflow.MlflowClient(tracking_uri()).get_run(killed)
    assert run.info.status == "FAILED"
    assert "ended without closing the run (killed)" in run.data.tags["bgmfit.end_reason"]


def test_resume_without_a_checkpoint_fails_loudly(project: Path):
    with pytest.raises(BgmfitError, match=r"resume is true but .*last\.ckpt does not exist"):
        train_match.run(_params(TrainMatchParams, "train_match", resume=True))


def test_resuming_a_checkpoint_of_another_network_shape_names_the_mismatch(project: Path):
    # A user who changes train_match.agreement (or the features) and resumes the old last.ckpt.
    train_match.run(_params(TrainMatchParams, "train_match", max_epochs=1, batch_size=8, agreement=()))
    other = _params(TrainMatchParams, "train_match", max_epochs=2, batch_size=8, resume=True)
    with pytest.raises(
        BgmfitError,
        match=r"last\.ckpt does not fit the network these params build "
        r"\(head\.fuse\.0\.weight: \(64, 256\) in the checkpoint, \(64, 259\) now\); set resume: false",
    ):
        train_match.run(other)
    (project / "models/match/checkpoints/last.ckpt").write_bytes(b"torn")
    with pytest.raises(BgmfitError, match=r"last\.ckpt: not a readable checkpoint"):
        train_match.run(other)


def test_resuming_a_run_missing_from_the_tracking_store_says_where_to_look(
    project: Path, monkeypatch, tmp_path
):
    # A user resumes after pointing MLFLOW_TRACKING_URI at another store than the one trained into.
    train_match.run(_params(TrainMatchParams, "train_match", max_epochs=1, batch_size=8))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(
        BgmfitError,
        match=r"MLflow run [0-9a-f]{32} of .*last\.ckpt is not in the tracking store sqlite:///.*other\.db; "
        r"point MLFLOW_TRACKING_URI at the store it was logged to, or delete .*mlflow_run_id",
    ):
        train_match.run(_params(TrainMatchParams, "train_match", max_epochs=2, batch_size=8, resume=True))
    # The refusal comes first: the wrong store gains no experiment on the way.
    other = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'other.db'}")
    assert [e.name for e in other.search_experiments()] == ["Default"]


class _Crash(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        raise RuntimeError("disk full (injected)")


def test_an_exception_inside_training_leaves_the_run_failed(project: Path):
    params = _params(TrainMatchParams, "train_match", max_epochs=3, batch_size=8)
    store = FeatureStore.load(project / "data/features")
    module = MatchModule(
        101,
        params.tower_channels,
        params.tower_depth,
        params.kernel_size,
        params.embed_dim,
        params.fused_dim,
        params.share_towers,
        params.dropout,
        params.lr,
        params.weight_decay,
        params.head,
        instance_weight=params.instance_weight,  # as from_params: MLflow refuses a param logged twice unequal
    )
    checkpoints = project / "models/match/checkpoints"
    with pytest.raises(RuntimeError, match="injected"):
        with stage_run("train_match", checkpoints, resume=None) as active:
            run_id = active.info.run_id
            train(
                module,
                PairDataModule(store, 8, 0),
                params,
                checkpoints,
                active,
                "val/loss",
                "min",
                [_Crash()],
            )
    assert mlflow.MlflowClient().get_run(run_id).info.status == "FAILED"


def test_ddp_on_two_cpu_processes_trains_once_into_one_run(project: Path):
    write_params(
        project,
        train_match={
            "max_epochs": 2,
            "min_epochs": 1,
            "batch_size": 8,
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp",
        },
    )
    result = bgmfit(project, "train_match")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    mlflow.set_tracking_uri(tracking_uri())  # this process may still point at an earlier test's store
    runs = mlflow.search_runs(experiment_names=["train_match"], output_format="list")
    assert [r.info.status for r in runs] == ["FINISHED"], "only rank 0 owns an MLflow run"
    record = json.loads((project / "models/match/training.json").read_text())
    assert record["run_id"] == runs[0].info.run_id and record["epochs"] == 2


def test_a_feature_store_without_matching_column_names_is_refused_with_the_file_named(project: Path):
    features = project / "data/features"
    stats = json.loads((features / "norm_stats.json").read_text())
    (features / "norm_stats.json").write_text(json.dumps(stats | {"columns": stats["columns"][:-1]}))
    with pytest.raises(BgmfitError, match=r"norm_stats\.json names 100 columns but fused\.npy has 101"):
        FeatureStore.load(features)
    (features / "norm_stats.json").unlink()
    with pytest.raises(BgmfitError, match=r"missing .*norm_stats\.json; run the features stage first"):
        FeatureStore.load(features)
    (features / "norm_stats.json").write_text(json.dumps(stats)[:40])  # torn by a killed run
    with pytest.raises(
        BgmfitError, match=r"norm_stats\.json: not valid normalisation statistics .*features stage"
    ):
        FeatureStore.load(features)
    (features / "norm_stats.json").write_text(json.dumps({"columns": stats["columns"]}))
    with pytest.raises(
        BgmfitError, match=r"norm_stats\.json: not valid normalisation statistics \(no 'dimensions'\)"
    ):
        FeatureStore.load(features)


def test_a_torn_or_foreign_feature_array_is_refused_with_the_file_named(project: Path):
    features = project / "data/features"
    fused = (features / "fused.npy").read_bytes()
    (features / "fused.npy").write_bytes(fused[: len(fused) // 2])  # torn by a killed run
    with pytest.raises(BgmfitError, match=r"fused\.npy: not a readable feature array .*; rerun the features"):
        FeatureStore.load(features)
    (features / "fused.npy").write_bytes(b"not numpy at all")
    with pytest.raises(BgmfitError, match=r"fused\.npy: not a readable feature array"):
        FeatureStore.load(features)
    np.save(features / "fused.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(BgmfitError, match=r"expected a 3-d float array, got float32 of shape \(3, 4\)"):
        FeatureStore.load(features)
    (features / "fused.npy").write_bytes(fused)
    frames = np.load(features / "mfcc_frames.npy")
    frames[1, 2, 3] = np.nan
    np.save(features / "mfcc_frames.npy", frames)
    with pytest.raises(BgmfitError, match=r"mfcc_frames\.npy: 1 value\(s\) are NaN or infinite"):
        FeatureStore.load(features)


def test_a_resumed_runs_logger_drops_the_points_its_run_already_has(project: Path):
    """The repeat of an epoch whose metrics were logged before its kill adds no second point at that step."""
    from bgmfit.training import _OnceAStep

    client = mlflow.MlflowClient(tracking_uri())
    run_id = client.create_run(client.create_experiment("resumed")).info.run_id
    for step in range(3):
        client.log_metric(run_id, "train/loss", 1.0 - step / 10, step=step)
    logger = _OnceAStep(tracking_uri=tracking_uri(), run_id=run_id, log_model=False)
    logger.log_metrics({"train/loss": 0.5, "val/loss": 0.6}, step=2)  # the repeated epoch
    logger.log_metrics({"train/loss": 0.4, "val/loss": 0.5}, step=3)
    logger.log_metrics({"train/loss": 0.3}, step=3)  # Lightning's repeat of _TrainingMetricsFirst's points
    logger.finalize("success")
    history = {key: client.get_metric_history(run_id, key) for key in ("train/loss", "val/loss")}
    assert [(m.step, m.value) for m in history["train/loss"]] == [(0, 1.0), (1, 0.9), (2, 0.8), (3, 0.4)]
    assert sorted(m.step for m in history["val/loss"]) == [2, 3]  # a key new to the run is logged whole
