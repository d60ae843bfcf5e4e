"""Detector construction, the one copy the train job and the in-process quality protocol use."""

from __future__ import annotations

from typing import Sequence

from anomalake.models.base import Detector
from anomalake.models.registry import get_family
from anomalake.pipelines.config import ConfigError, DetectorSpec
from anomalake.pipelines.errors import JobError


def build_detector(
    spec: DetectorSpec,
    kind: str,
    sample_shape: Sequence[int],
    feature_names: Sequence[str] = (),
    verbose: int = 2,
    where: str = "",
) -> Detector:
    """The family of `spec` configured for samples of `kind` and `sample_shape` (a family must accept the kind).

    A parameter the family does not know is a ConfigError naming the detector's yml and the key.
    """
    family = get_family(spec.family)
    prefix = f"{where}: " if where else ""
    if kind not in family.input_kinds:
        raise JobError(
            f"{prefix}detector {spec.name} ({spec.family}) takes {', '.join(family.input_kinds)} input, "
            f"the table is {kind}"
        )
    settings = {
        **spec.params,
        "verbose": verbose,
        "input_shape": tuple(sample_shape),
        "feature_names": tuple(feature_names),
    }
    try:
        config = family.config_class.from_dict(settings)
    except ValueError as error:
        raise ConfigError(f"{spec.source or f'detector {spec.name}'}: params: {error}") from None
    return family(config)
