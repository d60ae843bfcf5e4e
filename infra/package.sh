#!/usr/bin/env bash
# Build the project's code for a cluster into OUT (default dist/): the wheel (images, pip) and the same files as a
# .zip, which Spark puts on the executors' Python path (spark-submit --py-files, or ANOMALAKE_CODE for the jobs;
# Spark takes .zip and .egg there, not .whl). The zip also holds an entry per folder: anomalake is a namespace
# package, and Python 3.11's zipimport finds a namespace package only through its folder's entry, which a wheel
# does not have. Prints the zip's path.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$REPO/dist}" && cd "${1:-$REPO/dist}" && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
cd "$REPO"
# An isolated build: pyproject's setuptools (the venv keeps the older one Petastorm asks for).
"$PYTHON" -W ignore -m pip wheel -q --no-deps -w "$BUILD" . 2>/dev/null
rm -rf "$REPO/build"  # setuptools' scratch folder
wheel=$(ls "$BUILD"/anomalake-*.whl)
cp "$wheel" "$OUT/"
zip="$OUT/$(basename "$wheel" -py3-none-any.whl).zip"
"$PYTHON" - "$wheel" "$zip" <<'PY'
import sys
import zipfile

wheel, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
    names = source.namelist()
    folders = sorted({"/".join(name.split("/")[:depth]) + "/" for name in names for depth in range(1, name.count("/") + 1)})
    for folder in folders:
        out.writestr(zipfile.ZipInfo(folder, date_time=(1980, 1, 1, 0, 0, 0)), b"")
    for name in names:
        out.writestr(source.getinfo(name), source.read(name))
PY
echo "$zip"
