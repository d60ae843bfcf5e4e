"""Reading a saved .keras model safely, in two layers that each refuse on their own.

1. The pre-scan parses the archive's config.json before Keras sees it and refuses what would need unsafe
   deserialisation anywhere in the model, sub-models included: a Lambda layer, a Python lambda, and a class or
   function from outside Keras that is not one of the registered custom objects (the `anomalake>...` names).
   Refusing here keeps the error one line on the driver, before any Spark task tries.
2. Keras then loads with safe_mode=True, which refuses Lambda bytecode and unknown classes itself.

Pickles and HDF5 files (which Keras would also read) never get that far: only a Keras v3 zip archive is opened.
ArtifactError lives here because this is the lowest module that refuses an artifact; models.artifacts re-uses it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Collection, Iterator

PRESCAN = "pre-scan"  # the start of the pre-scan's refusals
SAFE_MODE = "Keras safe_mode"  # the start of Keras's safe_mode refusals
UNREADABLE = "Keras could not load"  # the start of Keras's other refusals (an archive it cannot rebuild at all)


class ArtifactError(ValueError):
    """A model artifact that must not be loaded: one line naming the folder and what is wrong with it."""

    def __init__(self, folder: str | Path, problem: str):
        self.folder, self.problem = str(folder), " ".join(str(problem).split())
        super().__init__(f"model artifact {self.folder}: {self.problem}")


def load_keras_model(path: Path, registered: Collection[str] = (), prescan: bool = True) -> Any:
    """A saved .keras model: format check, pre-scan against the `registered` custom object names, then Keras
    with safe_mode=True and without its optimizer. `prescan=False` is for tests only: it shows that Keras's
    safe_mode refuses the same archives on its own."""
    import keras

    path = Path(path)
    check_keras_archive(path)
    if prescan:
        prescan_keras_archive(path, registered)
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except (ValueError, TypeError) as error:
        text = str(error).strip()
        first = text.splitlines()[0][:240] if text else type(error).__name__
        # Keras names safe_mode in every refusal of its own (it tells the user how to override it); any other
        # error is an archive it could not rebuild whatever safe_mode says, and is not labelled a safe_mode refusal.
        cause = f"{SAFE_MODE} refused" if "safe_mode" in text else UNREADABLE
        raise ArtifactError(path.parent, f"{cause} {path.name}: {first}") from error


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


def prescan_keras_archive(path: Path, registered: Collection[str]) -> None:
    """Raise ArtifactError when the archive's model config holds anything that needs unsafe deserialisation."""
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ArtifactError(path.parent, f"{PRESCAN}: {path.name} has no config.json: not a Keras v3 model")
        try:
            config = json.loads(archive.read("config.json"))
        except (ValueError, UnicodeDecodeError):
            raise ArtifactError(path.parent, f"{PRESCAN}: {path.name}'s config.json is not JSON") from None
    for where, problem in unsafe_objects(config, frozenset(registered)):
        raise ArtifactError(
            path.parent, f"{PRESCAN}: {path.name} needs unsafe deserialisation ({problem} at {where}): refused"
        )


def unsafe_objects(config: Any, registered: frozenset[str], where: str = "$") -> Iterator[tuple[str, str]]:
    """(JSON path, what) of every serialised object in `config` that safe loading must refuse, depth first."""
    if isinstance(config, dict):
        problem = _unsafe(config, registered)
        if problem:
            yield where, problem
        for key, value in config.items():
            yield from unsafe_objects(value, registered, f"{where}.{key}")
    elif isinstance(config, list):
        for index, value in enumerate(config):
            yield from unsafe_objects(value, registered, f"{where}[{index}]")


def _unsafe(item: dict, registered: frozenset[str]) -> str | None:
    """Why one serialised object (a dict with class_name and module) is unsafe, or None."""
    name = item.get("class_name")
    if not isinstance(name, str):
        return None
    if name == "__lambda__":
        return "a Python lambda"
    if name == "Lambda":
        return "a Lambda layer"
    if (name.startswith("__") and name.endswith("__")) or "module" not in item:
        return None  # Keras's own markers (__keras_tensor__, __tuple__, ...) and legacy entries found by class name
    module = str(item.get("module") or "")
    if module.split(".")[0] == "keras":
        return None  # Keras's own classes and functions: Keras checks them itself
    if name == "function":  # a registered function is serialised under its registered name
        if item.get("config") in registered:
            return None
        return f"the function {module}.{item.get('config')}, which is not a registered Keras object"
    if item.get("registered_name") in registered:
        return None
    return f"the class {module}.{name}, which is not a registered Keras object"
