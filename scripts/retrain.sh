#!/usr/bin/env bash
# Retrain the way CI does. .github/workflows/retrain.yml runs this script, and so does
# `make retrain`, so a local rehearsal and the CI job cannot drift apart.
#
#   1. dvc pull        data and models from the DVC remote, if one is configured;
#                      without one, `dvc repro` builds the demo corpus
#   2. dvc repro       every stage that changed, including `register` (the gate:
#                      a new version becomes @champion only if it beats the
#                      champion) and `package` (bentoml build)
#   3. metrics diff    `dvc metrics diff --md` against $RETRAIN_BASE (default main),
#                      printed, written to retrain-report.md and, in GitHub Actions,
#                      to the job summary
#   4. registry        the versions and aliases after the gate
#   5. dvc push        the new data and models, if a remote is configured
#   6. export          the bento as dist/bgmfit.bento (the MLflow store is
#                      mlflow.db + mlruns/ unless MLFLOW_TRACKING_URI points at a server)
set -euo pipefail

base="${RETRAIN_BASE:-main}"
report="retrain-report.md"
: > "${report}"
step() { printf '\n== retrain %s\n' "$*" >&2; }

has_remote() { [ -n "$(dvc remote list 2>/dev/null)" ]; }

step "1/6: dvc pull"
if has_remote; then
    # A first run on a new remote has nothing to pull; what is missing is rebuilt by repro.
    dvc pull --allow-missing || echo "dvc pull was incomplete; dvc repro rebuilds what is missing" >&2
else
    echo "no DVC remote configured: dvc repro builds the built-in demo corpus" >&2
fi

step "2/6: dvc repro (train, evaluate, register gate, index, bentoml build)"
dvc repro

step "3/6: metrics diff against ${base}"
{
    echo "## Metrics against ${base}"
    echo
    if git rev-parse --verify --quiet "${base}" >/dev/null; then
        dvc metrics diff --md "${base}"
    else
        echo "(no ${base} revision to compare with)"
    fi
    echo
} | tee -a "${report}"

step "4/6: registry after the gate"
{
    echo "## Registry"
    echo
    echo '```'
    bgmfit registry
    echo '```'
} | tee -a "${report}"

step "5/6: dvc push"
if has_remote; then dvc push; else echo "no DVC remote configured: nothing to push" >&2; fi

step "6/6: export the bento"
mkdir -p dist
bento="$(python -c 'import json; print(json.load(open("models/bento.json"))["bento"])')"
bentoml export "${bento}" "${PWD}/dist/bgmfit.bento"  # bentoml reads a relative path from /
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat "${report}" >> "${GITHUB_STEP_SUMMARY}"; fi
echo "bento ${bento} exported to dist/bgmfit.bento; report in ${report}" >&2
