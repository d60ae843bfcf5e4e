#!/usr/bin/env bash
# Build the project's code for a cluster into OUT (default dist/): the wheel (images, pip) and the same archive
# as a .zip, which Spark puts on the executors' Python path (spark-submit --py-files, or ANOMALAKE_CODE for the
# jobs; Spark takes .zip and .egg there, not .whl). Prints the zip's path.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$REPO/dist}" && cd "${1:-$REPO/dist}" && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
cd "$REPO"
"$PYTHON" -W ignore -m pip wheel -q --no-deps --no-build-isolation -w "$BUILD" . 2>/dev/null
rm -rf "$REPO/build"  # setuptools' scratch folder
wheel=$(ls "$BUILD"/anomalake-*.whl)
cp "$wheel" "$OUT/"
zip="$OUT/$(basename "$wheel" -py3-none-any.whl).zip"
cp "$wheel" "$zip"
echo "$zip"
