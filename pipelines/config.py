"""Table and detector configuration: YAML read once at job start into frozen, validated objects."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import yaml

from anomalake.models.artifacts import input_signature
from anomalake.models.calibration import CALIBRATION_SETTINGS

CONF_DIR = Path(__file__).parent / "conf"
INPUT_KINDS = ("timeseries", "image", "text")
DEFAULT_DETECTORS = {"timeseries": "dense_autoencoder", "image": "conv_autoencoder", "text": "text_transformer"}


class ConfigError(ValueError):
    """A configuration file is missing, malformed or inconsistent."""


# Names reach folder paths and SQL statements: letters, digits and underscores only (no quotes, dots or slashes).
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
COLUMN_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
PATH_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_=.-]{0,127}")


def check_name(what: str, value: Any) -> str:
    """`value` when it is a safe table or detector name; else ConfigError saying what is allowed."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{what} {str(value)[:80]!r} is not a valid name: a letter, then letters, digits or _ (at most 64; no "
            "quotes, dots or path separators)"
        )
    return value


def check_column(where: str, value: Any) -> str:
    """`value` when it is a safe column name; else ConfigError naming where it was configured."""
    if not isinstance(value, str) or not COLUMN_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{where}: column {str(value)[:80]!r} is not a valid column name: letters, digits and _ (rename it "
            "upstream or in a view)"
        )
    return value


def check_lake_path(where: str, value: Any) -> str:
    """`value` when it is a relative path inside the lake (no '..', no absolute path, plain segments)."""
    segments = str(value).split("/")
    if not isinstance(value, str) or any(not PATH_SEGMENT.fullmatch(s) or set(s) == {"."} for s in segments):
        raise ConfigError(
            f"{where}: path {str(value)[:80]!r} must be a relative folder inside the lake (plain names, no '..')"
        )
    return value


@dataclass(frozen=True)
class WindowSpec:
    """How windows are cut: `length` steps, one window end every `stride` steps (epoch aligned)."""

    length: int
    stride: int = 1


EVENT_METHODS = ("dynamic", "fixed")


@dataclass(frozen=True)
class EventSettings:
    """How a table's window scores become events (the table config's `events:` block)."""

    history_days: int = 4  # trailing days of scores the threshold of day D sees, besides D itself
    min_history_days: int = 3  # fewer days with scores: the held-out calibration's threshold decides (fallback)
    # Trailing mean over this many windows before thresholding (1: none). Overlapping windows (stride 1) already
    # average `length` steps, so a further mean mostly delays; per-step scores (forecasters) may want a few.
    smoothing: int = 1
    method: str = "dynamic"  # dynamic: telemanom's z search; fixed: mean + z_max * std
    z_min: float = 2.0
    z_max: float = 10.0
    rounds: int = 3  # the threshold found again without the sequences above it, so one big event hides no other
    above_calibration: bool = True  # an event's strongest window must also be unusual against the training days
    padding: int = 4  # windows added before and after each run above the threshold
    min_percent: float = 0.1  # a sequence whose peak is not this much above the next lower one is pruned
    merge_gap: int = 12  # sequences fewer windows apart are one event
    max_chain_days: int = 7  # how far back an event open at midnight is followed to find its start

    def __post_init__(self) -> None:
        if self.method not in EVENT_METHODS:
            raise ConfigError(f"events method '{self.method}' is not one of {', '.join(EVENT_METHODS)}")
        if (
            self.history_days < 1
            or self.min_history_days < 0
            or self.smoothing < 1
            or self.padding < 0
            or self.rounds < 0
        ):
            raise ConfigError(f"events settings out of range: {self}")
        if not 0 < self.z_min <= self.z_max:
            raise ConfigError(f"events z range [{self.z_min}, {self.z_max}] must be positive and ordered")


def replace_events(events: EventSettings, changes: Mapping[str, Any], where: str) -> EventSettings:
    """`events` with some settings replaced; an unknown name or a bad value is a ConfigError naming `where`."""
    known = SECTION_KEYS["events"]
    unknown = [k for k in changes if k not in known]
    if unknown:
        raise ConfigError(f"{where}: events: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    try:
        return dataclasses.replace(events, **changes)
    except (TypeError, ConfigError) as error:
        raise ConfigError(f"{where}: events: {error}") from None


IMPUTATIONS = ("linear", "previous")
MASK_FEATURE = "imputed"  # the mask channel's name in a model's inputs (a table with `gaps: {mask: true}`)
AGGREGATIONS = ("mean", "last", "min", "max", "sum", "none")


@dataclass(frozen=True)
class GapFill:
    """How missing grid steps of one feature are filled: runs of at most `limit` steps, by `method`."""

    limit: int
    method: str = "linear"  # linear: between the neighbours; previous: the last reading carried forward


@dataclass(frozen=True)
class GapPolicy:
    """How a table's irregular rows become a regular grid (the table config's `gaps:` block).

    Readings of one entity that snap to the same grid step are combined by `aggregate` (none: all but the first are
    quarantined as duplicate keys; identical timestamps always are); missing steps are filled per feature (`fill`,
    in feature order); a window that still holds a missing step is quarantined (gap_exceeds_fill_limit).
    """

    fill: tuple[GapFill, ...]
    aggregate: str = "mean"
    mask: bool = False  # each window gains a channel MASK_FEATURE: 1 where the step was imputed, so the model sees it

    @property
    def longest_fill(self) -> int:
        return max((f.limit for f in self.fill), default=0)


@dataclass(frozen=True)
class TableConfig:
    """One lake table anomalake reads: where it is, its key columns, its features, how to window it.

    `kind` says what one model input is: a window of metrics (timeseries), an image, or a text;
    `sample_shape` is its shape ((steps, features), (height, width, channels) or () for a string).
    """

    name: str
    kind: str
    path: str
    entity: str
    time: str
    features: tuple[str, ...]
    step_seconds: int
    gaps: GapPolicy
    window: WindowSpec
    detectors: tuple[str, ...]
    max_quarantine_share: float = 0.2
    sample_shape: tuple[int, ...] = ()
    value_column: str = ""  # image tables: the binary column of encoded images; text tables: the string column
    path_column: str = ""  # image tables whose images are files: the column of their paths (or URIs)
    resize: bool = False  # images of another size are resized (True) or quarantined (False)
    convert_channels: bool = False  # grey images in a colour table (or the reverse) are converted (True) or quarantined
    max_chars: int = 2000  # texts are cut to this many characters after normalising
    max_record_chars: int = 1_000_000  # a raw text longer than this is quarantined (oversize_record), not cut
    bounds: tuple[tuple[str, float, float], ...] = ()  # (feature, low, high): values outside are quarantined
    # Entities the model never saw: quarantined, or scored ("own_baseline", "training_baseline").
    unseen_entities: str = "quarantine"
    events: EventSettings = field(default_factory=EventSettings)  # how window scores become anomaly events
    format: str = "parquet"  # the raw input: dt=D folders of Parquet files, or a Delta table partitioned by dt

    @property
    def lookback_steps(self) -> int:
        """Grid steps before a window's end that the window, and the gap filling at its start, can need."""
        return self.window.length - 1 + self.gaps.longest_fill + 1

    def with_events(self, **changes: Any) -> "TableConfig":
        """The same table with some `events:` settings replaced (sweeps), checked as the yml's are."""
        return dataclasses.replace(self, events=replace_events(self.events, changes, f"table {self.name}"))

    def signature(self) -> dict[str, Any]:
        """What one model input of this table is (compared with a model's recorded signature before scoring)."""
        return input_signature(
            self.kind, self.sample_shape, self.input_features, self.window.length, self.window.stride, self.step_seconds
        )

    @property
    def input_features(self) -> tuple[str, ...]:
        """The channels of one window step the model sees: the features, and the imputation mask if configured."""
        return (*self.features, MASK_FEATURE) if self.gaps.mask else self.features

    @property
    def n_inputs(self) -> int:
        """Length of one flattened window (time-major: step by step, all input features per step)."""
        return self.window.length * len(self.input_features)


def parse_setting(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` of a sweep's `--set` -> (KEY, the value read as YAML: 60, 0.1, [64, 8], peak); ValueError else."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{text!r}: expected KEY=VALUE, for example epochs=60")
    return key.strip(), yaml.safe_load(value)


@dataclass(frozen=True)
class DetectorSpec:
    """A named detector: its family, the family's parameters and how its scores are calibrated."""

    name: str
    family: str
    params: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # the yml it was read from (named in errors)
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fraction = self.training.get("validation_fraction", 0.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            where = self.source or f"detector {self.name}"
            raise ConfigError(f"{where}: training: validation_fraction: expected a share in [0, 1), got {fraction!r}")

    @property
    def validation_fraction(self) -> float:
        """The share of the training part (before the calibration hold-out) that early stopping watches; 0: the
        hold-out itself, as before this setting existed."""
        return float(self.training.get("validation_fraction", 0.0))

    @property
    def holdout_fraction(self) -> float:
        """The share of the training range held out for calibration (the latest part of a time series)."""
        return float(self.calibration.get("holdout_fraction", 0.2))

    @property
    def calibration_options(self) -> dict[str, Any]:
        """fit_calibration's keyword arguments (the calibration block without holdout_fraction)."""
        return {k: v for k, v in self.calibration.items() if k != "holdout_fraction"}

    def with_params(self, **params: Any) -> "DetectorSpec":
        """The same detector with some parameters replaced (quick checks cut `epochs`)."""
        return dataclasses.replace(self, params={**self.params, **params})

    def with_setting(self, key: str, value: Any) -> "DetectorSpec":
        """The same detector with one setting replaced: `NAME` or `params.NAME` (a family parameter, checked when
        the family is built), `training.NAME` or `calibration.NAME` (checked here); sweeps set them by name."""
        section, _, name = key.rpartition(".")
        if section in ("", "params"):
            return self.with_params(**{name: value})
        allowed = {"training": TRAINING_KEYS, "calibration": CALIBRATION_KEYS}.get(section)
        if allowed is None or name not in allowed:
            raise ConfigError(
                f"detector {self.name}: setting {key!r}: expected NAME, params.NAME, training.NAME "
                f"({', '.join(TRAINING_KEYS)}) or calibration.NAME ({', '.join(CALIBRATION_KEYS)})"
            )
        return dataclasses.replace(self, **{section: {**getattr(self, section), name: value}})


# The keys a table entry may hold, per level; anything else is a ConfigError naming the file and the key.
TABLE_KEYS = (
    "kind",
    "path",
    "format",
    "entity",
    "time",
    "features",
    "step",
    "gaps",
    "window",
    "detectors",
    "max_quarantine_share",
    "bounds",
    "unseen_entities",
    "events",
    "image",
    "text",
)
SECTION_KEYS = {
    "window": ("length", "stride"),
    "gaps": ("fill_limit", "impute", "aggregate", "mask", "features"),
    "image": ("column", "path_column", "height", "width", "channels", "resize", "convert_channels"),
    "text": ("column", "max_chars", "max_record_chars"),
    "events": tuple(f.name for f in dataclasses.fields(EventSettings)),
}
DETECTOR_KEYS = ("family", "params", "calibration", "training")
CALIBRATION_KEYS = ("holdout_fraction", *CALIBRATION_SETTINGS)
TRAINING_KEYS = ("validation_fraction",)


def check_keys(where: str, entry: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """`entry` when it is a mapping whose keys are all in `allowed`; else ConfigError naming `where` and the key."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(entry).__name__}")
    unknown = [str(k) for k in entry if k not in allowed]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(allowed)})"
        )
    return entry


def _require(entry: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise ConfigError(f"{where}: missing key '{key}'")
    return entry[key]


def parse_table(name: str, entry: Mapping[str, Any], source: str = "") -> TableConfig:
    """Validate one catalog entry and freeze it (`source`: the file it came from, named in errors)."""
    check_name("table", name)
    where = f"{source}: table {name}" if source else f"table {name}"
    if "fill_limit" in entry:
        raise ConfigError(f"{where}: fill_limit moved into the gaps block: gaps: {{fill_limit: {entry['fill_limit']}}}")
    check_keys(where, entry, TABLE_KEYS)
    for section, allowed in SECTION_KEYS.items():
        if section in entry:
            check_keys(f"{where}: {section}", entry[section], allowed)
    kind = entry.get("kind", "timeseries")
    if kind not in INPUT_KINDS:
        raise ConfigError(f"{where}: kind '{kind}' is not one of {', '.join(INPUT_KINDS)}")
    if kind == "timeseries":
        features = tuple(_require(entry, "features", where))
        if not features:
            raise ConfigError(f"{where}: 'features' is empty")
        window = _require(entry, "window", where)
        spec = WindowSpec(int(window["length"]), int(window.get("stride", 1)))
        if spec.length < 2 or spec.stride < 1:
            raise ConfigError(f"{where}: window length must be >= 2 and stride >= 1, got {spec}")
    else:
        features, spec = tuple(entry.get("features", ())), WindowSpec(1)
    gaps = _gaps(entry, features, spec, where)
    # A window step holds the features and, with gaps: {mask: true}, the imputation mask.
    shape = (spec.length, len(features) + gaps.mask) if kind == "timeseries" else _sample_shape(kind, entry, where)
    media = dict(entry.get(kind, {})) if kind != "timeseries" else {}
    if kind == "image" and not (media.get("column") or media.get("path_column")):
        media["column"] = "image"
    step = pd.Timedelta(str(entry.get("step", "5min")))
    if step.total_seconds() <= 0 or 86400 % int(step.total_seconds()):
        raise ConfigError(f"{where}: step {step} must divide one day")
    table = TableConfig(
        name=name,
        kind=kind,
        path=entry.get("path", f"raw/{name}"),
        entity=entry.get("entity", {"timeseries": "entity_id", "image": "image_id", "text": "message_id"}[kind]),
        time=entry.get("time", "ts" if kind == "timeseries" else ""),
        features=features,
        step_seconds=int(step.total_seconds()),
        gaps=gaps,
        window=spec,
        detectors=tuple(entry.get("detectors", (DEFAULT_DETECTORS[kind],))),
        max_quarantine_share=float(entry.get("max_quarantine_share", 0.2)),
        sample_shape=shape,
        value_column=str(media.get("column", "text" if kind == "text" else "")),
        path_column=str(media.get("path_column", "")),
        resize=bool(media.get("resize", False)),
        convert_channels=bool(media.get("convert_channels", False)),
        max_chars=int(media.get("max_chars", 2000)),
        max_record_chars=int(media.get("max_record_chars", 1_000_000)),
        bounds=_bounds(entry, features, where),
        events=_events(entry, where),
        unseen_entities=_unseen_entities(entry, where),
        format=_raw_format(entry, where),
    )
    _check_names(table, where)
    return table


def _check_names(table: TableConfig, where: str) -> None:
    """Every name of the table that reaches a path or a statement is a plain name."""
    check_lake_path(where, table.path)
    for detector in table.detectors:
        check_name(f"{where}: detector", detector)
    for column in (table.entity, table.time, *table.features, table.value_column, table.path_column):
        if column:
            check_column(where, column)


def _bounds(entry: Mapping[str, Any], features: tuple[str, ...], where: str) -> tuple[tuple[str, float, float], ...]:
    """`bounds: {feature: [low, high]}`: the physically possible range of a feature (a null end is open)."""
    bounds = []
    for feature, pair in dict(entry.get("bounds", {})).items():
        if feature not in features:
            raise ConfigError(f"{where}: bounds name {feature!r}, which is not one of the features {list(features)}")
        low, high = (list(pair) + [None, None])[:2]
        low, high = float("-inf") if low is None else float(low), float("inf") if high is None else float(high)
        if not low < high:
            raise ConfigError(f"{where}: bounds of {feature} must be [low, high] with low < high, got {pair}")
        bounds.append((feature, low, high))
    return tuple(bounds)


def _gaps(entry: Mapping[str, Any], features: tuple[str, ...], window: WindowSpec, where: str) -> GapPolicy:
    """The table's `gaps:` block: fill_limit (steps; default the window length, so only a gap longer than a window
    quarantines), impute (linear or previous), aggregate, and per-feature overrides (`features: {name: {fill_limit,
    impute}}`, for a slow metric written only on change)."""
    block = entry.get("gaps") or {}
    default = _gap_fill(block, GapFill(window.length), f"{where}: gaps")
    overrides = check_keys(f"{where}: gaps: features", block.get("features") or {}, features)
    fill = tuple(
        _gap_fill(
            check_keys(f"{where}: gaps: features: {f}", overrides[f], ("fill_limit", "impute")),
            default,
            f"{where}: gaps: features: {f}",
        )
        if f in overrides
        else default
        for f in features
    )
    aggregate = str(block.get("aggregate", "mean"))
    if aggregate not in AGGREGATIONS:
        raise ConfigError(f"{where}: gaps: aggregate '{aggregate}' is not one of {', '.join(AGGREGATIONS)}")
    mask = block.get("mask", False)
    if not isinstance(mask, bool):
        raise ConfigError(f"{where}: gaps: mask: expected true or false, got {mask!r}")
    if mask and MASK_FEATURE in features:
        raise ConfigError(f"{where}: gaps: mask adds a channel named {MASK_FEATURE!r}, which is already a feature")
    return GapPolicy(fill, aggregate, mask)


def _gap_fill(block: Mapping[str, Any], default: GapFill, where: str) -> GapFill:
    limit, method = block.get("fill_limit", default.limit), str(block.get("impute", default.method))
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"{where}: fill_limit: expected a number of steps >= 0, got {limit!r}")
    if method not in IMPUTATIONS:
        raise ConfigError(f"{where}: impute '{method}' is not one of {', '.join(IMPUTATIONS)}")
    return GapFill(limit, method)


def _events(entry: Mapping[str, Any], where: str) -> EventSettings:
    """The table's `events:` block (every key optional), validated."""
    try:
        return EventSettings(**dict(entry.get("events") or {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: events: {error}") from None


UNSEEN_ENTITIES = ("quarantine", "own_baseline", "training_baseline")
RAW_FORMATS = ("parquet", "delta")


def _raw_format(entry: Mapping[str, Any], where: str) -> str:
    """How the raw input is stored: a folder of dt=D partitions of Parquet files, or a Delta table by dt."""
    value = str(entry.get("format", "parquet"))
    if value not in RAW_FORMATS:
        raise ConfigError(f"{where}: format '{value}' is not one of {', '.join(RAW_FORMATS)}")
    return value


def _unseen_entities(entry: Mapping[str, Any], where: str) -> str:
    """How the score job treats an entity without a baseline from training (a new host, a new run)."""
    value = str(entry.get("unseen_entities", "quarantine"))
    if value not in UNSEEN_ENTITIES:
        raise ConfigError(f"{where}: unseen_entities '{value}' is not one of {', '.join(UNSEEN_ENTITIES)}")
    return value


def _sample_shape(kind: str, entry: Mapping[str, Any], where: str) -> tuple[int, ...]:
    """(height, width, channels) of an image table; () for a text table (one string per sample)."""
    if kind == "text":
        return ()
    image = _require(entry, "image", where)
    shape = tuple(int(image.get(k, 1 if k == "channels" else 0)) for k in ("height", "width", "channels"))
    if min(shape) < 1 or shape[2] not in (1, 3):
        raise ConfigError(f"{where}: image needs height and width >= 1 and channels 1 or 3, got {dict(image)}")
    return shape


def load_tables(path: str | Path) -> dict[str, TableConfig]:
    """Read the table catalog."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"table catalog {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"table catalog {path}: expected a mapping of table name -> settings")
    return {name: parse_table(name, entry, str(path)) for name, entry in raw.items()}


def load_table(path: str | Path, name: str) -> TableConfig:
    """One table of the catalog, or an error that lists the known ones."""
    check_name("table", name)
    tables = load_tables(path)
    if name not in tables:
        raise ConfigError(f"table {name} is not in {path} (known: {', '.join(sorted(tables)) or 'none'})")
    return tables[name]


def load_detector(name: str, conf_dir: Path = CONF_DIR) -> DetectorSpec:
    """Read conf/detectors/<name>.yml."""
    check_name("detector", name)
    path = conf_dir / "detectors" / f"{name}.yml"
    if not path.exists():
        known = sorted(p.stem for p in (conf_dir / "detectors").glob("*.yml"))
        raise ConfigError(f"detector {name}: no {path} (known: {', '.join(known)})")
    raw = check_keys(str(path), yaml.safe_load(path.read_text()) or {}, DETECTOR_KEYS)
    params = raw.get("params") or {}  # the names are the family's: build_detector checks them against its config
    if not isinstance(params, Mapping):
        raise ConfigError(f"{path}: params: expected a mapping of settings, got {type(params).__name__}")
    calibration = check_keys(f"{path}: calibration", raw.get("calibration") or {}, CALIBRATION_KEYS)
    training = check_keys(f"{path}: training", raw.get("training") or {}, TRAINING_KEYS)
    return DetectorSpec(
        name=name,
        family=raw.get("family", name),
        params=dict(params),
        calibration=dict(calibration),
        source=str(path),
        training=dict(training),
    )


def configured_detectors(conf_dir: Path = CONF_DIR) -> list[DetectorSpec]:
    """Every detector of conf/detectors/*.yml, by name."""
    return [load_detector(p.stem, conf_dir) for p in sorted((conf_dir / "detectors").glob("*.yml"))]
