"""The one list of detector families: `@register` on a class, discovery by importing models/*.py."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from models.base import Detector

_FAMILIES: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a Detector subclass selectable by its `family` name."""
    if not cls.family:
        raise ValueError(f"{cls.__name__} has no `family` name")
    _FAMILIES[cls.family] = cls
    return cls


def discover() -> dict[str, type[Detector]]:
    """Import every module in models/ so that each family's @register runs; return name -> class.

    Modules without a family (base, calibration, training, ...) import harmlessly and register nothing.
    """
    package = Path(__file__).parent
    for module in pkgutil.iter_modules([str(package)]):
        importlib.import_module(f"models.{module.name}")
    return dict(sorted(_FAMILIES.items()))


def get_family(name: str) -> type[Detector]:
    """The class registered as `name`, or a KeyError that lists the known families."""
    families = discover()
    if name not in families:
        raise KeyError(f"unknown detector family '{name}' (known: {', '.join(families)})")
    return families[name]
