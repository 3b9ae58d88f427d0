#!/usr/bin/env bash
# Creates the Airflow virtual environment (default: .venv-airflow at the repo root) with
# Apache Airflow and driftline, installed --no-deps on top of requirements.txt.
#
#     infra/airflow/setup.sh            # idempotent: a second run only compares a stamp
#
# Environment: PYTHON (default python3.11), DRIFTLINE_AIRFLOW_VENV (default
# <repo>/.venv-airflow). The stamp file <venv>/.installed holds a hash of this script,
# requirements.txt, constraints.txt and pyproject.toml; while it matches, nothing is done.
# Concurrent runs (two test sessions) wait for each other on a lock file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${DRIFTLINE_AIRFLOW_VENV:-$root/.venv-airflow}"
python="${PYTHON:-python3.11}"
stamp="$venv/.installed"

inputs_hash() {
    cat "$here/setup.sh" "$here/requirements.txt" "$here/constraints.txt" "$root/pyproject.toml" \
        | sha256sum | cut -d' ' -f1
}

up_to_date() {
    [[ -x "$venv/bin/airflow" && -f "$stamp" && "$(cat "$stamp")" == "$(inputs_hash)" ]]
}

up_to_date && exit 0

mkdir -p "$venv"
exec 9>"$venv/.setup.lock"
flock 9
up_to_date && exit 0  # another run finished while this one waited

began=$SECONDS
echo "airflow setup: installing into $venv" >&2
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
version="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$version" != "3.11" ]]; then
    echo "airflow setup: $venv has Python $version, driftline needs 3.11 (set PYTHON)" >&2
    exit 1
fi
rm -f "$stamp"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$here/requirements.txt" -c "$here/constraints.txt"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$root"
"$venv/bin/python" -c 'import airflow.sdk, detectors, retrain, schemas.settings' >/dev/null
inputs_hash >"$stamp"
echo "airflow setup: done in $((SECONDS - began))s" >&2
