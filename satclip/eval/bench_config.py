"""The YAML configuration of ``satclip bench``: encoders, tasks, protocols, label budgets, probes, seeds.

Encoders are written as text (or as a mapping with the same fields, ``kind`` first, plus ``name``):

- ``lonlat``, ``sincos`` (the wrap encoding), ``sh:L`` (untrained spherical harmonics of degree L);
- ``geoclip``: GeoCLIP's location encoder, skipped with a note when the package is not installed;
- ``NAME=file.npy``: precomputed (rows, D) embeddings in the table's row order; ``{task}`` in the
  path is replaced by the task's name (one file per task);
- ``untrained:SOURCE``: the tower of SOURCE re-initialised (same architecture, seed 0);
- anything else: a checkpoint, export or released name, as ``satclip probe --checkpoint`` takes.

Paths are relative to the folder the command runs in. ``configs/bench/default.yaml`` is an example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bench_probes import applies
from .probe import PROBE_KINDS
from .splits import PROTOCOL_KINDS, Protocol

ENCODER_KINDS = ("checkpoint", "untrained", "geoclip", "features", "lonlat", "sincos", "sh")
TASK_KINDS = ("regression", "classification")


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder to compare: ``kind`` (``ENCODER_KINDS``), its table ``name``, and its ``source``
    (checkpoint / export / released name, or the .npy path of ``features``) or SH ``degree``."""

    kind: str
    name: str
    source: str | None = None
    degree: int = 10


@dataclass(frozen=True)
class TaskSpec:
    """A table of (lon, lat, target): ``task`` is "regression" or "classification"; ``protocols``
    restricts it to those protocol names (None: every protocol)."""

    name: str
    path: str
    target: str
    task: str
    lon_col: str | None = None
    lat_col: str | None = None
    time_col: str | None = None
    protocols: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BenchConfig:
    """A whole suite; ``budgets`` holds training-set sizes, None for all the training rows."""

    encoders: list[EncoderSpec]
    tasks: list[TaskSpec]
    protocols: list[Protocol]
    budgets: list[int | None] = field(default_factory=lambda: [None])
    probes: list[str] = field(default_factory=lambda: ["ridge"])
    seeds: int = 3
    out: str = "bench-out"
    results: str = "results.csv"
    plot_protocol: str | None = None
    plot_probe: str | None = None

    def protocols_of(self, task: TaskSpec) -> list[Protocol]:
        return [p for p in self.protocols if task.protocols is None or p.name in task.protocols]

    def probes_of(self, task: TaskSpec) -> list[str]:
        return [p for p in self.probes if applies(p, task.task)]


def parse_encoder(entry: Any, where: str) -> EncoderSpec:
    """An encoder entry (text or mapping, see the module docstring) as an ``EncoderSpec``."""
    if isinstance(entry, dict):
        fields = dict(entry)
        kind = fields.pop("kind", None)
        if kind not in ENCODER_KINDS:
            raise ValueError(f"{where}: kind must be one of {ENCODER_KINDS}, got {kind!r}")
        unknown = sorted(set(fields) - {"name", "source", "degree"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; an encoder has kind, name, source, degree")
        if kind in ("checkpoint", "untrained", "features") and not fields.get("source"):
            raise ValueError(f"{where}: a {kind} encoder needs a source")
        spec = _from_text(_text_of(kind, fields), where)
        return EncoderSpec(spec.kind, str(fields.get("name") or spec.name), spec.source, spec.degree)
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError(f"{where}: expected an encoder as text or a mapping, got {entry!r}")
    return _from_text(entry.strip(), where)


def _text_of(kind: str, fields: dict[str, Any]) -> str:
    if kind == "sh":
        return f"sh:{fields.get('degree', 10)}"
    if kind == "untrained":
        return f"untrained:{fields['source']}"
    if kind == "features":
        return f"{fields.get('name') or Path(str(fields['source'])).stem}={fields['source']}"
    return str(fields.get("source") or kind)


def _from_text(text: str, where: str) -> EncoderSpec:
    if text == "lonlat":
        return EncoderSpec("lonlat", "lon/lat")
    if text == "sincos":
        return EncoderSpec("sincos", "sin/cos")
    if text == "geoclip":
        return EncoderSpec("geoclip", "GeoCLIP")
    if text.startswith("sh:"):
        try:
            degree = int(text[3:])
        except ValueError:
            degree = 0
        if degree < 1:
            raise ValueError(f"{where}: {text!r}: expected sh:L with a degree L >= 1")
        return EncoderSpec("sh", f"SH L={degree}", degree=degree)
    if text.startswith("untrained:"):
        source = text[len("untrained:") :]
        return EncoderSpec("untrained", f"{_source_name(source)} (untrained)", source)
    name, sep, path = text.partition("=")
    if sep:
        if not name or not path:
            raise ValueError(f"{where}: {text!r}: expected NAME=file.npy")
        return EncoderSpec("features", name, path)
    return EncoderSpec("checkpoint", _source_name(text), text)


def _source_name(source: str) -> str:
    return Path(source).name if Path(source).exists() else source


def _protocol(entry: Any, where: str) -> Protocol:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping with name and kind, got {entry!r}")
    known = set(Protocol.__dataclass_fields__)
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; a protocol has {sorted(known)}")
    kind = entry.get("kind")
    if kind not in PROTOCOL_KINDS:
        raise ValueError(f"{where}: kind must be one of {PROTOCOL_KINDS}, got {kind!r}")
    protocol = Protocol(**{"name": kind, **entry})
    if protocol.folds < 2:
        raise ValueError(f"{where}: folds must be >= 2, got {protocol.folds}")
    if protocol.block_deg <= 0:
        raise ValueError(f"{where}: block_deg must be > 0 degrees, got {protocol.block_deg}")
    if kind == "buffered" and (protocol.buffer_km <= 0 or protocol.base not in ("random", "spatial")):
        raise ValueError(f"{where}: a buffered protocol needs buffer_km > 0 and base random or spatial, got {protocol.buffer_km} / {protocol.base!r}")
    if kind == "holdout" and not protocol.column:
        raise ValueError(f"{where}: a holdout protocol needs the column that marks the test rows")
    return protocol


def _task(entry: Any, where: str) -> TaskSpec:
    if not isinstance(entry, dict) or not {"path", "target"} <= set(entry):
        raise ValueError(f"{where}: expected a mapping with at least path and target, got {entry!r}")
    known = set(TaskSpec.__dataclass_fields__)
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; a task has {sorted(known)}")
    fields = dict(entry)
    fields.setdefault("name", Path(str(entry["path"])).stem)
    fields.setdefault("task", "regression")
    if fields["task"] not in TASK_KINDS:
        raise ValueError(f"{where}: task must be one of {TASK_KINDS}, got {fields['task']!r}")
    if fields.get("protocols") is not None:
        fields["protocols"] = tuple(fields["protocols"])
    return TaskSpec(**fields)


def _budget(value: Any, where: str) -> int | None:
    if value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(f"{where}: a label budget is a number of training rows >= 2 or 'all', got {value!r}")
    return value


def _entries(raw: dict[str, Any], key: str, *, where: str) -> list[Any]:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: {key!r} must be a non-empty list")
    return value


def _unique(names: list[str], what: str, *, where: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{where}: {what} names must differ; repeated: {repeated}")


def parse_config(raw: Any, where: str = "config") -> BenchConfig:
    """A ``BenchConfig`` from the mapping of a YAML file; every bad entry is an error naming it."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of encoders, tasks, protocols, ..., got {type(raw).__name__}")
    known = {"encoders", "tasks", "protocols", "budgets", "probes", "seeds", "out", "results", "plot"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    encoders = [parse_encoder(e, f"{where}: encoders[{i}]") for i, e in enumerate(_entries(raw, "encoders", where=where))]
    tasks = [_task(t, f"{where}: tasks[{i}]") for i, t in enumerate(_entries(raw, "tasks", where=where))]
    protocols = [_protocol(p, f"{where}: protocols[{i}]") for i, p in enumerate(_entries(raw, "protocols", where=where))]
    _unique([e.name for e in encoders], "encoder", where=where)
    _unique([t.name for t in tasks], "task", where=where)
    _unique([p.name for p in protocols], "protocol", where=where)
    for task in tasks:
        missing = sorted(set(task.protocols or ()) - {p.name for p in protocols})
        if missing:
            raise ValueError(f"{where}: task {task.name!r} names unknown protocol(s) {missing}")
    budgets = [_budget(b, f"{where}: budgets") for b in raw.get("budgets", ["all"])]
    probes = list(raw.get("probes", ["ridge"]))
    bad = [p for p in probes if p not in PROBE_KINDS]
    if bad or not probes:
        raise ValueError(f"{where}: probes must be a non-empty list of {PROBE_KINDS}, got {probes!r}")
    seeds = raw.get("seeds", 3)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"{where}: seeds must be a number >= 1, got {seeds!r}")
    results = str(raw.get("results", "results.csv"))
    if Path(results).suffix not in (".csv", ".parquet"):
        raise ValueError(f"{where}: results must be a .csv or .parquet file name, got {results!r}")
    plot = raw.get("plot") or {}
    if not isinstance(plot, dict) or set(plot) - {"protocol", "probe"}:
        raise ValueError(f"{where}: plot takes protocol and probe, got {plot!r}")
    plot_protocol, plot_probe = plot.get("protocol", protocols[0].name), plot.get("probe", probes[0])
    if plot_protocol not in {p.name for p in protocols} or plot_probe not in probes:
        raise ValueError(f"{where}: plot names protocol {plot_protocol!r} / probe {plot_probe!r}, not among the configured ones")
    return BenchConfig(encoders, tasks, protocols, budgets, probes, seeds, str(raw.get("out", "bench-out")), results, plot_protocol, plot_probe)


def read_config(path: str | Path) -> BenchConfig:
    """Read and check a ``satclip bench`` YAML file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {str(path)!r}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"config {path}: not valid YAML: {err}") from None
    return parse_config(raw, f"config {path}")


__all__ = ["ENCODER_KINDS", "BenchConfig", "EncoderSpec", "TaskSpec", "parse_config", "parse_encoder", "read_config"]
