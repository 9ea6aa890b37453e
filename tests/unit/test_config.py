from pathlib import Path

import pytest

from bgmfit.config import (
    FeaturesParams,
    FetchParams,
    IndexParams,
    PackageParams,
    RegisterParams,
    TrainMatchParams,
    TrainTripletParams,
    load_params,
    params_from_dict,
)
from bgmfit.errors import ConfigError
from bgmfit.models.match_module import agreement_layout
from tests.signals import REPO


def _fetch_dict() -> dict:
    params = load_params("fetch", FetchParams, REPO / "params.yaml")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.model_dump().items()}


def test_repository_params_load_for_every_section():
    assert load_params("fetch", FetchParams, REPO / "params.yaml").source == "demo"
    assert load_params("features", FeaturesParams, REPO / "params.yaml").n_segments >= 1


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key fetch\.colour"):
        params_from_dict("fetch", FetchParams, _fetch_dict() | {"colour": "blue"})


def test_missing_key_is_named():
    values = _fetch_dict()
    del values["seed"]
    with pytest.raises(ConfigError, match=r"missing key fetch\.seed"):
        params_from_dict("fetch", FetchParams, values)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"fetch\.works_per_style: expected an integer, got 'many'"):
        params_from_dict("fetch", FetchParams, _fetch_dict() | {"works_per_style": "many"})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("source", "s3", r"fetch\.source: must be one of demo, dir, got .s3."),
        ("on_bad_input", "ignore", r"fetch\.on_bad_input: must be one of fail, skip"),
        ("test_fraction", 1.5, r"fetch\.test_fraction: must be in \[0, 1\)"),
        ("silence_dbfs", 3.0, r"fetch\.silence_dbfs: must be negative"),
    ],
)
def test_out_of_range_values_are_named(key, value, message):
    with pytest.raises(ConfigError, match=message):
        params_from_dict("fetch", FetchParams, _fetch_dict() | {key: value})


def test_unknown_match_head_is_named():
    values = load_params("train_match", TrainMatchParams, REPO / "params.yaml").model_dump()
    message = r"train_match\.head: must be one of concat, interactions, got 'bilinear'"
    with pytest.raises(ConfigError, match=message):
        params_from_dict("train_match", TrainMatchParams, values | {"head": "bilinear"})


def test_unknown_triplet_front_is_named():
    values = load_params("train_triplet", TrainTripletParams, REPO / "params.yaml").model_dump()
    with pytest.raises(
        ConfigError, match=r"train_triplet\.front: must be one of flat, modulation, got 'fft'"
    ):
        params_from_dict("train_triplet", TrainTripletParams, values | {"front": "fft"})


def test_unknown_agreement_column_is_named_with_the_columns_there_are():
    message = r"train_match\.agreement: 'tempo' is not a fused feature column; the columns are: a, tempo_bpm"
    with pytest.raises(ConfigError, match=message):
        agreement_layout(["tempo"], ["a", "tempo_bpm"])
    assert agreement_layout(["tempo_bpm", "a"], ["a", "tempo_bpm"]) == ((1, 0), (1, 1))


def test_an_agreement_name_ending_in_a_star_is_one_profile_of_every_column_it_prefixes():
    columns = ["key_strength", "tempo_bpm", "key_C_major", "key_C_minor", "key_D_major"]
    # "key_*" would also take key_strength; "key_C_*" is the two C keys.
    assert agreement_layout(["tempo_bpm", "key_C_*"], columns) == ((1, 2, 3), (1, 2))
    with pytest.raises(
        ConfigError,
        match=r"'key_D_\*' matches 1 column \(key_D_major\); a profile needs 2 or more",
    ):
        agreement_layout(["key_D_*"], columns)
    with pytest.raises(
        ConfigError, match=r"train_match\.agreement: 'chroma_\*' matches no fused feature column"
    ):
        agreement_layout(["chroma_*"], columns)


def test_dir_source_needs_a_folder():
    with pytest.raises(ConfigError, match=r"fetch\.dir: is required"):
        params_from_dict("fetch", FetchParams, _fetch_dict() | {"source": "dir", "dir": None})


def test_frames_n_cannot_exceed_the_analysed_audio(features_params):
    values = features_params.model_dump() | {"frames_n": 100_000}
    with pytest.raises(ConfigError, match=r"features\.frames_n: must be in 1\.\.\d+"):
        params_from_dict("features", FeaturesParams, values)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gain_db": 30}, r"features\.augment\.gain_db: must be in 0\.\.24, got 30"),
        ({"snr_db": [40, 20]}, r"features\.augment\.snr_db: must be \[low, high\] in 0\.\.80 dB"),
        ({"codecs": ["aac"]}, r"features\.augment\.codecs: must be one of none, mp3, vorbis, got 'aac'"),
        ({"colour": 1}, r"unknown key features\.augment\.colour"),
    ],
)
def test_a_bad_augmentation_key_is_named_with_its_section(features_params, change, message):
    values = features_params.model_dump()
    values["augment"] = values["augment"] | change
    with pytest.raises(ConfigError, match=message):
        params_from_dict("features", FeaturesParams, values)


def test_missing_file_and_section_are_reported(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_params("fetch", FetchParams, tmp_path / "nope.yaml")
    (tmp_path / "p.yaml").write_text("features: {}\n")
    with pytest.raises(ConfigError, match="missing section 'fetch:'"):
        load_params("fetch", FetchParams, tmp_path / "p.yaml")
    (tmp_path / "bad.yaml").write_text("fetch: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params("fetch", FetchParams, tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("section", "cls", "key", "value", "message"),
    [
        ("register", RegisterParams, "margin", 1.5, r"register\.margin: must be in \[0, 1\), got 1\.5"),
        (
            "register",
            RegisterParams,
            "match_threshold",
            -0.1,
            r"register\.match_threshold: must be in 0\.\.1",
        ),
        ("index", IndexParams, "hnsw_m", 1, r"index\.hnsw_m: must be >= 2, got 1"),
        ("package", PackageParams, "max_top_k", 0, r"package\.max_top_k: must be >= 1, got 0"),
        ("package", PackageParams, "max_upload_mb", 0, r"package\.max_upload_mb: must be in \(0, 1024\]"),
        ("package", PackageParams, "bento_name", "My Bento", r"package\.bento_name: must be lower-case"),
    ],
)
def test_registry_index_and_package_values_are_checked(section, cls, key, value, message):
    values = load_params(section, cls, REPO / "params.yaml").model_dump()
    with pytest.raises(ConfigError, match=message):
        params_from_dict(section, cls, values | {key: value})


def test_an_exponent_that_yaml_reads_as_a_string_is_still_a_number():
    values = load_params("register", RegisterParams, REPO / "params.yaml").model_dump()
    assert params_from_dict("register", RegisterParams, values | {"margin": "1e-3"}).margin == 0.001
    with pytest.raises(ConfigError, match=r"register\.margin: expected a number, got 'tiny'"):
        params_from_dict("register", RegisterParams, values | {"margin": "tiny"})
