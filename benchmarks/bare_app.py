"""The fused-array ``/recommend`` as a bare FastAPI app: the baseline ``benchmarks/serve.py`` sets
the BentoML service against (same models, index and call, one uvicorn worker, no BentoML).

    .venv/bin/uvicorn benchmarks.bare_app:app --host 127.0.0.1 --port 3001
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel, Field

from bgmfit.config import PackageParams, load_params
from bgmfit.serving.recommender import Limits, from_registry

recommender = from_registry(Path("models/index"), Limits.from_params(load_params("package", PackageParams)))
app = FastAPI(title="bare /recommend")


class Body(BaseModel):
    features: list[list[float]]
    top_k: int = Field(10, ge=1, le=100)


@app.post("/recommend")
def recommend(body: Body) -> list[dict]:
    return recommender.recommend(recommender.query_from_fused(body.features), "match", body.top_k)


@app.get("/readyz")
def ready() -> str:
    return "ok"
