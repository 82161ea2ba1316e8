#!/usr/bin/env bash
# Benchmarks, side by side with the tool each one compares against.
#   bash bench/run.sh                      every suite in turn (what `make bench` runs)
#   bash bench/run.sh [registry] [--only metrics|models|search|startup] [--quick] [--mlflow-runs N]
#   bash bench/run.sh data [--quick] [--repeats N] [--transfer-repeats N] [--only keel|dvc]
#   bash bench/run.sh features [--quick|--tiny] [--only training|materialize|online|startup]
#   bash bench/run.sh serving [--seconds 10] [--workers 2] [--rows 50000]
# The other tool runs in its own virtual environment (.bench/<tool>-venv: mlflow, dvc, feast),
# built from bench/requirements-<tool>.txt once and rebuilt only when that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."
# Start-up times compare like with like: the peer tools' venvs hold the bytecode pip compiled at
# install time, and Keel's editable install gets its own on first import — unless the caller's
# environment forbids writing it, which would recompile Keel on every command.
unset PYTHONDONTWRITEBYTECODE

declare -A other_tool=([registry]=mlflow [data]=dvc [features]=feast [serving]=mlflow)

if [[ $# -eq 0 ]]; then
  suites=(registry data features serving)
elif [[ $1 != -* ]]; then
  suites=("$1")
  shift
else
  suites=(registry) # options without a suite name: the registry suite, as before
fi
for suite in "${suites[@]}"; do
  if [[ -z ${other_tool[$suite]+x} ]]; then
    echo "bench/run.sh: unknown suite '$suite'; the suites are: registry, data, features" >&2
    exit 2
  fi
done

if [[ ! -x .venv/bin/python ]]; then
  echo "bench/run.sh: .venv is missing; run 'make bench' (it installs the dev venv first)" >&2
  exit 2
fi

# .bench/<tool>-venv from bench/requirements-<tool>.txt, rebuilt when that file changes.
build_venv() {
  local venv=.bench/$1-venv requirements=bench/requirements-$1.txt
  local stamp=$venv/.requirements.sha256 want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [[ ! -x $venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "bench: building $venv from $requirements (once)" >&2
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$requirements"
    echo "$want" >"$stamp"
  fi
}

status=0
for suite in "${suites[@]}"; do
  tool=${other_tool[$suite]}
  build_venv "$tool"
  PYTHONPATH="$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" .venv/bin/python "bench/$suite/run.py" \
    "--$tool-python" ".bench/$tool-venv/bin/python" "$@" || status=$?
done
exit $status
