"""Reading a saved .keras model safely: only a Keras v3 zip archive, never a pickle, HDF5 file or Lambda layer.

ArtifactError lives here because this is the lowest module that refuses an artifact; models.artifacts re-uses it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any


class ArtifactError(ValueError):
    """A model artifact that must not be loaded: one line naming the folder and what is wrong with it."""

    def __init__(self, folder: str | Path, problem: str):
        self.folder, self.problem = str(folder), " ".join(str(problem).split())
        super().__init__(f"model artifact {self.folder}: {self.problem}")


def load_keras_model(path: Path) -> Any:
    """A saved .keras model, deserialised with safe_mode=True and without its optimizer.

    Only a Keras v3 zip archive is handed to Keras: a pickle or an HDF5 file (which Keras would also read)
    is refused before Keras sees it, and so is a model that needs unsafe deserialisation (a Lambda layer).
    """
    import keras

    path = Path(path)
    check_keras_archive(path)
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except ValueError as error:
        if "Lambda" in str(error) or "safe_mode" in str(error):
            raise ArtifactError(
                path.parent, f"{path.name} needs unsafe deserialisation (a Lambda layer): refused; safe_mode=True"
            ) from error
        raise


def check_keras_archive(path: Path) -> None:
    """Raise ArtifactError unless `path` is a zip archive (a Keras v3 .keras file); name a pickle as one."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:1] == b"\x80":
        raise ArtifactError(path.parent, f"{path.name} is a pickle file: refused")
    if head != b"PK\x03\x04" or not zipfile.is_zipfile(path):
        raise ArtifactError(
            path.parent, f"{path.name} is not a Keras v3 .keras archive (pickle or HDF5 files are refused)"
        )
    # Keras's safe_mode refuses Lambda layers at load time; reading the archive's config says so before any
    # worker tries (a refusal inside a Spark task would surface as a stack trace, not one line).
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode("utf-8", "replace") if "config.json" in archive.namelist() else ""
    if '"class_name": "Lambda"' in config or "__lambda__" in config:
        raise ArtifactError(
            path.parent, f"{path.name} needs unsafe deserialisation (a Lambda layer): refused; safe_mode=True"
        )
