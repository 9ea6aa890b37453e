"""Typed, frozen views of ``params.yaml``: one pydantic model per section, in pipeline order.

``params.yaml`` is the only place a knob lives, and each field's description
here is its documentation. A stage loads its own section with
:func:`load_params`; an unknown, missing, mistyped or out-of-range key fails
with a one-line :class:`~bgmfit.errors.ConfigError` that names the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.types import StrictBool, StrictInt, StrictStr

from bgmfit.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")

# YAML 1.1 reads exponents without a dot (1e-7, as `dvc exp run -S` writes them) as strings.
_YAML_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
Number = Annotated[
    float, BeforeValidator(lambda v: float(v) if isinstance(v, str) and _YAML_FLOAT.fullmatch(v) else v)
]
Workers = Annotated[StrictInt, Field(ge=0, description="worker processes; 0 means one per CPU core")]


def _check(condition: bool, key: str, message: str) -> None:
    """A cross-field rule; ``key`` is the field the message is about."""
    if not condition:
        raise ValueError(f"{key}: {message}")


#: What method A's fully connected layer sees (see :class:`bgmfit.models.components.MatchHead`).
HeadTerms = Literal["concat", "interactions"]


class Section(BaseModel):
    """A section of ``params.yaml``: frozen, every key required, no key unknown."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class FetchParams(Section):
    """``fetch``: where the raw audio and its manifest come from."""

    source: Literal["demo", "dir"] = Field(description="demo: render the built-in corpus; dir: import dir")
    seed: StrictInt = Field(description="work selection, instrumentation, tempo jitter and the split")
    sample_rate: StrictInt = Field(ge=8000, le=48000, description="Hz of the rendered demo audio")
    clip_seconds: Number = Field(ge=1.0, le=60.0, description="length of each rendered demo clip, s")
    styles: tuple[StrictStr, ...] = Field(min_length=1, description="demo styles, by the corpus' labels")
    works_per_style: StrictInt = Field(ge=1, description="at most this many works per style")
    narration: StrictBool = Field(description="narrate vocal works' lyrics with eSpeak NG")
    val_fraction: Number = Field(ge=0.0, lt=1.0, description="share of each style's works held out")
    test_fraction: Number = Field(ge=0.0, lt=1.0, description="share of each style's works for test")
    silence_dbfs: Number = Field(description="renders quieter than this RMS level (dBFS) are rejected")
    dir: StrictStr | None = Field(description="source: dir -- the audio folder")
    manifest: StrictStr | None = Field(description="source: dir -- its manifest (default <dir>/manifest.csv)")
    on_bad_input: Literal["fail", "skip"] = Field(description="a bad row or file: fail, or skip and list it")
    workers: Workers

    @model_validator(mode="after")
    def _rules(self) -> FetchParams:
        held_out = self.val_fraction + self.test_fraction
        _check(held_out < 1.0, "val_fraction", "val_fraction + test_fraction must leave works for training")
        _check(self.silence_dbfs < 0, "silence_dbfs", f"must be negative dBFS, got {self.silence_dbfs}")
        _check(self.source != "dir" or bool(self.dir), "dir", "is required when fetch.source is 'dir'")
        return self


class AugmentParams(Section):
    """``features.augment``: seeded copies of each training track, as other copies of it would sound."""

    copies: StrictInt = Field(ge=0, le=16, description="augmented copies per training track; 0 for none")
    seed: StrictInt = Field(description="with each file's content hash, seeds its copies")
    gain_db: Number = Field(ge=0, le=24, description="gain drawn from +-this, dB")
    tilt_db: Number = Field(
        ge=0, le=12, description="EQ tilt: low shelf +t, high shelf -t, t from +-this, dB"
    )
    snr_db: tuple[Number, Number] = Field(description="additive noise at an SNR drawn from [low, high], dB")
    reverb_probability: Number = Field(ge=0, le=1, description="share of copies with a short room reverb")
    max_offset_seconds: Number = Field(ge=0, le=10, description="copies start up to this much later")
    codecs: tuple[Literal["none", "mp3", "vorbis"], ...] = Field(
        min_length=1, description="each copy is re-encoded with one of these, drawn evenly"
    )

    @model_validator(mode="after")
    def _rules(self) -> AugmentParams:
        low, high = self.snr_db
        _check(
            0 <= low <= high <= 80,
            "augment.snr_db",
            f"must be [low, high] in 0..80 dB, got {list(self.snr_db)}",
        )
        return self


class FeaturesParams(Section):
    """``features``: the fused matrix (method A) and the MFCC frames (method B)."""

    sample_rate: StrictInt = Field(ge=8000, le=48000, description="audio is resampled to this rate, Hz")
    loudness_lufs: Number = Field(ge=-70, le=0, description="every analysed clip is brought to this loudness")
    n_fft: StrictInt = Field(ge=256, description="STFT window, samples (a power of two)")
    hop_length: StrictInt = Field(ge=1, description="STFT hop, samples")
    n_mels: StrictInt = Field(ge=8, le=256, description="mel bands behind the MFCCs and onset envelope")
    n_mfcc: StrictInt = Field(ge=2, description="MFCC coefficients of the timbre dimension")
    segment_seconds: Number = Field(gt=0, description="one row of the fused matrix per this many s")
    n_segments: StrictInt = Field(ge=1, description="rows of the fused matrix (its time axis)")
    frames_n: StrictInt = Field(ge=1, description="method B: the first N STFT frames ...")
    frames_n_mfcc: StrictInt = Field(ge=2, description="... of this many MFCCs each, concatenated")
    window_hop_seconds: Number = Field(
        gt=0, le=3600, description="a file is analysed in windows this far apart"
    )
    max_windows: StrictInt = Field(
        ge=1, le=10000, description="past this many, windows spread evenly over the file"
    )
    augment: AugmentParams
    workers: Workers
    executor: Literal["local", "ray"] = Field(
        description="local: `workers` processes here; ray: a Ray Data job on the cluster ray.init finds"
    )
    cache_dir: StrictStr = Field(description="per-track cache, keyed by content hash and these params")

    @property
    def clip_seconds(self) -> float:
        """Seconds in one window: what each network reads at once."""
        return self.segment_seconds * self.n_segments

    @model_validator(mode="after")
    def _rules(self) -> FeaturesParams:
        _check(self.n_fft & (self.n_fft - 1) == 0, "n_fft", f"must be a power of two, got {self.n_fft}")
        _check(self.hop_length <= self.n_fft, "hop_length", f"must be in 1..n_fft, got {self.hop_length}")
        for key in ("n_mfcc", "frames_n_mfcc"):
            _check(getattr(self, key) <= self.n_mels, key, f"must be in 2..n_mels, got {getattr(self, key)}")
        least = 2 * self.n_fft / self.sample_rate
        _check(
            self.segment_seconds >= least, "segment_seconds", f"must be >= {least:.2f} s (two STFT windows)"
        )
        most = (
            1 + int(self.clip_seconds * self.sample_rate) // self.hop_length
        )  # in n_segments * segment_seconds
        _check(self.frames_n <= most, "frames_n", f"must be in 1..{most} (the frames), got {self.frames_n}")
        return self


class TrainerParams(Section):
    """Keys both training sections share; Lightning's ``Trainer`` gets the last four as they are."""

    seed: StrictInt = Field(description="seeds Lightning, sampling and weight initialisation")
    lr: Number = Field(gt=0, description="AdamW learning rate")
    weight_decay: Number = Field(ge=0, description="AdamW weight decay")
    max_epochs: StrictInt = Field(ge=1)
    min_epochs: StrictInt = Field(ge=0)
    patience: StrictInt = Field(ge=1, description="epochs without improvement of the monitored metric")
    gradient_clip: Number = Field(ge=0, description="gradient norm clip; 0 disables it")
    # Weight of the instance term: each training track's augmented copy must be nearer its own
    # track than any other track of the batch (InfoNCE); 0 leaves it out. Needs features.augment.
    instance_weight: Number = Field(ge=0, description="weight of the copy-to-its-own-track term")
    resume: StrictBool | Literal["auto"] = Field(
        description="true: continue the checkpoint folder's last.ckpt (and its MLflow run); auto: continue "
        "it when it is an unfinished run of these params and features, else start afresh; false: start afresh"
    )
    # On the CPU the thread count changes the order of the sums in a matrix product, so one seed
    # trains to other weights on 1 and 2 threads: pinned, `dvc repro` repeats `make run` exactly.
    threads: StrictInt = Field(ge=0, description="torch intra-op threads per process; 0: torch's default")
    accelerator: StrictStr = Field(description="cpu | gpu | auto")
    devices: StrictInt = Field(ge=1)
    strategy: StrictStr = Field(description="auto | ddp | ...")
    num_nodes: StrictInt = Field(ge=1)

    @model_validator(mode="after")
    def _epochs(self) -> TrainerParams:
        _check(
            self.min_epochs <= self.max_epochs,
            "min_epochs",
            f"must be in 0..max_epochs, got {self.min_epochs}",
        )
        return self


class TrainMatchParams(TrainerParams):
    """``train_match``: method A, the pair-fit network."""

    tower_channels: StrictInt = Field(ge=1, description="channels of the conv tower over the segment axis")
    tower_depth: StrictInt = Field(ge=1, description="conv blocks per tower")
    kernel_size: StrictInt = Field(ge=1, description="kernel width in segments (odd)")
    embed_dim: StrictInt = Field(ge=1, description="deep feature per side")
    fused_dim: StrictInt = Field(ge=1, description="deep fused feature after the FC layer")
    share_towers: StrictBool = Field(description="one tower for both sides")
    head: HeadTerms = Field(description="concat: FC over [fg, bgm]; interactions: also fg*bgm, |fg-bgm|")
    # Fused columns (see norm_stats.json) the head compares across the sides through a kernel that is 1
    # where they agree; a trailing * makes one profile, compared by cosine, of every column it prefixes.
    agreement: tuple[StrictStr, ...]
    dropout: Number = Field(ge=0, lt=1)
    batch_size: StrictInt = Field(ge=1, description="pairs per batch")

    @model_validator(mode="after")
    def _odd_kernel(self) -> TrainMatchParams:
        _check(self.kernel_size % 2, "kernel_size", f"must be a positive odd number, got {self.kernel_size}")
        return self


class TrainTripletParams(TrainerParams):
    """``train_triplet``: method B, the triplet style network."""

    input: Literal["mfcc_frames", "fused"] = Field(description="the method's MFCC frames, or method A's")
    # flat: the input as it is; modulation: first each coefficient's DFT magnitude over the frames.
    front: Literal["flat", "modulation"]
    timbre_weight: Number = Field(
        ge=0,
        description="weight of the input's timbre statistics beside the learned style in the"
        " embedding (0: style alone); it orders pieces of one style (CHANGELOG)",
    )
    hidden_dim: StrictInt = Field(ge=1)
    embed_dim: StrictInt = Field(ge=1)
    dropout: Number = Field(ge=0, lt=1)
    margin: Number = Field(gt=0, le=2, description="triplet margin on cosine distance")
    mining: Literal["semi-hard", "hard"] = Field(description="in-batch negative mining")
    styles_per_batch: StrictInt = Field(ge=2, description="styles per batch (negatives need two)")
    tracks_per_style: StrictInt = Field(ge=2, description="tracks per style (positives need two)")
    batches_per_epoch: StrictInt = Field(ge=1)


class EvaluateParams(Section):
    """``evaluate``: both networks and their baselines on held-out works."""

    seed: StrictInt = Field(description="seeds the random baselines and the invariance queries")
    invariance_queries: StrictInt = Field(ge=1, description="held-out queries per method for invariance")
    timeline_episodes: StrictInt = Field(ge=0, description="long-form test episodes for timelines (0: none)")
    timeline_scenes: StrictInt = Field(ge=2, le=20, description="scenes per long-form episode")
    workers: Workers


class RegisterParams(Section):
    """``register``: the gate; ``@champion`` needs the threshold *and* the champion beaten by ``margin``."""

    match_threshold: Number = Field(ge=0, le=1, description="least test ROC-AUC for bgmfit-match")
    triplet_threshold: Number = Field(ge=0, le=1, description="least test style MAP@10 for bgmfit-triplet")
    margin: Number = Field(ge=0, lt=1, description="how much a candidate must beat the champion by")
    invariance_threshold: Number = Field(
        ge=0, le=1, description="least top-1 unchanged under every change (evaluate's invariance)"
    )


class IndexParams(Section):
    """``index``: the served library and its embedding index (exact search, FAISS HNSW past a size)."""

    library: Literal["demo", "dir"] = Field(description="demo: the demo corpus's music; dir: library_dir")
    library_dir: StrictStr = Field(description="library: dir -- every audio file under it is a track")
    library_manifest: StrictStr | None = Field(
        description="library: dir -- optional metadata CSV (default <library_dir>/library.csv if there)"
    )
    on_bad_input: Literal["fail", "skip"] = Field(
        description="an undecodable library file or bad manifest line: fail, or skip and list it"
    )

    ann_threshold: StrictInt = Field(ge=2, description="tracks from which FAISS HNSW replaces exact search")
    hnsw_m: StrictInt = Field(ge=2, description="neighbours per HNSW node (memory against recall)")
    ef_construction: StrictInt = Field(ge=2, description="HNSW candidate list when building")
    ef_search: StrictInt = Field(ge=2, description="HNSW candidate list when searching")


class PackageParams(Section):
    """``package``: the bento and the limits its service enforces."""

    bento_name: StrictStr = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="name of the bento")
    max_upload_mb: Number = Field(
        gt=0,
        le=1024,
        description="largest request body of any endpoint and content type; 413 as it streams in",
    )
    max_audio_seconds: Number = Field(gt=0, le=36000, description="longer audio gets 413")
    max_top_k: StrictInt = Field(ge=1, description="largest top_k a request may ask for")
    max_batch_size: StrictInt = Field(ge=1, description="adaptive batching of /embed")
    max_latency_ms: StrictInt = Field(ge=1, description="adaptive batching of /embed")
    timeout_seconds: StrictInt = Field(ge=1, description="per request")
    concurrency: StrictInt = Field(ge=1, description="concurrent requests per worker")
    analysis_workers: StrictInt = Field(ge=1, le=64, description="processes that decode uploads")
    analysis_timeout_seconds: Number = Field(gt=0, description="an upload's decode and analysis; then 503")
    analysis_memory_mb: StrictInt = Field(ge=256, description="each decoding process's memory cap")

    @model_validator(mode="after")
    def _analysis_within_the_request(self) -> PackageParams:
        _check(
            self.analysis_timeout_seconds < self.timeout_seconds,
            "analysis_timeout_seconds",
            f"must be below timeout_seconds ({self.timeout_seconds}), so that a stopped decode is answered",
        )
        return self

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


class TimelineParams(Section):
    """``timeline``: a whole episode scored as scenes, one BGM (or none) each, and its preview mix."""

    speech_threshold: Number = Field(
        gt=0, lt=1, description="silero-vad probability from which a 32 ms frame is speech"
    )
    speech_share: Number = Field(gt=0, le=1, description="a second is speech when this share of it is")
    silence_dbfs: Number = Field(le=0, description="a second quieter than this (RMS, levelled) is silence")
    novelty_kernel_seconds: StrictInt = Field(
        ge=4, le=120, description="width of the checkerboard kernel over the fused features"
    )
    novelty_threshold: Number = Field(
        description="a boundary where the novelty (z-scored over the episode) peaks above this"
    )
    pause_seconds: Number = Field(gt=0, description="a silence this long is always a scene boundary")
    min_scene_seconds: Number = Field(ge=10, description="no scene is shorter (one analysis window: 10 s)")
    max_scene_seconds: Number = Field(gt=0, description="longer scenes are split at their novelty peak")
    candidates: StrictInt = Field(ge=1, le=1000, description="best tracks per scene the plan chooses among")
    switch_penalty: Number = Field(ge=0, description="fit given up per change of track")
    max_runs: StrictInt = Field(ge=1, description="a track may come back at most this many separate times")
    min_fit: Number = Field(ge=0, le=1, description="a scene whose best fit is below this gets no BGM")
    bed_db: Number = Field(ge=0, le=60, description="preview: BGM this many LU below the voice")
    duck_threshold_db: Number = Field(le=0, description="preview: the voice level that starts ducking, dBFS")
    duck_ratio: Number = Field(ge=1, le=20, description="preview: sidechain compression ratio")
    crossfade_seconds: Number = Field(ge=0, le=10, description="preview: crossfade at a change of track")
    preview_lufs: Number = Field(ge=-40, le=-6, description="preview: integrated loudness of the mix")
    workers: Workers

    @model_validator(mode="after")
    def _rules(self) -> TimelineParams:
        _check(
            self.max_scene_seconds >= 2 * self.min_scene_seconds,
            "max_scene_seconds",
            f"must be at least twice min_scene_seconds ({self.min_scene_seconds:g}), "
            f"got {self.max_scene_seconds:g}",
        )
        return self


T = TypeVar("T", bound=Section)


def read_params_file(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read a params YAML file into a dict, with a clear error if it is absent or malformed."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root, or pass --params)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def load_params(section: str, cls: type[T], path: Path | str = DEFAULT_PARAMS) -> T:
    """Load one ``params.yaml`` section, e.g. ``load_params("fetch", FetchParams)``.

    Raises :class:`ConfigError` if the file or section is missing, or a key is unknown, missing,
    mistyped or out of range; the message names the key.
    """
    data = read_params_file(path)
    if section not in data or not isinstance(data[section], dict):
        raise ConfigError(f"{path}: missing section '{section}:'")
    return params_from_dict(section, cls, data[section])


_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "tuple": "a list",
}


def params_from_dict(section: str, cls: type[T], values: dict[str, Any]) -> T:
    """Build a section's model from a plain dict; the first problem becomes a one-line ConfigError."""
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"params.yaml: {_describe(section, cls, exc.errors()[0])}") from None


def _describe(section: str, cls: type[Section], error: dict) -> str:
    """One pydantic error in this project's words: the key, then what is wrong with it."""
    kind, value = error["type"], error.get("input")
    field = ".".join(str(part) for part in error["loc"] if isinstance(part, str))
    key = f"{section}.{field}"
    if kind == "extra_forbidden":
        return f"unknown key {key} (known keys: {', '.join(cls.model_fields)})"
    if kind == "missing":
        return f"missing key {key}"
    if kind == "value_error":  # a cross-field rule; its message starts with the key
        return f"{section}.{str(error['ctx']['error'])}"
    if kind == "literal_error":
        choices = error["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{key}: must be one of {choices}, got {value!r}"
    if kind == "string_pattern_mismatch":
        return f"{key}: must be lower-case letters, digits, '_', '.' or '-', got {value!r}"
    if kind == "too_short":
        return f"{key}: must not be empty"
    if kind.startswith(("greater_than", "less_than")):
        return f"{key}: must be {_bounds(cls, field)}, got {value}"
    expected = next((e for prefix, e in _EXPECTED.items() if kind.startswith(prefix)), None)
    return f"{key}: expected {expected}, got {value!r}" if expected else f"{key}: {error['msg']}"


def _bounds(cls: type[Section], field: str) -> str:
    """A field's allowed range as the messages write it: ``0..1``, ``[0, 1)``, ``>= 2``."""
    *parents, name = field.split(".")
    for parent in parents:  # a nested section, e.g. features.augment
        cls = cls.model_fields[parent].annotation
    metadata = cls.model_fields[name].metadata
    rules = {k: v for rule in metadata for k in _SIGNS if (v := getattr(rule, k, None)) is not None}
    low = next((k for k in ("ge", "gt") if k in rules), None)
    high = next((k for k in ("le", "lt") if k in rules), None)
    if low and high:
        if (low, high) == ("ge", "le"):
            return f"in {rules[low]:g}..{rules[high]:g}"
        opening, closing = "[" if low == "ge" else "(", "]" if high == "le" else ")"
        return f"in {opening}{rules[low]:g}, {rules[high]:g}{closing}"
    bound = low or high
    return f"{_SIGNS[bound]} {rules[bound]:g}"


_SIGNS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
