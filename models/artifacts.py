"""One artifact folder: model.keras + config.json (the detector), baseline.json (the per-entity scaling),
calibration.json, meta.json.

The folder is tamper-evident: `save_artifact` writes checksums.json last (a sha256 per file) and
`load_artifact` checks it before anything is deserialised; the Keras model is read with safe_mode=True
and only from a Keras v3 zip archive (see anomalake.models.keras_archive), so a rewritten checksums.json
still cannot smuggle in a pickle, an HDF5 file or a Lambda layer.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from anomalake.models.base import CONFIG_FILE, MODEL_FILE, Detector, prescan_model
from anomalake.models.calibration import Calibration
from anomalake.models.files import write_text_atomically
from anomalake.models.keras_archive import ArtifactError, check_keras_archive
from anomalake.models.scaling import SCALING_FILE, EntityScaling

CALIBRATION_FILE = "calibration.json"
META_FILE = "meta.json"
CHECKSUMS_FILE = "checksums.json"
CURRENT_FILE = "CURRENT"
CHECKSUM_ALGORITHM = "sha256"
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, SCALING_FILE, CALIBRATION_FILE, META_FILE)  # what load_artifact reads
MODEL_SUFFIXES = (".keras", ".h5", ".pkl", ".pickle", ".joblib", ".npy", ".npz")  # files that can carry a model
VERSION_PATTERN = re.compile(r"v?[0-9A-Za-z][0-9A-Za-z_.-]{0,127}")


@dataclass(frozen=True)
class Artifact:
    """A loaded, fitted detector with its per-entity scaling, calibration and metadata."""

    detector: Detector
    scaling: EntityScaling
    calibration: Calibration
    meta: dict[str, Any]
    version: str


def input_signature(
    kind: str,
    sample_shape: Sequence[int],
    features: Sequence[str],
    window_length: int,
    window_stride: int,
    step_seconds: int,
) -> dict[str, Any]:
    """What a model's inputs look like (meta.json's "signature"): compared with the table before scoring."""
    return {
        "kind": kind,
        "sample_shape": [int(n) for n in sample_shape],
        "dtype": "string" if kind == "text" else "float32",
        "features": list(features),
        "window": {"length": int(window_length), "stride": int(window_stride)},
        "step_seconds": int(step_seconds),
    }


def check_signature(meta: dict[str, Any], expected: dict[str, Any], folder: str | Path | None = None) -> None:
    """Raise ArtifactError listing every field where the artifact's input signature differs from `expected`."""
    where = folder or f"of detector {meta.get('detector', '?')} on table {meta.get('table', '?')}"
    if "signature" not in meta:
        raise ArtifactError(where, "no input signature; retrain")
    trained, wanted = _plain(meta["signature"]), _plain(expected)
    differ = [
        f"{key}: trained on {trained.get(key)}, the table has {wanted.get(key)}"
        for key in sorted(set(trained) | set(wanted))
        if trained.get(key) != wanted.get(key)
    ]
    if differ:
        raise ArtifactError(where, "input signature differs: " + "; ".join(differ) + "; retrain")


def _plain(value: Any) -> Any:
    """`value` as JSON would bring it back (tuples become lists), so saved and fresh signatures compare."""
    return json.loads(json.dumps(value, default=str))


def save_artifact(
    folder: Path, detector: Detector, scaling: EntityScaling, calibration: Calibration, meta: dict[str, Any]
) -> Path:
    """Write a complete artifact folder, checksums.json last (the CURRENT pointer is the caller's, written after
    this)."""
    folder = Path(folder)
    detector.save(folder)
    scaling.save(folder)
    (folder / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict(), indent=2, sort_keys=True))
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    write_checksums(folder)
    return folder


def write_checksums(folder: Path) -> Path:
    """Write checksums.json: the sha256 of every file in `folder` (recursively), but itself and .hidden/_private
    ones."""
    files = {name: file_digest(Path(folder) / name) for name in _checksummed_files(Path(folder))}
    payload = json.dumps({"algorithm": CHECKSUM_ALGORITHM, "files": files}, indent=2, sort_keys=True)
    return write_text_atomically(Path(folder) / CHECKSUMS_FILE, payload)


def file_digest(path: Path) -> str:
    """The sha256 hex digest of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _relative_files(folder: Path) -> Iterable[str]:
    """Relative POSIX paths of every file (or link) under `folder`, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _checksummed_files(folder: Path) -> list[str]:
    """The files checksums.json covers: all but itself and anything under a name starting with "." or "_"."""
    return [
        name
        for name in _relative_files(folder)
        if name != CHECKSUMS_FILE and not any(part[:1] in (".", "_") for part in name.split("/"))
    ]


def verify_artifact(folder: Path) -> None:
    """Raise ArtifactError unless every file of checksums.json is there, unchanged, and no unlisted model file is."""
    folder = Path(folder)
    listed = _read_checksums(folder)
    for name in REQUIRED_FILES:
        if name not in listed:
            raise ArtifactError(folder, f"{name} is not listed in {CHECKSUMS_FILE}: tampered; retrain")
    for name, expected in listed.items():
        _verify_file(folder, name, expected)
    for name in _relative_files(folder):
        if name not in listed and name != CHECKSUMS_FILE and name.lower().endswith(MODEL_SUFFIXES):
            raise ArtifactError(folder, f"{name} is a model-bearing file not listed in {CHECKSUMS_FILE}: refused")
    check_keras_archive(folder / MODEL_FILE)
    prescan_model(folder)  # on the driver, before any Spark task loads it: one line, not a task's stack trace


def _read_checksums(folder: Path) -> dict[str, str]:
    """checksums.json's relative path -> sha256 hex digest, or ArtifactError when it is missing or malformed."""
    path = folder / CHECKSUMS_FILE
    if not path.is_file():
        raise ArtifactError(folder, f"no {CHECKSUMS_FILE}: written by an older version or tampered; retrain")
    try:
        payload = json.loads(path.read_text())
        files = payload["files"]
        ok = payload["algorithm"] == CHECKSUM_ALGORITHM and all(isinstance(v, str) for v in files.values())
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise ArtifactError(folder, f"{CHECKSUMS_FILE} is malformed (expected sha256 digests per file); retrain")
    return dict(files)


def _verify_file(folder: Path, name: str, expected: str) -> None:
    """Raise ArtifactError unless `name` is a plain file inside `folder` whose sha256 is `expected`."""
    path = folder / name
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ArtifactError(folder, f"{CHECKSUMS_FILE} lists {name!r}, a path outside the folder: tampered")
    if path.is_symlink():
        raise ArtifactError(folder, f"{name} is a symbolic link: refused")
    if not path.is_file():
        raise ArtifactError(folder, f"{name} is listed in {CHECKSUMS_FILE} but missing; retrain")
    if file_digest(path) != expected.lower():
        raise ArtifactError(folder, f"{name} was changed after training ({CHECKSUM_ALGORITHM} mismatch)")


def load_artifact(folder: Path) -> Artifact:
    """Verify, then read an artifact folder written by `save_artifact` (Keras safe_mode, no pickle)."""
    folder = Path(folder)
    verify_artifact(folder)
    detector = Detector.load(folder)
    scaling = EntityScaling.load(folder)
    calibration = Calibration.from_dict(json.loads((folder / CALIBRATION_FILE).read_text()))
    meta = json.loads((folder / META_FILE).read_text())
    return Artifact(detector, scaling, calibration, meta, folder.name)


def write_current(model_root: Path, version: str) -> None:
    """Point CURRENT at `version` atomically (write and fsync a temp file, then rename over the old pointer)."""
    model_root = Path(model_root)
    _check_version(model_root / CURRENT_FILE, version)
    write_text_atomically(model_root / CURRENT_FILE, version + "\n")


def read_current(model_root: Path) -> str:
    """The version CURRENT points at; FileNotFoundError when no model was promoted yet or its folder is gone."""
    model_root = Path(model_root)
    path = model_root / CURRENT_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"no trained model under {model_root} (no {CURRENT_FILE} pointer): run `anomalake train` first"
        )
    with open(path, "rb") as handle:
        raw = handle.read(256)
    try:
        version = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ArtifactError(path, "the pointer is not text: tampered; rewrite it with `anomalake promote`") from None
    _check_version(path, version)
    if not (model_root / version).is_dir():
        raise FileNotFoundError(
            f"{path} points at version {version}, but {model_root / version} does not exist: promote an existing "
            "version or retrain"
        )
    return version


def _check_version(pointer: Path, version: str) -> None:
    """Raise ArtifactError naming `pointer` unless `version` is a plain version folder name."""
    if not VERSION_PATTERN.fullmatch(version) or ".." in version:
        raise ArtifactError(
            pointer, f"{version[:64]!r} is not a version name (letters, digits, _ . -; no '..'): tampered"
        )
