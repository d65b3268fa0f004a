"""Command line: `python -m core COMMAND --help`.

train, evaluate, predict, runs and activate work from run folders and never need the app's
database, so they run while the app is open.
"""

import argparse
import sys

from core.analysis.operating_point import DEFAULT_SENSITIVITY
from core.commands import COMMANDS
from core.modelling.backbones import BACKBONE_NAMES, MIN_IMAGE_SIZE
from core.train.train_config import (
    INPUT_PIPELINES,
    PRESETS,
    STRATEGIES,
    TARGETS,
    THRESHOLD_RULES,
    TTA_VIEWS,
    WEIGHTS,
)


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--data", required=required, help="image folder, or benign/ + malignant/ root"
    )
    parser.add_argument("--csv", help="ISIC 2020-style ground-truth CSV (image_name + target)")
    parser.add_argument(
        "--site",
        action="append",
        dest="sites",
        help="anatomical site to keep, e.g. 'upper extremity' (repeatable; default all)",
    )


def add_skip_unmatched_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip-unmatched",
        action="store_true",
        help="use the rest when rows have an invalid target, match no image or repeat one "
        "(default: refuse); an evaluation records how many were skipped",
    )


def add_operating_point_parser(commands) -> None:
    """`operating-point adopt|show|clear`: this installation's own threshold for a run."""
    parser = commands.add_parser(
        "operating-point", help="set a run's threshold from your own labelled images"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    adopt = actions.add_parser("adopt", help="choose and adopt a threshold from labelled data")
    add_data_arguments(adopt)
    adopt.add_argument(
        "--sensitivity",
        type=float,
        default=DEFAULT_SENSITIVITY,
        help=f"target sensitivity on that data (default {DEFAULT_SENSITIVITY})",
    )
    add_skip_unmatched_argument(adopt)
    add_tta_arguments(adopt)
    for action in (adopt, actions.add_parser("show"), actions.add_parser("clear")):
        action.add_argument("--model", help="run id or path (default: the active run)")


def add_ensemble_parser(commands) -> None:
    parser = commands.add_parser(
        "ensemble", help="combine two or more trained runs into one ensemble run"
    )
    parser.add_argument(
        "--member", action="append", required=True, help="run id or folder (repeat, two or more)"
    )
    parser.add_argument(
        "--held-out",
        action="append",
        default=[],
        metavar="RUN=CSV[,CSV]",
        help="a member's fine-tuned fold predictions (crossval --predictions), for each member: "
        "the held-out-source threshold and figures then come from their fold ensembles",
    )
    parser.add_argument("--data", help="the members' image folder, if it moved")
    parser.add_argument("--csv", help="the members' ground-truth CSV, if it moved")
    parser.add_argument("--activate", action="store_true", help="make the new run active")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and save a run folder")
    add_data_arguments(train)
    add_training_arguments(train)
    train.add_argument("--activate", action="store_true", help="make the new run active")

    add_ensemble_parser(commands)

    crossval = commands.add_parser(
        "crossval", help="hold each source out in turn: train on the others, score it"
    )
    crossval.add_argument("--by", choices=("source",), default="source")
    add_data_arguments(crossval, required=False)
    crossval.add_argument(
        "--run", help="take the recipe from this run and save crossval.json in its folder"
    )
    crossval.add_argument(
        "--quick",
        action="store_true",
        help="head only, flip TTA: the folds a training run makes (minutes, not hours)",
    )
    crossval.add_argument(
        "--min-cases",
        type=int,
        default=30,
        help="hold out only sources with this many benign and malignant images (default 30)",
    )
    crossval.add_argument(
        "--source",
        action="append",
        dest="only_sources",
        help="hold out only this source (repeatable; default every source with enough cases)",
    )
    crossval.add_argument("--json", help="also write the result to this JSON file")
    crossval.add_argument(
        "--predictions", help="write each held-out image's probability to this CSV file"
    )
    add_training_arguments(crossval)

    evaluate = commands.add_parser("evaluate", help="metrics of a run on a labelled dataset")
    add_data_arguments(evaluate)
    evaluate.add_argument("--model", help="run id or path (default: the active run)")
    evaluate.add_argument("--json", help="write the full metrics to this JSON file")
    evaluate.add_argument(
        "--save",
        action="store_true",
        help="store the evaluation in the run's folder, where the Metrics page shows it",
    )
    add_skip_unmatched_argument(evaluate)
    add_tta_arguments(evaluate)

    add_operating_point_parser(commands)

    merge = commands.add_parser(
        "crossval-merge",
        help="merge folds run one source at a time into the run's crossval_fine_tuned.json",
    )
    merge.add_argument("--run", required=True, help="the run whose recipe the folds trained")
    merge.add_argument("files", nargs="+", help="crossval JSON files (one or more folds each)")
    merge.add_argument(
        "--predictions",
        action="append",
        default=[],
        help="the folds' --predictions CSV (repeatable): scores them at the run's threshold",
    )

    predict = commands.add_parser("predict", help="predict images; CSV to stdout or --out")
    predict.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--model", help="run id or path (default: the active run)")
    predict.add_argument("--out", help="CSV file to write (default: standard output)")
    predict.add_argument(
        "--resume",
        action="store_true",
        help="with --out: skip the files already in it (after an interruption), append the rest",
    )
    add_tta_arguments(predict)

    refit = commands.add_parser(
        "refit-ood", help="give a run the current out-of-distribution detector"
    )
    refit.add_argument("run_id")
    refit.add_argument("--data", help="the run's image folder, if it moved")
    refit.add_argument("--csv", help="the run's ground-truth CSV, if it moved")

    commands.add_parser("runs", help="list trained runs")
    activate = commands.add_parser("activate", help="make a run the active model")
    activate.add_argument("run_id")
    worker = commands.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("job_folder")
    return parser


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Recipe options; each defaults to the preset's value (see `core.train.train_config`)."""
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="default: the committed model's recipe; quick: about 15 minutes on 2 CPU cores",
    )
    parser.add_argument("--backbone", choices=BACKBONE_NAMES)
    parser.add_argument("--image-size", type=int, help=f"pixels a side, at least {MIN_IMAGE_SIZE}")
    parser.add_argument("--weights", help=f"{', '.join(WEIGHTS)} or a weights file")
    parser.add_argument("--target", choices=TARGETS)
    parser.add_argument("--epochs", type=int, help="head epochs (frozen backbone)")
    parser.add_argument("--fine-tune-epochs", type=int)
    parser.add_argument("--fine-tune-layers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threshold-rule", choices=THRESHOLD_RULES)
    parser.add_argument("--tta-views", choices=TTA_VIEWS)
    parser.add_argument("--no-tta", action="store_true", help="no test-time augmentation")
    parser.add_argument(
        "--input-pipeline",
        choices=INPUT_PIPELINES,
        help="memory: decode every image into RAM; stream: read them from the decoded-image "
        "cache, for datasets larger than memory; auto (default): memory for small datasets",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="multiworker: one run across machines, set up by TF_CONFIG (docs/scaling.md)",
    )


def add_tta_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tta", dest="tta", action="store_true", default=None)
    group.add_argument("--no-tta", dest="tta", action="store_false")


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return COMMANDS[arguments.command](arguments)
    except ValueError as error:
        # Bad data, a missing model or a bad option: a clear message, not a traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # A full disk, a folder that went away, no permission: the system's words, one line.
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
