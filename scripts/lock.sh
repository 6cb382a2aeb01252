#!/usr/bin/env bash
# Regenerate requirements/test-constraints.txt, the lock the README's test command and CI install with:
# every package of the test install (extras dev and plots) pinned, for every Python sdgen supports
# (uv's universal resolution: one file, markers where versions differ by Python). torch stays at the CPU
# build CI uses. Run after changing a dependency in pyproject.toml, then run the tests and commit both.
#   pip install uv && scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pin=$(mktemp)
trap 'rm -f "$pin"' EXIT
echo "torch==${TORCH_VERSION:-2.13.0}" > "$pin"
uv pip compile pyproject.toml "$pin" --universal --python-version 3.10 --extra dev --extra plots \
  --no-header --annotation-style line --quiet -o requirements/test-constraints.txt.new
{
  echo "# The test install's lock, made by scripts/lock.sh (uv pip compile, universal). Used as pip constraints:"
  echo '#   pip install -c requirements/test-constraints.txt -e ".[dev,plots]" "torch==2.13.0"'
  echo "# Lines for packages an install does not need (CUDA wheels with the CPU torch) are ignored by pip."
  sed "s#-r $pin#torch pin in scripts/lock.sh#" requirements/test-constraints.txt.new
} > requirements/test-constraints.txt
rm requirements/test-constraints.txt.new
echo "wrote requirements/test-constraints.txt ($(grep -c '==' requirements/test-constraints.txt) pins)"
