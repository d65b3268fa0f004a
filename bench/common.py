"""What every benchmark shares: settings, timers, memory readings and the inputs."""

import functools
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import config
from core.storage.runs import Run

DERMOSCOPY_DIR = config.REPO_ROOT.parent / "shared" / "data" / "dermoscopy"


class Skipped(Exception):
    """A benchmark that cannot run here; the message says why."""


@dataclass(frozen=True)
class Settings:
    """One benchmark session: quick (smoke-test sizes) or full, a run and a scratch folder."""

    quick: bool
    run: Run
    data_dir: Path
    work_dir: Path

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def metadata_csv(self) -> Path:
        return self.data_dir / "metadata.csv"


def default_data_dir(quick: bool) -> Path:
    """The real dermoscopy set for a full run when present, else the bundled sample."""
    if not quick and (DERMOSCOPY_DIR / "metadata.csv").is_file():
        return DERMOSCOPY_DIR
    return config.SAMPLE_DIR


def run_probe(module: str, *arguments: str, environment: dict | None = None) -> dict:
    """Run `python -m module arguments` in a fresh process; its last line of output is JSON."""
    output = subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=config.REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls of `action`."""
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def time_each(function: Callable, inputs: list) -> list[float]:
    """Wall time of `function(item)` for each item."""
    durations = []
    for item in inputs:
        start = time.perf_counter()
        function(item)
        durations.append(time.perf_counter() - start)
    return durations


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def status_bytes(field: str, pid: int | str = "self") -> int:
    """A memory figure (VmRSS, VmHWM) of a process from /proc (psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/{pid}/status")


def resident_bytes() -> int:
    """Resident set size of this process now."""
    return status_bytes("VmRSS")


def peak_resident_bytes() -> int:
    """The process's peak resident set size (VmHWM). Unlike getrusage's ru_maxrss it starts
    afresh at exec, so a probe does not report the peak of the benchmark that started it."""
    return status_bytes("VmHWM")


def image_files(settings: Settings) -> list[Path]:
    return sorted(settings.images_dir.glob("*.jpg"))


def image_folder(settings: Settings, count: int) -> Path:
    """A folder of `count` real images, repeating the available ones under new names."""
    folder = settings.work_dir / f"images-{count}"
    if folder.is_dir():
        return folder
    sources = image_files(settings)
    if not sources:
        raise ValueError(f"no .jpg images in {settings.images_dir}")
    folder.mkdir(parents=True)
    for index in range(count):
        source = sources[index % len(sources)]
        shutil.copyfile(source, folder / f"{index:05d}_{source.name}")
    return folder


def image_bytes(settings: Settings, count: int) -> list[tuple[str, bytes]]:
    return [
        (path.name, path.read_bytes()) for path in sorted(image_folder(settings, count).iterdir())
    ]


def predictor_for(run: Run):
    """One loaded, warmed-up Predictor per run, shared by the benchmarks of a session."""
    return _predictor(run.folder)


@functools.cache
def _predictor(folder: Path):
    from core.serving.inference import Predictor
    from core.storage.runs import load_run

    predictor = Predictor(load_run(folder))
    predictor.warm_up()
    return predictor
