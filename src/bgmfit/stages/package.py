"""``package`` stage: import the champion models into the BentoML store and ``bentoml build`` the service.

Writes ``models/serving.json`` (the BentoML model tags and limits the service
reads, included in the bento) and ``models/bento.json`` (the built bento's tag).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from bgmfit.config import PackageParams, TimelineParams, load_params
from bgmfit.files import BENTO, INDEX, RAW, SERVING, read_json, write_json
from bgmfit.serving.recommender import Limits
from bgmfit.tracking.runs import use_tracking_store


def main(params_path: Path) -> None:
    """``bgmfit package``: reads ``params.yaml: package`` and ``timeline`` (the service's timelines)."""
    run(
        load_params("package", PackageParams, params_path),
        load_params("timeline", TimelineParams, params_path),
    )


def import_models(stamp: dict) -> dict[str, str]:
    """Import each model version named in the index stamp into the BentoML store (once); return the tags.

    The BentoML tag carries the registry version and the run, so that a version
    is imported only once and a rebuilt registry never collides with an old import.
    """
    import bentoml

    use_tracking_store()  # for the models:/ URIs
    tags = {}
    for name, model in stamp["models"].items():
        tag = f"{name}:v{model['version']}-{model['run_id'][:12]}"
        try:
            bentoml.models.get(tag)
        except bentoml.exceptions.NotFound:
            bentoml.mlflow.import_model(
                tag,
                f"models:/{name}/{model['version']}",
                labels={"registry_version": str(model["version"]), "alias": "champion"},
                metadata={"run_id": model["run_id"], "weights_sha256": model.get("weights_sha256", "")},
            )
        tags[name] = tag
    return tags


def run(
    params: PackageParams,
    timeline: TimelineParams,
    stamp_path: Path = INDEX / "stamp.json",
    serving_path: Path = SERVING,
    record_path: Path = BENTO,
    bentofile: Path = Path("bentofile.yaml"),
) -> str:
    """Import the models, write the service's config and build the bento; return the bento tag."""
    import bentoml

    stamp = read_json(stamp_path, "build the index first (dvc repro index)")
    tags = import_models(stamp)
    write_json(
        serving_path,
        {
            "models": tags,
            "index_dir": str(stamp_path.parent),
            "fused_shape": _fused_shape(stamp_path.parent),
            "limits": dataclasses.asdict(Limits.from_params(params)),
            "batching": {"max_batch_size": params.max_batch_size, "max_latency_ms": params.max_latency_ms},
            "traffic": {"timeout": params.timeout_seconds, "concurrency": params.concurrency},
            "analysis": {
                "workers": params.analysis_workers,
                "timeout_seconds": params.analysis_timeout_seconds,
                "memory_mb": params.analysis_memory_mb,
            },
            "bento_name": params.bento_name,
            "timeline": timeline.model_dump(),
            # Previews mix the library's own audio, which the bento does not carry: it is read here.
            "library_root": str((RAW if stamp["library"] == "demo" else Path(stamp["library"])).resolve()),
        },
    )
    bento = bentoml.bentos.build_bentofile(str(bentofile), build_ctx=".", name=params.bento_name)
    write_json(
        record_path, {"bento": str(bento.tag), "models": tags, "index_sha256": stamp["content_sha256"]}
    )
    print(f"package: built bento {bento.tag} with {', '.join(tags.values())}", file=sys.stderr)
    return str(bento.tag)


def _fused_shape(index_dir: Path) -> list[int]:
    features = read_json(index_dir / "features.json", "rebuild the index (dvc repro index)")
    columns = read_json(index_dir / "norm_stats.json", "rebuild the index (dvc repro index)")["columns"]
    return [int(features["n_segments"]), len(columns)]
