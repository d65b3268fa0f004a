"""Speed benchmarks of prediction, training, the app and the history database.

    python -m bench [--quick] [--only NAME ...] [--json FILE]

Every figure is printed next to a baseline measured in the same run, with the ratio, the goal
and whether it was met. --quick uses tiny sizes and the bundled sample (a smoke test, not a
measurement).
"""

import argparse
import importlib
import os
import sys
import tempfile
import time
import traceback
import warnings
from datetime import UTC, datetime
from pathlib import Path

# TensorFlow's start-up chatter would bury the table; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras warns that fit ignores shuffle=True for a tf.data input, which is shuffled already.
warnings.filterwarnings("ignore", message=".*shuffle=True.*was passed")

from bench.common import Settings, Skipped, default_data_dir
from bench.report import Figure, machine, machine_text, table, write_json
from core import config

# Name -> (module, function); modules are imported only when their benchmark runs.
BENCHMARKS = {
    "single": ("bench.inference", "single_image"),
    "many": ("bench.inference", "many_images"),
    "cli": ("bench.inference", "command_line"),
    "memory": ("bench.inference", "memory"),
    "serving_memory": ("bench.serving_memory", "serving_memory"),
    "ensemble": ("bench.inference", "ensemble_tta"),
    "runtimes": ("bench.runtimes", "runtimes"),
    "archive": ("bench.archive", "archive"),
    "cache": ("bench.training", "training_cache"),
    "fine_tune": ("bench.training", "fine_tune_pipeline"),
    "stream_scale": ("bench.streaming", "stream_scale"),
    "app": ("bench.app", "app"),
    "app_memory": ("bench.app_memory", "app_memory"),
    "history": ("bench.history", "history"),
    "metrics": ("bench.history", "metrics"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these benchmarks: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--json", type=Path, help="write every figure and the machine here")
    parser.add_argument("--model", help="run id or folder (default: the active run)")
    parser.add_argument(
        "--tiny-model",
        action="store_true",
        help="benchmark a tiny untrained model built on the fly (tests)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="dataset root with images/ and metadata.csv (default: the real "
        "dermoscopy set for a full run if present, else the bundled sample)",
    )
    return parser


def resolve_model(arguments, work_dir: Path):
    if arguments.tiny_model:
        from bench.tiny import make_tiny_run

        return make_tiny_run(work_dir / "models")
    from core.storage.runs import resolve_run

    return resolve_run(arguments.model)


def portable(path: Path) -> str:
    """A path relative to the repository, so saved results carry no machine paths."""
    return os.path.relpath(Path(path).resolve(), config.REPO_ROOT)


def run_benchmarks(names: list[str], settings: Settings) -> dict:
    figures: list[Figure] = []
    outcome: dict = {"figures": figures, "skipped": {}, "errors": {}, "seconds": {}}
    for name in names:
        module_name, function_name = BENCHMARKS[name]
        print(f"running {name}...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            function = getattr(importlib.import_module(module_name), function_name)
            figures.extend(function(settings))
        except Skipped as reason:
            outcome["skipped"][name] = str(reason)
            print(f"{name}: skipped ({reason})", file=sys.stderr)
        except Exception as error:  # noqa: BLE001 - one broken benchmark must not hide the rest
            outcome["errors"][name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        outcome["seconds"][name] = round(time.perf_counter() - start, 1)
    return outcome


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    names = arguments.only or list(BENCHMARKS)
    data_dir = arguments.data or default_data_dir(arguments.quick)
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        work_dir = Path(scratch)
        run = resolve_model(arguments, work_dir)
        settings = Settings(arguments.quick, run, Path(data_dir), work_dir)
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        load_before = os.getloadavg()
        outcome = run_benchmarks(names, settings)
    description = machine()
    # Other programs on the machine skew every number; the load average shows if they ran.
    description["load_average_1min"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    print(machine_text(description))
    print(f"model: {run.run_id}; data: {portable(data_dir)}; quick: {arguments.quick}\n")
    print(table(outcome["figures"]))
    for name, reason in {**outcome["skipped"], **outcome["errors"]}.items():
        print(f"{name}: {reason}")
    if arguments.json:
        payload = {
            "started_at": started_at,
            "quick": arguments.quick,
            "model": run.run_id,
            "data": portable(data_dir),
            "machine": description,
            **outcome,
            "figures": [figure.to_dict() for figure in outcome["figures"]],
        }
        write_json(arguments.json, payload)
    return 1 if outcome["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
