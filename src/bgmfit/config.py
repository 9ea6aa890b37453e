"""Typed, frozen views of ``params.yaml``, one dataclass per section.

``params.yaml`` is the only place a knob lives. Each stage loads the one section
it needs with :func:`load_params`; an unknown or missing key, a wrong type or an
out-of-range value fails with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bgmfit.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")

ON_BAD_INPUT = ("fail", "skip")


def _require(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"params.yaml: {key}: {message}")


@dataclass(frozen=True)
class FetchParams:
    """The ``fetch`` section: where the raw audio and its manifest come from.

    Attributes
    ----------
    source:
        ``demo`` renders the built-in corpus from the scores bundled with music21;
        ``dir`` copies a user's folder described by a manifest CSV.
    seed:
        Seeds work selection, instrumentation, tempo jitter and the split.
    sample_rate:
        Rate in Hz of the rendered demo audio.
    clip_seconds:
        Length in seconds of each rendered demo clip.
    styles:
        Demo styles to render, by the corpus' own labels (see ``bgmfit.corpus.catalogue``).
    works_per_style:
        At most this many works per style; the knob that scales the demo corpus.
    narration:
        Narrate the lyrics of vocal works with eSpeak NG as speech foregrounds.
    val_fraction, test_fraction:
        Share of works, per style, held out for validation and test.
    silence_dbfs:
        A render whose RMS level (dB full scale) is below this is rejected as silent.
    dir, manifest:
        For ``source: dir``: the audio folder and its manifest CSV (default
        ``<dir>/manifest.csv``). Paths in the manifest are relative to ``dir``.
    on_bad_input:
        ``fail`` stops at the first bad manifest row or undecodable file, after
        listing every one found; ``skip`` leaves them out, counts and lists them
        in ``metrics/fetch.json`` / ``metrics/features.json``. The features
        stage reads this same key.
    workers:
        Worker processes; 0 means one per CPU core.
    """

    source: str
    seed: int
    sample_rate: int
    clip_seconds: float
    styles: tuple[str, ...]
    works_per_style: int
    narration: bool
    val_fraction: float
    test_fraction: float
    silence_dbfs: float
    dir: str | None
    manifest: str | None
    on_bad_input: str
    workers: int

    def __post_init__(self) -> None:
        _require(
            self.source in ("demo", "dir"), "fetch.source", f"must be 'demo' or 'dir', got {self.source!r}"
        )
        _require(
            8000 <= self.sample_rate <= 48000,
            "fetch.sample_rate",
            f"must be in 8000..48000 Hz, got {self.sample_rate}",
        )
        _require(
            1.0 <= self.clip_seconds <= 60.0,
            "fetch.clip_seconds",
            f"must be in 1..60 s, got {self.clip_seconds}",
        )
        _require(len(self.styles) > 0, "fetch.styles", "must name at least one style")
        _require(
            self.works_per_style >= 1, "fetch.works_per_style", f"must be >= 1, got {self.works_per_style}"
        )
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            _require(0.0 <= value < 1.0, f"fetch.{key}", f"must be in [0, 1), got {value}")
        _require(
            self.val_fraction + self.test_fraction < 1.0,
            "fetch.val_fraction",
            "val_fraction + test_fraction must leave some works for training",
        )
        _require(
            self.silence_dbfs < 0, "fetch.silence_dbfs", f"must be negative dBFS, got {self.silence_dbfs}"
        )
        _require(
            self.on_bad_input in ON_BAD_INPUT,
            "fetch.on_bad_input",
            f"must be one of {', '.join(ON_BAD_INPUT)}, got {self.on_bad_input!r}",
        )
        _require(self.workers >= 0, "fetch.workers", f"must be >= 0, got {self.workers}")
        if self.source == "dir":
            _require(bool(self.dir), "fetch.dir", "is required when fetch.source is 'dir'")


@dataclass(frozen=True)
class FeaturesParams:
    """The ``features`` section: the fused matrix (method A) and MFCC frames (method B).

    Attributes
    ----------
    sample_rate:
        Audio is resampled to this rate (Hz) before analysis.
    n_fft, hop_length:
        STFT window and hop in samples; the one STFT every dimension shares.
    n_mels:
        Mel bands behind the MFCCs and the onset envelope.
    n_mfcc:
        MFCC coefficients in the timbre dimension.
    segment_seconds, n_segments:
        The fused matrix has ``n_segments`` rows, one per ``segment_seconds`` of
        audio from the start; shorter audio is zero-padded (silence).
    frames_n, frames_n_mfcc:
        Method B's input: the first ``frames_n`` STFT frames of ``frames_n_mfcc``
        MFCCs each, concatenated.
    workers:
        Worker processes; 0 means one per CPU core.
    cache_dir:
        Per-track cache keyed by the audio's content hash and these params.
    """

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    n_mfcc: int
    segment_seconds: float
    n_segments: int
    frames_n: int
    frames_n_mfcc: int
    workers: int
    cache_dir: str

    def __post_init__(self) -> None:
        _require(
            8000 <= self.sample_rate <= 48000,
            "features.sample_rate",
            f"must be in 8000..48000 Hz, got {self.sample_rate}",
        )
        _require(
            self.n_fft >= 256 and self.n_fft & (self.n_fft - 1) == 0,
            "features.n_fft",
            f"must be a power of two >= 256, got {self.n_fft}",
        )
        _require(
            0 < self.hop_length <= self.n_fft,
            "features.hop_length",
            f"must be in 1..n_fft, got {self.hop_length}",
        )
        _require(8 <= self.n_mels <= 256, "features.n_mels", f"must be in 8..256, got {self.n_mels}")
        _require(
            2 <= self.n_mfcc <= self.n_mels, "features.n_mfcc", f"must be in 2..n_mels, got {self.n_mfcc}"
        )
        _require(
            2 <= self.frames_n_mfcc <= self.n_mels,
            "features.frames_n_mfcc",
            f"must be in 2..n_mels, got {self.frames_n_mfcc}",
        )
        _require(
            self.segment_seconds * self.sample_rate >= 2 * self.n_fft,
            "features.segment_seconds",
            f"must hold at least two STFT windows ({2 * self.n_fft / self.sample_rate:.2f} s), "
            f"got {self.segment_seconds}",
        )
        _require(self.n_segments >= 1, "features.n_segments", f"must be >= 1, got {self.n_segments}")
        available = 1 + int(self.clip_seconds * self.sample_rate) // self.hop_length
        _require(
            1 <= self.frames_n <= available,
            "features.frames_n",
            f"must be in 1..{available} (the frames in n_segments * segment_seconds), got {self.frames_n}",
        )
        _require(self.workers >= 0, "features.workers", f"must be >= 0, got {self.workers}")

    @property
    def clip_seconds(self) -> float:
        """Seconds of audio, from the start, that the features look at."""
        return self.segment_seconds * self.n_segments


T = TypeVar("T")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a dataclass field's type hint; return it in that type."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, list | tuple):
            raise ConfigError(f"params.yaml: {key}: expected a list, got {value!r}")
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params.yaml: {key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"params.yaml: {key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads exponents without a dot (1e-7, as `dvc exp run -S` writes) as strings.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"params.yaml: {key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"params.yaml: {key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"params.yaml: {key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported params field type {hint!r} for {key}")


def read_params_file(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read a params YAML file into a dict, with a clear error if it is absent or malformed."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root, or pass --params)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


@dataclass(frozen=True)
class RegisterParams:
    """The ``register`` section: the promotion gate of the MLflow model registry.

    Both networks are scored on the test split of the current features; a new
    version becomes ``@champion`` only if its score reaches the threshold *and*
    beats the current champion, scored on the same test split, by ``margin``.

    Attributes
    ----------
    match_threshold:
        Least test ROC-AUC (fits vs does not fit) for method A.
    triplet_threshold:
        Least test style MAP@10 for method B.
    margin:
        How much a candidate must beat the champion's score by.
    """

    match_threshold: float
    triplet_threshold: float
    margin: float

    def __post_init__(self) -> None:
        for key in ("match_threshold", "triplet_threshold"):
            value = getattr(self, key)
            _require(0.0 <= value <= 1.0, f"register.{key}", f"must be in 0..1, got {value}")
        _require(0.0 <= self.margin < 1.0, "register.margin", f"must be in [0, 1), got {self.margin}")


@dataclass(frozen=True)
class IndexParams:
    """The ``index`` section: the catalogue's embedding index.

    Attributes
    ----------
    ann_threshold:
        Catalogues with at least this many tracks get a FAISS HNSW index;
        smaller ones are searched exactly with numpy.
    hnsw_m:
        Neighbours per node of the HNSW graph (memory against recall).
    ef_construction, ef_search:
        HNSW candidate-list sizes when building and when searching (time against recall).
    """

    ann_threshold: int
    hnsw_m: int
    ef_construction: int
    ef_search: int

    def __post_init__(self) -> None:
        for key in ("ann_threshold", "hnsw_m", "ef_construction", "ef_search"):
            value = getattr(self, key)
            _require(value >= 2, f"index.{key}", f"must be >= 2, got {value}")


@dataclass(frozen=True)
class PackageParams:
    """The ``package`` section: the bento and the limits its service enforces.

    Attributes
    ----------
    bento_name:
        Name of the bento that ``bentoml build`` makes.
    max_upload_mb:
        Uploads larger than this are refused (413) before they are decoded.
    max_audio_seconds:
        Audio longer than this is refused (413); only the first
        ``features.n_segments * features.segment_seconds`` seconds are analysed.
    max_top_k:
        Largest ``top_k`` a request may ask for.
    max_batch_size, max_latency_ms:
        Adaptive batching of ``/embed``.
    timeout_seconds, concurrency:
        Per-request timeout and concurrent requests per worker.
    """

    bento_name: str
    max_upload_mb: float
    max_audio_seconds: float
    max_top_k: int
    max_batch_size: int
    max_latency_ms: int
    timeout_seconds: int
    concurrency: int

    def __post_init__(self) -> None:
        _require(
            bool(re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", self.bento_name)),
            "package.bento_name",
            f"must be lower-case letters, digits, '_', '.' or '-', got {self.bento_name!r}",
        )
        _require(
            0 < self.max_upload_mb <= 1024,
            "package.max_upload_mb",
            f"must be in (0, 1024], got {self.max_upload_mb}",
        )
        _require(
            0 < self.max_audio_seconds <= 36000,
            "package.max_audio_seconds",
            f"must be in (0, 36000], got {self.max_audio_seconds}",
        )
        for key in ("max_top_k", "max_batch_size", "max_latency_ms", "timeout_seconds", "concurrency"):
            value = getattr(self, key)
            _require(value >= 1, f"package.{key}", f"must be >= 1, got {value}")

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


def load_params(section: str, cls: type[T], path: Path | str = DEFAULT_PARAMS) -> T:
    """Load one ``params.yaml`` section into its frozen dataclass.

    Parameters
    ----------
    section:
        Top-level key, e.g. ``"fetch"``.
    cls:
        The dataclass for that section, e.g. :class:`FetchParams`.
    path:
        The params file; ``params.yaml`` in the working directory by default.

    Raises
    ------
    ConfigError
        If the file or section is missing, a key is unknown or missing, or a
        value has the wrong type or range. The message names the key.
    """
    data = read_params_file(path)
    if section not in data or not isinstance(data[section], dict):
        raise ConfigError(f"{path}: missing section '{section}:'")
    return params_from_dict(section, cls, data[section])


def params_from_dict(section: str, cls: type[T], values: dict[str, Any]) -> T:
    """Build a section's dataclass from a plain dict (the body of :func:`load_params`)."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"params.yaml: unknown key {section}.{unknown[0]} (known keys: {', '.join(fields)})"
        )
    missing = [f for f in fields if f not in values]
    if missing:
        raise ConfigError(f"params.yaml: missing key {section}.{missing[0]}")
    kwargs = {f: _coerce(values[f], hints[f], f"{section}.{f}") for f in fields}
    return cls(**kwargs)


@dataclass(frozen=True)
class TrainerParams:
    """Keys every training section shares (``train_match`` and ``train_triplet``).

    Attributes
    ----------
    seed:
        Seeds Lightning, pair/triplet sampling and weight initialisation.
    lr, weight_decay:
        AdamW optimiser settings.
    max_epochs, min_epochs, patience:
        Training length and early stopping on the monitored validation metric.
    gradient_clip:
        Gradient norm clip value (0 disables clipping).
    resume:
        Continue from ``last.ckpt`` of the stage's checkpoint folder; fails if none exists.
    accelerator, devices, strategy, num_nodes:
        Passed to ``lightning.Trainer`` (e.g. ``cpu``/``gpu``/``auto``, ``1``, ``auto``/``ddp``).
    """

    seed: int
    lr: float
    weight_decay: float
    max_epochs: int
    min_epochs: int
    patience: int
    gradient_clip: float
    resume: bool
    accelerator: str
    devices: int
    strategy: str
    num_nodes: int

    def _check_trainer(self, section: str) -> None:
        _require(self.lr > 0, f"{section}.lr", f"must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, f"{section}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.max_epochs >= 1, f"{section}.max_epochs", f"must be >= 1, got {self.max_epochs}")
        _require(
            0 <= self.min_epochs <= self.max_epochs,
            f"{section}.min_epochs",
            f"must be in 0..max_epochs, got {self.min_epochs}",
        )
        _require(self.patience >= 1, f"{section}.patience", f"must be >= 1, got {self.patience}")
        _require(
            self.gradient_clip >= 0, f"{section}.gradient_clip", f"must be >= 0, got {self.gradient_clip}"
        )
        _require(self.devices >= 1, f"{section}.devices", f"must be >= 1, got {self.devices}")
        _require(self.num_nodes >= 1, f"{section}.num_nodes", f"must be >= 1, got {self.num_nodes}")


#: What method A's fully connected layer sees (see :class:`bgmfit.models.components.MatchHead`).
HEAD_TERMS = ("concat", "interactions")


@dataclass(frozen=True)
class TrainMatchParams(TrainerParams):
    """The ``train_match`` section: method A, the pair-fit network.

    Attributes
    ----------
    tower_channels, tower_depth, kernel_size:
        The convolutional tower: channels, blocks, kernel width in segments.
    embed_dim:
        Size of each tower's deep feature.
    fused_dim:
        Size of the deep fused feature after the fully connected layer.
    share_towers:
        One tower for both sides (true) or one per side (false).
    head:
        ``concat``: the fully connected layer sees the two deep features side by
        side, as the method states it. ``interactions``: it also sees their
        product and absolute difference.
    agreement:
        Fused column names (see ``data/features/norm_stats.json``) that the head
        compares across the two sides directly, through a kernel that is 1 when
        the foreground's and the BGM's values agree; ``[]`` for none. A name
        ending in ``*`` is a profile: every column it prefixes, compared as one
        vector by cosine. The default, the tempo (as estimated, and folded into
        one octave) and the clip's key profile (``key_corr_*``), is what tells
        a foreground's own accompaniment from other music of its style.
    dropout:
        Dropout in towers and head.
    batch_size:
        Pairs per batch.
    """

    tower_channels: int
    tower_depth: int
    kernel_size: int
    embed_dim: int
    fused_dim: int
    share_towers: bool
    head: str
    agreement: tuple[str, ...]
    dropout: float
    batch_size: int

    def __post_init__(self) -> None:
        self._check_trainer("train_match")
        for key in ("tower_channels", "tower_depth", "embed_dim", "fused_dim", "batch_size"):
            _require(getattr(self, key) >= 1, f"train_match.{key}", f"must be >= 1, got {getattr(self, key)}")
        _require(
            self.kernel_size >= 1 and self.kernel_size % 2 == 1,
            "train_match.kernel_size",
            f"must be a positive odd number, got {self.kernel_size}",
        )
        _require(0 <= self.dropout < 1, "train_match.dropout", f"must be in [0, 1), got {self.dropout}")
        _require(
            self.head in HEAD_TERMS,
            "train_match.head",
            f"must be one of {', '.join(HEAD_TERMS)}, got {self.head!r}",
        )


TRIPLET_INPUTS = ("mfcc_frames", "fused")
#: What method B's first layer sees (see :class:`bgmfit.models.components.FeedForwardBranch`).
TRIPLET_FRONTS = ("flat", "modulation")


@dataclass(frozen=True)
class TrainTripletParams(TrainerParams):
    """The ``train_triplet`` section: method B, the triplet style network.

    Attributes
    ----------
    input:
        ``mfcc_frames`` (the method's feature) or ``fused`` (method A's, for comparison).
    front:
        What the branch's first layer sees. ``flat``: the input as it is.
        ``modulation``: a fixed layer first takes each coefficient's
        modulation spectrum over the frames (the magnitude of its DFT), which
        shows note rate, beat and bar wherever in the clip they fall.
    hidden_dim, embed_dim, dropout:
        The feed-forward branch.
    margin:
        Triplet margin on cosine distance.
    mining:
        ``semi-hard`` or ``hard`` in-batch negative mining.
    styles_per_batch, tracks_per_style:
        Each batch holds this many styles with this many tracks each.
    batches_per_epoch:
        Training batches drawn per epoch.
    """

    input: str
    front: str
    hidden_dim: int
    embed_dim: int
    dropout: float
    margin: float
    mining: str
    styles_per_batch: int
    tracks_per_style: int
    batches_per_epoch: int

    def __post_init__(self) -> None:
        self._check_trainer("train_triplet")
        _require(
            self.input in TRIPLET_INPUTS,
            "train_triplet.input",
            f"must be one of {', '.join(TRIPLET_INPUTS)}, got {self.input!r}",
        )
        _require(
            self.front in TRIPLET_FRONTS,
            "train_triplet.front",
            f"must be one of {', '.join(TRIPLET_FRONTS)}, got {self.front!r}",
        )
        _require(
            self.mining in ("semi-hard", "hard"),
            "train_triplet.mining",
            f"must be 'semi-hard' or 'hard', got {self.mining!r}",
        )
        _require(0 < self.margin <= 2, "train_triplet.margin", f"must be in (0, 2], got {self.margin}")
        _require(self.styles_per_batch >= 2, "train_triplet.styles_per_batch", "must be >= 2 (negatives)")
        _require(self.tracks_per_style >= 2, "train_triplet.tracks_per_style", "must be >= 2 (positives)")
        for key in ("hidden_dim", "embed_dim", "batches_per_epoch"):
            _require(
                getattr(self, key) >= 1, f"train_triplet.{key}", f"must be >= 1, got {getattr(self, key)}"
            )
        _require(0 <= self.dropout < 1, "train_triplet.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class EvaluateParams:
    """The ``evaluate`` section.

    Attributes
    ----------
    seed:
        Seeds the random baselines.
    """

    seed: int
