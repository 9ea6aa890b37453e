"""One way to train either network: seeded Lightning, checkpoints that resume, an MLflow run.

The MLflow run is opened around the whole stage, so any exception - inside
Lightning or after it - ends the run FAILED instead of leaving it RUNNING; a run
whose process was killed is marked FAILED by the next stage that opens one.
``last.ckpt`` is written every epoch, with the run id beside it and torch's random
state inside; ``resume: true`` (or ``auto``, for a killed run of the same params and
features) continues both, and ends at the weights an unbroken fit ends at.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.exceptions import MlflowException

from bgmfit.config import TrainerParams
from bgmfit.errors import BgmfitError
from bgmfit.files import FEATURES, write_json
from bgmfit.models.export import state_mismatch
from bgmfit.networks import Network
from bgmfit.tracking.logged import log_network
from bgmfit.tracking.runs import (
    dvc_output_hash,
    git_commit,
    process_alive,
    tracking_uri,
    use_tracking_store,
    without_password,
)

RUN_ID_FILE = "mlflow_run_id"
#: Beside the run id: a hash of the params and features the checkpoint was trained with.
FINGERPRINT_FILE = "fingerprint"
PID_TAG, HOST_TAG = "bgmfit.pid", "bgmfit.host"


@dataclass(frozen=True)
class TrainingResult:
    """What a finished training leaves behind."""

    run_id: str
    best_checkpoint: str
    best_score: float
    epochs: int
    global_step: int


class _OnceAStep(MLFlowLogger):
    """MLflow's logger, but a metric is never logged twice at one step of its run.

    A run killed after an epoch's metrics were logged and before its ``last.ckpt`` was
    written repeats that epoch when it resumes. MLflow cannot delete a metric point, so the
    repeat's points at steps the run already has are dropped: that epoch keeps the values
    of the attempt that was killed. Lightning's own repeat of what :class:`_TrainingMetricsFirst`
    logged is dropped the same way.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        client = mlflow.MlflowClient(kwargs["tracking_uri"])
        run_id = kwargs["run_id"]
        self._steps = {
            key: {m.step for m in client.get_metric_history(run_id, key)}
            for key in client.get_run(run_id).data.metrics
        }

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        step = step or 0
        fresh = {k: v for k, v in metrics.items() if step not in self._steps.get(k, ())}
        if fresh:
            super().log_metrics(fresh, step)
            for key in fresh:
                self._steps.setdefault(key, set()).add(step)


class _TrainingMetricsFirst(L.Callback):
    """Log a training epoch's metrics before its ``last.ckpt`` is written, not after.

    Lightning logs them once every callback's ``on_train_epoch_end`` has run, checkpoints
    included, so a run killed between the two would resume past an epoch whose training
    metrics were never logged. Lightning calls this before any checkpoint; its own points
    follow at the same step, and :class:`_OnceAStep` drops them.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.logger is None:
            return
        training = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        # The step Lightning logs a training epoch at: its last batch's.
        trainer.logger.log_metrics(training, step=trainer.fit_loop.epoch_loop._batches_that_stepped - 1)


class _RandomState(L.Callback):
    """Carry torch's global random state in every checkpoint, so that a resumed fit repeats an unbroken one.

    Dropout draws its masks from that generator. Lightning saves the weights, the
    optimiser, the loops' counts and each callback's state, not the generator, and
    re-seeds it after its sanity check; a resumed fit would draw its masks from the
    seed's state again, and end at other weights. The saved state is put back when
    training starts, after that check.

    The data come from generators seeded by the seed and the epoch
    (:mod:`bgmfit.data.datamodules`), but one step is Lightning's: each ``iter()`` of a
    train loader draws a seed from the loader's generator (method A's), or from the
    global one (method B's have none), before the epoch's shuffle and masks are drawn.
    An unbroken fit starts each epoch after the first with two (Lightning reloads the
    loader, then its epoch loop starts a new iterator); the first epoch after a resume
    starts with one. :meth:`on_train_epoch_start` makes the missing one, so that the
    epoch draws what it would have. The bit-for-bit test of resuming checks this
    against the Lightning installed.
    """

    def __init__(self) -> None:
        self._saved: dict | None = None
        self._resumed = False

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saved is None:  # a fresh fit, or a checkpoint written before this callback
            return
        torch.set_rng_state(self._saved["torch"])
        if "cuda" in self._saved and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._saved["cuda"])
        self._saved, self._resumed = None, True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._resumed:
            iter(trainer.train_dataloader)  # the iter() an unbroken fit's epoch starts with too
            self._resumed = False


@dataclass(frozen=True)
class Resume:
    """Where a fit continues from: ``last.ckpt``, and the MLflow run to reopen (``None``: a new run)."""

    checkpoint: Path
    run_id: str | None


def plan_resume(
    module: L.LightningModule, checkpoint_dir: Path, resume: bool | str, fingerprint: str
) -> Resume | None:
    """Decide, before any run is opened, whether this fit continues ``checkpoint_dir/last.ckpt``.

    ``resume: true`` continues it or fails with the reason; ``auto`` continues it only
    when it is a killed run's of the same params and features (``fingerprint``), and
    otherwise starts afresh, saying why; ``false`` starts afresh. A run that had
    finished is never reopened, so its state never changes: its checkpoint continues
    in a new run tagged ``bgmfit.resumed_from``.

    Raises
    ------
    BgmfitError
        With ``resume: true``: no ``last.ckpt``, an unreadable one, one of another
        network shape, or one whose run is not in the tracking store.
    """
    if resume is False:
        return None
    last = checkpoint_dir / "last.ckpt"
    auto = resume == "auto"

    def afresh(reason: str) -> None:
        print(f"resume: auto: {reason}; training from scratch", file=sys.stderr)

    if not last.is_file():
        if auto:
            return afresh(f"no {last}")
        raise BgmfitError(
            f"resume is true but {last} does not exist; set resume: false to train from scratch"
        )
    try:
        check_resumable(module, last)
    except BgmfitError as exc:
        if auto:
            return afresh(str(exc).split("; set resume")[0])
        raise
    id_file = checkpoint_dir / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    status = _run_status(run_id, checkpoint_dir) if run_id else None
    if auto:
        saved = checkpoint_dir / FINGERPRINT_FILE
        if not saved.is_file() or saved.read_text().strip() != fingerprint:
            return afresh(f"{last} was trained with other params or features")
        if status in (None, "FINISHED"):
            return afresh(f"{last} is of a run that finished")
    if status == "FINISHED":
        print(f"resume: {last} continues in a new run (its run {run_id} finished)", file=sys.stderr)
        return Resume(last, None)
    print(f"resume: continuing {last} (MLflow run {run_id or 'new'})", file=sys.stderr)
    return Resume(last, run_id)


def training_fingerprint(params: TrainerParams) -> str:
    """What a checkpoint must have been trained with to be resumed by ``auto``: params and features."""
    settings = params.model_dump(exclude={"resume"}) | {"features": dvc_output_hash(str(FEATURES))}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


@contextmanager
def stage_run(
    experiment: str, checkpoint_dir: Path, resume: Resume | None, fingerprint: str = ""
) -> Iterator[mlflow.ActiveRun]:
    """Open (or, when resuming, reopen) the stage's MLflow run.

    First, runs of this experiment that a killed process left RUNNING are marked
    FAILED with the reason (:func:`fail_orphaned_runs`); the one being resumed is
    then reopened. The run is tagged with this process, so that a later command can
    tell if it was killed.
    """
    if resume is None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    use_tracking_store()
    if resume is not None and resume.run_id is not None:
        _check_run_exists(resume.run_id, checkpoint_dir)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    fail_orphaned_runs(experiment_id)
    run_id = None if resume is None else resume.run_id
    # A readable name for the UI's run lists and comparisons; a resumed run keeps its own.
    name = None if run_id else f"{experiment} {datetime.now():%Y-%m-%d %H:%M:%S}"
    with mlflow.start_run(run_id=run_id, run_name=name) as run:
        mlflow.set_tags({PID_TAG: os.getpid(), HOST_TAG: socket.gethostname()})
        if resume is not None and run_id is None:
            resumed_from = checkpoint_dir / RUN_ID_FILE
            if resumed_from.is_file():
                mlflow.set_tag("bgmfit.resumed_from", resumed_from.read_text().strip())
        (checkpoint_dir / RUN_ID_FILE).write_text(run.info.run_id + "\n")
        (checkpoint_dir / FINGERPRINT_FILE).write_text(fingerprint + "\n")
        yield run


def fail_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark FAILED, with the reason in ``bgmfit.end_reason``, this host's RUNNING runs whose process is gone.

    A training process killed with SIGKILL (or the machine going down) cannot close its
    run; the next command that opens a run of the experiment does. Runs of other hosts
    are left alone: their processes cannot be seen from here.
    """
    client = mlflow.MlflowClient()
    host, ended = socket.gethostname(), []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        pid = run.data.tags.get(PID_TAG)
        if run.data.tags.get(HOST_TAG) != host or not (pid or "").isdigit() or process_alive(int(pid)):
            continue
        client.set_tag(
            run.info.run_id,
            "bgmfit.end_reason",
            f"process {pid} on {host} ended without closing the run (killed); marked FAILED "
            f"{datetime.now():%Y-%m-%d %H:%M:%S}",
        )
        client.set_terminated(run.info.run_id, "FAILED")
        print(f"MLflow run {run.info.run_id}: its process {pid} was killed; marked FAILED", file=sys.stderr)
        ended.append(run.info.run_id)
    return ended


def _run_status(run_id: str, checkpoint_dir: Path) -> str:
    use_tracking_store()
    _check_run_exists(run_id, checkpoint_dir)
    return mlflow.MlflowClient().get_run(run_id).info.status


def _check_run_exists(run_id: str, checkpoint_dir: Path) -> None:
    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise BgmfitError(
            f"resume: MLflow run {run_id} of {checkpoint_dir / 'last.ckpt'} is not in the tracking store "
            f"{without_password(tracking_uri())}; point MLFLOW_TRACKING_URI at the store it was logged "
            f"to, or delete {checkpoint_dir / RUN_ID_FILE} to continue the checkpoint in a new run"
        ) from None


def check_resumable(module: L.LightningModule, path: Path) -> None:
    """Refuse a checkpoint whose weights do not fit ``module``, naming the first that differs.

    Lightning would stop with a ``RuntimeError`` listing every mismatched
    tensor; the usual cause is a change of the features or of a network param
    since the checkpoint was written.

    Raises
    ------
    BgmfitError
        For an unreadable checkpoint, and for one of another shape.
    """
    try:
        # Our own file, with the hyper-parameters Lightning pickles beside the weights.
        saved = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError) as exc:
        raise BgmfitError(
            f"{path}: not a readable checkpoint ({exc}); set resume: false to train from scratch"
        ) from None
    mismatch = state_mismatch(module, saved, "in the checkpoint")
    if mismatch:
        raise BgmfitError(
            f"{path} does not fit the network these params build ({mismatch}); set resume: false to train "
            "from scratch, or restore the features and params it was trained with"
        )


def train(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    params: TrainerParams,
    checkpoint_dir: Path,
    run: mlflow.ActiveRun | None,
    monitor: str,
    mode: str,
    callbacks: list[L.Callback] | None = None,
    resume: Resume | None = None,
) -> TrainingResult | None:
    """Fit ``module`` and return the best checkpoint by ``monitor`` (``mode`` min or max).

    Metrics are logged per epoch into ``run``; params, the git commit and the DVC
    hash of the features are logged once. With ``resume`` (:func:`plan_resume`) the fit
    continues from its ``last.ckpt`` with its epoch and step counts and its random state
    (:class:`_RandomState`); ``last.ckpt`` is written at the end of every epoch, so a killed
    fit loses at most the epoch it was in, and repeats it as it would have run. ``run`` is
    ``None`` on the other ranks of a distributed fit, which log nothing and return ``None``.
    """
    L.seed_everything(params.seed, workers=True, verbose=False)
    if params.threads:
        torch.set_num_threads(params.threads)  # see TrainerParams.threads
    if run is not None:
        mlflow.set_tags(
            {
                "git_commit": git_commit(),
                "dvc_features_md5": dvc_output_hash(str(FEATURES)),
                "torch_threads": torch.get_num_threads(),
            }
        )
    if run is not None and resume is None:
        # Lightning logs the module's hyper-parameters itself; they repeat these keys with equal values.
        mlflow.log_params(params.model_dump())
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        enable_version_counter=False,
    )
    # Not the monitored checkpoint's save_last: that one rewrites last.ckpt only when the score improves.
    # The newest epoch's checkpoint (no monitor, top 1), under last.ckpt's own name, written once the
    # epoch's training metrics are logged (_TrainingMetricsFirst), so a kill between loses none.
    every_epoch = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="last",
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
        save_on_train_epoch_end=True,
    )
    trainer = L.Trainer(
        max_epochs=params.max_epochs,
        min_epochs=params.min_epochs,
        accelerator=params.accelerator,
        devices=params.devices,
        strategy=params.strategy,
        num_nodes=params.num_nodes,
        deterministic=True,
        gradient_clip_val=params.gradient_clip or None,
        callbacks=[
            checkpoint,
            _TrainingMetricsFirst(),
            every_epoch,
            EarlyStopping(monitor=monitor, mode=mode, patience=params.patience),
            _RandomState(),
            *(callbacks or []),
        ],
        logger=False
        if run is None
        else _OnceAStep(tracking_uri=tracking_uri(), run_id=run.info.run_id, log_model=False),
        reload_dataloaders_every_n_epochs=1,
        log_every_n_steps=50,
        enable_model_summary=False,
    )
    resume_from = None if resume is None else resume.checkpoint
    with warnings.catch_warnings():
        # Both describe choices made here: the run id file lives beside the checkpoints, and every
        # metric is logged per epoch, so the per-step logging interval does not apply.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    if run is None:
        return None
    if not checkpoint.best_model_path:
        raise BgmfitError(f"training produced no checkpoint for {monitor}; is the validation split empty?")
    best_score = float(checkpoint.best_model_score)
    mlflow.log_metric(f"best/{monitor.replace('/', '_')}", best_score)
    mlflow.set_tags({"best_checkpoint": checkpoint.best_model_path, "monitor": f"{monitor} ({mode})"})
    return TrainingResult(
        run_id=run.info.run_id,
        best_checkpoint=checkpoint.best_model_path,
        best_score=best_score,
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
    )


def train_and_log(
    network: Network,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    params: TrainerParams,
    monitor: str,
    mode: str,
    dataset: tuple[np.ndarray, Path],
    example: np.ndarray,
    out_dir: Path | None = None,
    extra: dict | None = None,
) -> TrainingResult:
    """What both training stages do: train inside the stage's MLflow run, keep the best checkpoint
    as ``out_dir/model.ckpt``, log the dataset and the network, and record ``training.json``.

    Parameters
    ----------
    dataset:
        ``(training inputs, the file they came from)``, logged as the run's dataset lineage.
    example:
        A small input batch of the logged model: its MLflow input example and signature.
    out_dir:
        The network's folder; ``models/<key>/`` by default.
    extra:
        More keys for ``training.json``.
    """
    out_dir = out_dir or network.folder
    inputs, source = dataset
    if rank_zero_only.rank != 0:
        # Under DDP, Lightning starts the other ranks by running this same command again. They take
        # part in the fit and then stop: rank 0 owns the MLflow run, the checkpoints and the records.
        # Rank 0 has opened its run by now; the same decision follows from the same files.
        resume = plan_resume(module, out_dir / "checkpoints", params.resume, training_fingerprint(params))
        train(module, datamodule, params, out_dir / "checkpoints", None, monitor, mode, resume=resume)
        raise SystemExit(0)
    fingerprint = training_fingerprint(params)
    # Decided before any run is opened: a checkpoint that cannot be resumed leaves every run as it was.
    resume = plan_resume(module, out_dir / "checkpoints", params.resume, fingerprint)
    with stage_run(network.stage, out_dir / "checkpoints", resume, fingerprint) as active:
        with warnings.catch_warnings():
            # MLflow registers its local-file source under two schemes and warns that a path matches both.
            warnings.filterwarnings("ignore", message=r"The specified dataset source can be interpreted")
            lineage = mlflow.data.from_numpy(inputs, source=str(source), name=source.stem)
        mlflow.log_input(lineage, context="training")
        result = train(
            module, datamodule, params, out_dir / "checkpoints", active, monitor, mode, resume=resume
        )
        shutil.copyfile(result.best_checkpoint, out_dir / "model.ckpt")
        best = type(module).load_from_checkpoint(out_dir / "model.ckpt", map_location="cpu")
        model_uri, weights = log_network(network.key, best, example)
        mlflow.set_tag("weights_sha256", weights)
        record = asdict(result) | {"model_uri": model_uri, "weights_sha256": weights, "monitor": monitor}
        write_json(out_dir / "training.json", record | (extra or {}))
    print(
        f"{network.stage}: best {monitor} {result.best_score:.4f} after {result.epochs} epoch(s); "
        f"MLflow run {result.run_id}",
        file=sys.stderr,
    )
    return result
