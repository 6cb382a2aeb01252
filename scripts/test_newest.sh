#!/usr/bin/env bash
# Early warning for dependency releases: the test suite against the newest versions pyproject.toml allows,
# in a throw-away venv, ignoring the lock (requirements/test-constraints.txt) that CI and the README use.
# Not part of CI: a red result here means "a release is coming that breaks us", not "main is broken".
#
#   scripts/test_newest.sh                         # newest of everything allowed
#   scripts/test_newest.sh "transformers<5" "peft<0.18"   # the same with extra pins (older combinations)
#   PYTEST_ARGS="tests/test_text.py" scripts/test_newest.sh   # a subset of the suite
#
# Prints the versions it installed (pip freeze), then pytest's result; exits with pytest's code.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d -t sdgen-newest-XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
# torch stays the CPU build given by TORCH (default torch==2.13.0): the newest CUDA build is gigabytes.
pip install --quiet --upgrade --upgrade-strategy eager -e ".[dev,plots]" "${TORCH:-torch==2.13.0}" "$@"
echo "== installed =="
pip freeze --exclude-editable | grep -iE '^(torch|diffusers|transformers|peft|accelerate|huggingface.hub|safetensors|tokenizers|numpy|fastapi|pydantic|typer|pillow)=='
# shellcheck disable=SC2086
python -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-}
