"""Figures, goals, the machine description and the printed table."""

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.storage.card import library_versions

# The optional runtimes of `python -m bench --only runtimes` are listed when installed.
LIBRARIES = (
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "numpy",
    "pillow",
    "duckdb",
    "streamlit",
    "onnxruntime",
    "tf2onnx",
    "onnx",
    "ai-edge-litert",
)


@dataclass(frozen=True)
class Goal:
    """A target on the ratio, on the value itself, or on |value - baseline|."""

    measure: str
    comparison: str
    limit: float

    def __post_init__(self) -> None:
        if self.measure not in ("ratio", "value", "difference"):
            raise ValueError(f"goal measure must be ratio, value or difference: {self.measure!r}")
        if self.comparison not in (">=", "<=", "<"):
            raise ValueError(f"goal comparison must be >=, <= or <: {self.comparison!r}")

    def met(self, value: float, baseline: float, ratio: float | None) -> bool:
        measured = {"ratio": ratio, "value": value, "difference": abs(value - baseline)}
        number = measured[self.measure]
        if number is None or math.isnan(number):
            return False
        if self.comparison == ">=":
            return number >= self.limit
        if self.comparison == "<=":
            return number <= self.limit
        return number < self.limit

    def describe(self, unit: str) -> str:
        if self.measure == "ratio":
            return f"ratio {self.comparison} {self.limit:g}x"
        if self.measure == "difference":
            return f"|diff| {self.comparison} {self.limit:g}"
        return f"{self.comparison} {self.limit:g} {unit}".strip()


@dataclass(frozen=True)
class Figure:
    """One measured number next to its baseline from the same run.

    `speedup` says which way the ratio reads: baseline / value for times where less is better
    (so 5x means five times faster), value / baseline otherwise.
    """

    group: str
    name: str
    value: float
    baseline: float
    unit: str
    baseline_name: str
    speedup: bool = False
    goal: Goal | None = None
    details: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        numerator, denominator = (
            (self.baseline, self.value) if self.speedup else (self.value, self.baseline)
        )
        return numerator / denominator if denominator else None

    @property
    def passed(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self.value, self.baseline, self.ratio)

    def to_dict(self) -> dict:
        payload = asdict(self)
        payload["goal"] = self.goal.describe(self.unit) if self.goal else None
        payload["ratio"] = self.ratio
        payload["passed"] = self.passed
        return payload


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    """What the numbers were measured on; versions come from package metadata, no imports."""
    versions = library_versions(LIBRARIES)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": memory_total_gib(),
        "system": platform.platform(),
        "versions": versions,
    }


def format_number(number: float | None, unit: str = "") -> str:
    if number is None or (isinstance(number, float) and math.isnan(number)):
        return "-"
    text = f"{number:,.0f}" if abs(number) >= 1000 else f"{number:.3g}"
    return f"{text} {unit}".strip()


def table(figures: list[Figure]) -> str:
    """A plain-text table: figure, value, baseline, ratio, goal, pass."""
    header = ("figure", "value", "baseline", "ratio", "goal", "pass")
    rows = [
        (
            f"{figure.group}: {figure.name}",
            format_number(figure.value, figure.unit),
            f"{format_number(figure.baseline, figure.unit)} ({figure.baseline_name})",
            "-" if figure.ratio is None else f"{figure.ratio:.3g}x",
            figure.goal.describe(figure.unit) if figure.goal else "-",
            {True: "PASS", False: "FAIL", None: "-"}[figure.passed],
        )
        for figure in figures
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]

    def line(cells) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def machine_text(description: dict) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in description["versions"].items())
    text = (
        f"machine: {description['cpu']}, {description['cores']} cores "
        f"({description['usable_cores']} usable), {description['memory_gib']} GiB\n"
        f"versions: {versions}"
    )
    load = description.get("load_average_1min")
    if load:
        text += f"\nload average (1 min): {load['before']:.2f} before, {load['after']:.2f} after"
    return text


def finite(payload):
    """The payload with NaN and infinities as None, which JSON can carry."""
    if isinstance(payload, dict):
        return {key: finite(value) for key, value in payload.items()}
    if isinstance(payload, list | tuple):
        return [finite(value) for value in payload]
    if isinstance(payload, float) and not math.isfinite(payload):
        return None
    return payload


def write_json(path: Path, payload: dict) -> None:
    text = json.dumps(finite(payload), indent=2, allow_nan=False, default=str)
    Path(path).write_text(text + "\n")
