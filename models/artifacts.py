"""One artifact folder: model.keras + config.json (the detector), baseline.json, calibration.json, meta.json."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.base import Detector
from models.calibration import Calibration
from models.scaling import EntityBaseline

CALIBRATION_FILE = "calibration.json"
META_FILE = "meta.json"
CURRENT_FILE = "CURRENT"


@dataclass(frozen=True)
class Artifact:
    """A loaded, fitted detector with its per-entity baseline, calibration and metadata."""

    detector: Detector
    baseline: EntityBaseline
    calibration: Calibration
    meta: dict[str, Any]
    version: str


def save_artifact(
    folder: Path, detector: Detector, baseline: EntityBaseline, calibration: Calibration, meta: dict[str, Any]
) -> Path:
    """Write a complete artifact folder (the CURRENT pointer is the caller's, written after this)."""
    detector.save(folder)
    baseline.save(folder)
    (folder / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict(), indent=2, sort_keys=True))
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return folder


def load_artifact(folder: Path) -> Artifact:
    """Read an artifact folder written by `save_artifact` (Keras safe_mode, no pickle)."""
    folder = Path(folder)
    detector = Detector.load(folder)
    baseline = EntityBaseline.load(folder)
    calibration = Calibration.from_dict(json.loads((folder / CALIBRATION_FILE).read_text()))
    meta = json.loads((folder / META_FILE).read_text())
    return Artifact(detector, baseline, calibration, meta, folder.name)


def write_current(model_root: Path, version: str) -> None:
    """Point CURRENT at `version` atomically (write a temp file, then rename over the old pointer)."""
    tmp = model_root / f".{CURRENT_FILE}.tmp"
    tmp.write_text(version + "\n")
    tmp.replace(model_root / CURRENT_FILE)


def read_current(model_root: Path) -> str:
    """The version CURRENT points at; FileNotFoundError when no model was promoted yet."""
    path = model_root / CURRENT_FILE
    if not path.exists():
        raise FileNotFoundError(f"no trained model under {model_root} (no {CURRENT_FILE} pointer): run `anomalake train` first")
    return path.read_text().strip()
