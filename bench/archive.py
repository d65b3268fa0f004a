"""Prediction at archive scale: `python -m core predict` over many files, and --resume.

Each count runs the whole command in a fresh process, so its peak resident memory (the
kernel's maximum RSS of that process) is the figure: flat means the same at 20,000 files as at
2,000, and the same again when --resume skips 98,000 finished files of 100,000.
"""

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Settings, image_files
from bench.report import Figure, Goal
from core import config
from core.storage.prediction_csv import predict_columns

MEBIBYTE = 1024**2
# Files per subfolder, as archives are usually split; the walk crosses many folders.
FOLDER_SIZE = 1000
RATE = re.compile(r"([\d.]+) images/s")


def archive_folder(settings: Settings, count: int) -> Path:
    """`count` hard links to the real images, FOLDER_SIZE to a subfolder, under new names."""
    root = settings.work_dir / f"archive-{count}"
    if root.is_dir():
        return root
    sources = local_sources(settings)
    for index in range(count):
        folder = root / f"{index // FOLDER_SIZE:04d}"
        if index % FOLDER_SIZE == 0:
            folder.mkdir(parents=True)
        source = sources[index % len(sources)]
        os.link(source, folder / f"{index:06d}_{source.name}")
    return root


def local_sources(settings: Settings) -> list[Path]:
    """The real images copied once into the scratch folder, where they can be hard-linked."""
    folder = settings.work_dir / "archive-sources"
    if not folder.is_dir():
        sources = image_files(settings)[: settings.size(2000, 64)]
        if not sources:
            raise ValueError(f"no .jpg images in {settings.images_dir}")
        folder.mkdir(parents=True)
        for source in sources:
            (folder / source.name).write_bytes(source.read_bytes())
    return sorted(folder.iterdir())


def archive(settings: Settings) -> list[Figure]:
    """Fresh runs at two counts, then --resume over the largest archive with a few files left."""
    small, large = settings.size(2000, 64), settings.size(20000, 256)
    fresh = {
        count: run_predict(
            settings, archive_folder(settings, count), f"fresh-{count}.csv", "--no-tta"
        )
        for count in (small, large)
    }
    resumed = resume_run(settings, settings.size(100_000, 1024), left=small)
    return [
        Figure(
            group="archive",
            name=f"predict throughput at {large:,} files",
            value=fresh[large]["images_per_second"],
            baseline=fresh[small]["images_per_second"],
            unit="img/s",
            baseline_name=f"at {small:,} files",
            goal=Goal("ratio", ">=", 0.9),
            details={"runs": {str(count): run for count, run in fresh.items()}},
        ),
        Figure(
            group="archive",
            name=f"predict peak RSS at {large:,} files",
            value=fresh[large]["peak_rss_mib"],
            baseline=fresh[small]["peak_rss_mib"],
            unit="MiB",
            baseline_name=f"at {small:,} files",
            goal=Goal("ratio", "<=", 1.05),
        ),
        Figure(
            group="archive",
            name=f"--resume peak RSS, {resumed['files']:,} files, {small:,} left",
            value=resumed["peak_rss_mib"],
            baseline=fresh[small]["peak_rss_mib"],
            unit="MiB",
            baseline_name=f"{small:,} files, fresh",
            goal=Goal("ratio", "<=", 1.05),
            details=resumed,
        ),
    ]


def resume_run(settings: Settings, count: int, left: int) -> dict:
    """--resume over `count` files of which all but the last `left` are in the CSV already."""
    from core.serving.inference import find_images

    folder = archive_folder(settings, count)
    files = find_images([str(folder)])
    out = settings.work_dir / f"resumed-{count}.csv"
    finished_rows(out, files[:-left], settings.run)
    result = run_predict(settings, folder, out.name, "--no-tta", "--resume")
    if result["rows"] != count:
        raise RuntimeError(f"--resume left {result['rows']} rows, expected {count}")
    return {"files": count, "left": left, **result}


def run_predict(settings: Settings, folder: Path, out_name: str, *options: str) -> dict:
    """Wall time, peak RSS and the command's own images/s for one `python -m core predict`
    (with the card's TTA unless `options` say --no-tta)."""
    out = settings.work_dir / out_name
    command = [sys.executable, "-m", "core", "predict", str(folder)]
    command += ["--model", str(settings.run.folder), "--out", str(out), *options]
    log = out.with_suffix(".log")
    start = time.perf_counter()
    with open(log, "wb") as stderr_file:
        process = subprocess.Popen(
            command, cwd=config.REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr_file
        )
        # wait4, not wait: it also returns the child's peak resident memory (ru_maxrss, KiB).
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = log.read_text()
    if process.returncode != 0:
        raise RuntimeError(f"predict failed: {stderr[-2000:]}")
    return {
        "seconds": seconds,
        "peak_rss_mib": usage.ru_maxrss * 1024 / MEBIBYTE,
        # The command's own figure, from its first prediction: start-up is not in it.
        "images_per_second": float(RATE.findall(stderr)[-1]),
        "rows": csv_rows(out),
    }


def csv_rows(path: Path) -> int:
    with open(path, newline="") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def finished_rows(path: Path, files: list[str], run) -> None:
    """A CSV as an interrupted run over `files` would have left it, without the model's work."""
    columns = predict_columns(run)
    cells = [run.run_id if name == "model" else "" for name in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([file, *cells[1:]] for file in files)
