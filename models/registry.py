"""The one list of detector families: `@register` on a class, discovery by importing anomalake.models.families.*."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the base module imports this one; a family's class is only annotated here
    from anomalake.models.base import Detector

FAMILIES_PACKAGE = (
    f"{__name__.rpartition('.')[0]}.families"  # beside this module, wherever the package is imported from
)
_FAMILIES: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a Detector subclass selectable by its `family` name."""
    if not cls.family:
        raise ValueError(f"{cls.__name__} has no `family` name")
    _FAMILIES[cls.family] = cls
    return cls


def discover() -> dict[str, type[Detector]]:
    """Import every module of the families package so that each family's @register runs; return name -> class.

    Modules without a family (the shared templates) import harmlessly and register nothing. The package's own
    __path__ is walked, so discovery works from a folder, the editable install and a zip on executors alike.
    """
    package = importlib.import_module(FAMILIES_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{FAMILIES_PACKAGE}.{module.name}")
    return dict(sorted(_FAMILIES.items()))


def get_family(name: str) -> type[Detector]:
    """The class registered as `name`, or a KeyError that lists the known families."""
    families = discover()
    if name not in families:
        raise KeyError(f"unknown detector family '{name}' (known: {', '.join(families)})")
    return families[name]
