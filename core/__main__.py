"""Command line: `python -m core COMMAND --help`.

train, evaluate, predict, runs and activate work from run folders and never need the app's
database, so they run while the app is open.
"""

import argparse
import contextlib
import csv
import json
import sys

from core import config
from core.train_config import TrainConfig

DEFAULTS = TrainConfig(data_dir="")

PREDICT_COLUMNS = ("file", "probability", "label", "threshold", "model", "error")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="image folder, or benign/ + malignant/ root")
    parser.add_argument("--csv", help="ISIC 2020-style ground-truth CSV (image_name + target)")
    parser.add_argument(
        "--site",
        action="append",
        dest="sites",
        help="anatomical site to keep, e.g. 'upper extremity' (repeatable; default all)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and save a run folder")
    add_data_arguments(train)
    train.add_argument("--backbone", default=config.DEFAULT_BACKBONE)
    train.add_argument("--image-size", type=int, default=config.DEFAULT_IMAGE_SIZE)
    train.add_argument(
        "--epochs", type=int, default=DEFAULTS.head_epochs, help="head epochs (frozen backbone)"
    )
    train.add_argument("--fine-tune-epochs", type=int, default=DEFAULTS.fine_tune_epochs)
    train.add_argument("--fine-tune-layers", type=int, default=DEFAULTS.fine_tune_layers)
    train.add_argument("--weights", default="imagenet", help="imagenet, none or a weights file")
    train.add_argument("--seed", type=int, default=DEFAULTS.seed)
    train.add_argument(
        "--threshold-rule", choices=("sensitivity", "youden"), default="sensitivity"
    )
    train.add_argument("--no-tta", action="store_true", help="no flip test-time augmentation")
    train.add_argument("--strategy", choices=("default", "mirrored"), default="default")
    train.add_argument("--activate", action="store_true", help="make the new run active")

    evaluate = commands.add_parser("evaluate", help="metrics of a run on a labelled dataset")
    add_data_arguments(evaluate)
    evaluate.add_argument("--model", help="run id or path (default: the active run)")
    evaluate.add_argument("--json", help="write the full metrics to this JSON file")
    add_tta_arguments(evaluate)

    predict = commands.add_parser("predict", help="predict images; CSV to stdout or --out")
    predict.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--model", help="run id or path (default: the active run)")
    predict.add_argument("--out", help="CSV file to write (default: standard output)")
    add_tta_arguments(predict)

    commands.add_parser("runs", help="list trained runs")
    activate = commands.add_parser("activate", help="make a run the active model")
    activate.add_argument("run_id")
    worker = commands.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("job_folder")
    return parser


def add_tta_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tta", dest="tta", action="store_true", default=None)
    group.add_argument("--no-tta", dest="tta", action="store_false")


def command_train(arguments) -> int:
    from core.training import train

    train_config = TrainConfig(
        data_dir=arguments.data,
        csv=arguments.csv,
        sites=tuple(arguments.sites or ("all",)),
        backbone=arguments.backbone,
        image_size=arguments.image_size,
        weights=arguments.weights,
        head_epochs=arguments.epochs,
        fine_tune_epochs=arguments.fine_tune_epochs,
        fine_tune_layers=arguments.fine_tune_layers,
        threshold_rule=arguments.threshold_rule,
        tta=not arguments.no_tta,
        seed=arguments.seed,
        strategy=arguments.strategy,
    )
    result = train(
        train_config, report=lambda p: print(p.message, flush=True), activate=arguments.activate
    )
    print(f"run {result.run_id} saved in {result.folder}")
    print(format_metrics(result.test_metrics, "test split"))
    return 0


def format_metrics(metrics: dict, title: str) -> str:
    def interval(name: str) -> str:
        low, high = (metrics.get("intervals") or {}).get(name) or (None, None)
        return f" (95% CI {low:.3f}-{high:.3f})" if low is not None else ""

    def value(name: str) -> str:
        number = metrics.get(name)
        return "n/a" if number is None else f"{number:.3f}"

    lines = [f"{title}: n={metrics['n']} ({metrics['n_positive']} malignant)"]
    for name in ("roc_auc", "sensitivity", "specificity"):
        lines.append(f"  {name}: {value(name)}{interval(name)}")
    lines.append(f"  threshold: {metrics['threshold']:.4f}")
    return "\n".join(lines)


def command_evaluate(arguments) -> int:
    from core.evaluation import evaluate_dataset

    metrics = evaluate_dataset(
        arguments.data,
        arguments.csv,
        tuple(arguments.sites or ("all",)),
        arguments.model,
        arguments.tta,
    )
    print(format_metrics(metrics, f"model {metrics['model']}"))
    if metrics["unreadable"]:
        print(f"skipped {len(metrics['unreadable'])} unreadable images", file=sys.stderr)
    if arguments.json:
        with open(arguments.json, "w") as handle:
            json.dump(metrics, handle, indent=2, allow_nan=False)
    return 0


def command_predict(arguments) -> int:
    from core.inference import Predictor, find_images
    from core.runs import resolve_run

    predictor = Predictor(resolve_run(arguments.model))
    files = find_images(arguments.paths)
    with contextlib.ExitStack() as stack:
        handle = (
            stack.enter_context(open(arguments.out, "w", newline=""))
            if arguments.out
            else sys.stdout
        )
        writer = csv.writer(handle)
        writer.writerow(PREDICT_COLUMNS)
        for prediction in predictor.predict_many(((f, f) for f in files), tta=arguments.tta):
            probability = "" if prediction.probability is None else f"{prediction.probability:.6f}"
            writer.writerow(
                [
                    prediction.file,
                    probability,
                    prediction.label or "",
                    f"{prediction.threshold:.6f}",
                    prediction.model,
                    prediction.error,
                ]
            )
    return 0


def command_runs(arguments) -> int:
    from core.runs import active_run_id, list_runs

    found, problems = list_runs()
    active = active_run_id()
    for run in found:
        test = run.card.get("metrics", {}).get("test", {})
        auc = test.get("roc_auc")
        marker = "*" if run.run_id == active else " "
        auc_text = "n/a" if auc is None else f"{auc:.3f}"
        print(f"{marker} {run.run_id}  {run.card.get('backbone')}  test AUC {auc_text}")
    for problem in problems:
        print(f"! {problem}", file=sys.stderr)
    if not found:
        print("no runs yet: python -m core train --data DIR", file=sys.stderr)
    return 0


def command_activate(arguments) -> int:
    from core.runs import set_active

    run = set_active(arguments.run_id)
    print(f"active run: {run.run_id}")
    return 0


def command_worker(arguments) -> int:
    from core.worker import run_job

    return run_job(arguments.job_folder)


COMMANDS = {
    "train": command_train,
    "evaluate": command_evaluate,
    "predict": command_predict,
    "runs": command_runs,
    "activate": command_activate,
    "worker": command_worker,
}


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return COMMANDS[arguments.command](arguments)
    except ValueError as error:
        # Bad data, a missing model or a bad option: a clear message, not a traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
