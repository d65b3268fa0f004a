"""The command line's commands: each takes the parsed arguments and returns the exit status.

The parser is in `core.__main__`; heavy modules load inside the command that needs them, so
`--help`, `runs` and `crossval-merge` answer without TensorFlow.
"""

import json
import os
import sys
import time
from pathlib import Path

from core.storage import prediction_csv, spreadsheet
from core.train.train_config import TrainConfig, preset_config

# Training options and the TrainConfig field each sets; unset options keep the preset's value.
TRAIN_OPTIONS = {
    "backbone": "backbone",
    "image_size": "image_size",
    "weights": "weights",
    "target": "target",
    "epochs": "head_epochs",
    "fine_tune_epochs": "fine_tune_epochs",
    "fine_tune_layers": "fine_tune_layers",
    "seed": "seed",
    "threshold_rule": "threshold_rule",
    "tta_views": "tta_views",
    "input_pipeline": "input_pipeline",
    "strategy": "strategy",
}


def training_config(arguments, **settings) -> TrainConfig:
    """The preset, then every option given, then `settings` (data paths)."""
    chosen = {
        field: getattr(arguments, option)
        for option, field in TRAIN_OPTIONS.items()
        if getattr(arguments, option, None) is not None
    }
    if arguments.no_tta:
        chosen["tta"] = False
    if getattr(arguments, "sites", None):
        chosen["sites"] = tuple(arguments.sites)
    return preset_config(arguments.preset, **{**chosen, **settings})


def warn(message: str) -> None:
    """A warning on standard error, apart from any CSV on standard output."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def command_train(arguments) -> int:
    from core.storage import runs
    from core.train.training import train

    train_config = training_config(arguments, data_dir=arguments.data, csv=arguments.csv)
    result = train(
        train_config, report=lambda p: print(p.message, flush=True), activate=arguments.activate
    )
    if Path(result.folder).parent == runs.models_dir():
        print(f"run {result.run_id} saved in {result.folder}")
    else:  # Another worker than the chief of a multi-worker run.
        print(
            f"run {result.run_id} trained; the chief saves it (this worker's copy in "
            f"{result.folder} is temporary)"
        )
    print(format_metrics(result.test_metrics, "test split"))
    return 0


def held_out_files(values: list[str]) -> dict[str, list[str]]:
    """RUN=CSV[,CSV] arguments as {run: [csv, ...]}."""
    files: dict[str, list[str]] = {}
    for value in values:
        run, _, paths = value.partition("=")
        if not run or not paths:
            raise ValueError(f"--held-out takes RUN=CSV[,CSV], got {value!r}")
        files.setdefault(run, []).extend(paths.split(","))
    return files


def command_ensemble(arguments) -> int:
    from core.train.ensemble import build_ensemble_run

    result = build_ensemble_run(
        arguments.member,
        held_out_files(arguments.held_out),
        report=lambda p: print(p.message, flush=True),
        activate=arguments.activate,
        data_dir=arguments.data,
        csv=arguments.csv,
    )
    print(f"run {result.run_id} saved in {result.folder}")
    print(format_metrics(result.test_metrics, "test split"))
    return 0


def command_crossval(arguments) -> int:
    from core.train.crossval import run_crossval

    check_output_paths(arguments.json, arguments.predictions)
    payload = run_crossval(
        crossval_config(arguments),
        run_reference=arguments.run,
        quick=arguments.quick,
        report=lambda p: print(p.message, flush=True),
        min_cases=arguments.min_cases,
        only=tuple(arguments.only_sources or ()),
        predictions_path=arguments.predictions,
    )
    print(format_crossval(payload))
    if arguments.json:
        with open(arguments.json, "w") as handle:
            json.dump(payload, handle, indent=2, allow_nan=False)
    return 0


def command_crossval_merge(arguments) -> int:
    import pandas as pd

    from core.storage import runs
    from core.train import crossval

    run = runs.resolve_run(arguments.run)
    records = [json.loads(Path(path).read_text()) for path in arguments.files]
    predictions = (
        pd.concat([spreadsheet.read_csv(path) for path in arguments.predictions])
        if arguments.predictions
        else None
    )
    payload = crossval.merge(records, predictions, run.card.threshold)
    name = crossval.save_with_run(run, payload)
    print(format_crossval(payload))
    print(f"wrote {name} in run {run.run_id}")
    return 0


def crossval_config(arguments) -> TrainConfig:
    """The run's recipe (with --run) or the preset's, then the options given."""
    if arguments.run is None:
        if not arguments.data:
            raise ValueError("crossval needs --data (or --run, to take the run's data)")
        return training_config(arguments, data_dir=arguments.data, csv=arguments.csv)
    from core.storage.runs import resolve_run

    run = resolve_run(arguments.run)
    if run.card.is_ensemble:
        raise ValueError(
            f"run {run.run_id} is an ensemble, which trains nothing itself: run crossval on "
            "each member with --predictions, then give those files to `ensemble --held-out`"
        )
    recipe = dict(run.card.config)
    if arguments.data:
        recipe.update(data_dir=arguments.data, csv=arguments.csv)
    options = training_config(arguments, data_dir="")
    given = {
        field: getattr(options, field)
        for option, field in TRAIN_OPTIONS.items()
        if getattr(arguments, option, None) is not None
    }
    return TrainConfig.from_dict({**recipe, **given})


def format_crossval(payload: dict) -> str:
    lines = [
        "held-out source                          n  malig.  ROC AUC (95% CI)     sens.  spec."
    ]
    for fold in payload["folds"]:
        metrics = fold.get("at_run_threshold") or fold["metrics"]
        low, high = fold["metrics"]["intervals"]["roc_auc"] or (float("nan"),) * 2
        lines.append(
            f"{fold['held_out'][:36]:36} {fold['metrics']['n']:6} {fold['metrics']['n_positive']:6}"
            f"  {fold['metrics']['roc_auc']:.3f} ({low:.3f}-{high:.3f})"
            f"  {metrics['sensitivity']:.3f}  {metrics['specificity']:.3f}"
        )
    mean, worst = payload["summary"]["mean"], payload["summary"]["worst"]
    lines.append(
        f"mean ROC AUC {mean['roc_auc']:.3f}, sensitivity {mean['sensitivity']:.3f}, "
        f"specificity {mean['specificity']:.3f}; worst ROC AUC {worst['roc_auc']:.3f} "
        f"({worst['roc_auc_source']}), worst sensitivity {worst['sensitivity']:.3f} "
        f"({worst['sensitivity_source']})"
    )
    lines.extend(f"skipped {item['source']}: {item['reason']}" for item in payload["skipped"])
    return "\n".join(lines)


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
    from core.analysis import reports
    from core.serving import evaluation
    from core.storage.runs import resolve_run

    # Every output is checked before the images are scored, so that none is lost to a typo.
    check_output_paths(arguments.json)
    run = resolve_run(arguments.model, warn=warn)
    if arguments.save and not os.access(run.folder, os.W_OK):
        raise ValueError(f"--save cannot write to the run's folder {run.folder}")
    try:
        dataset, skipped = evaluation.load_evaluation_dataset(
            arguments.data,
            arguments.csv,
            tuple(arguments.sites or ("all",)),
            arguments.skip_unmatched,
        )
    except evaluation.SkippedRowsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if skipped:
        print(f"skipped {reports.describe_skipped_rows(skipped)}", file=sys.stderr)
    record, predictions = evaluation.evaluate_run(run, dataset, arguments.tta, skipped=skipped)
    metrics = record["metrics"]
    print(format_metrics(metrics, f"model {run.run_id}"))
    if record["ood"] is not None:
        ood = record["ood"]
        print(f"  out of distribution: {ood['flagged']} of {ood['n_scored']} ({ood['share']:.1%})")
    if record["unreadable"]:
        print(f"skipped {len(record['unreadable'])} unreadable images", file=sys.stderr)
    if warning := reports.overlap_warning(record):
        print(f"warning: {warning}", file=sys.stderr)
    if arguments.save:
        evaluation.save_evaluation(run, record, predictions)
        print(f"saved evaluation {record['evaluation_id']} with run {run.run_id}")
    if arguments.json:
        # The metrics at the top level, as before --save existed, then the record's other keys.
        details = {key: value for key, value in record.items() if key != "metrics"}
        payload = {**metrics, "model": run.run_id, **details}
        with open(arguments.json, "w") as handle:
            json.dump(payload, handle, indent=2, allow_nan=False)
    return 0


def command_operating_point(arguments) -> int:
    from core.analysis import operating_point
    from core.storage.runs import resolve_run

    run = resolve_run(arguments.model, warn=warn)
    if arguments.action == "adopt":
        operating_point.adopt(choose_operating_point(run, arguments))
        print(f"adopted for run {run.run_id}:")
    elif arguments.action == "clear" and operating_point.clear(run.run_id):
        print(f"run {run.run_id}: local threshold removed")
    point = operating_point.operating_point(run.run_id)
    if point is None:
        print(f"run {run.run_id} labels with its {operating_point.threshold_for(run).note}")
        return 0
    print(format_operating_point(point))
    return 0


def choose_operating_point(run, arguments) -> dict:
    """Check the set, then score it with the run and choose the threshold on the scores."""
    from core.analysis import operating_point
    from core.serving import evaluation

    dataset, _ = evaluation.load_evaluation_dataset(
        arguments.data, arguments.csv, tuple(arguments.sites or ("all",)), arguments.skip_unmatched
    )
    # Counts and overlap first: a set that cannot be used is refused before the model loads.
    operating_point.check_set(run, dataset.frame)
    record, predictions = evaluation.evaluate_run(run, dataset, arguments.tta, n_bootstrap=0)
    return operating_point.choose(
        run,
        predictions,
        arguments.sensitivity,
        dataset=record["dataset"],
        tta=record["tta"],
    )


def format_operating_point(point: dict) -> str:
    def figure(name: str) -> str:
        low, high = point["intervals"][name] or (float("nan"),) * 2
        return f"{name} {point[name]:.3f} (95% CI {low:.3f}-{high:.3f})"

    threshold = f"{point['threshold']:.4f} (card's {point['card_threshold']:.4f})"
    images = f"{point['n_malignant']} malignant, {point['n_benign']} benign"
    return "\n".join(
        [
            f"  local threshold {threshold}, target sensitivity {point['target_sensitivity']}",
            f"  chosen on {point['n']} images ({images}) of {point['dataset']}",
            f"  {figure('sensitivity')}, {figure('specificity')} on that set",
            f"  adopted {point.get('adopted_at', '')}",
        ]
    )


def command_predict(arguments) -> int:
    from core.storage.runs import resolve_run

    if arguments.resume and not arguments.out:
        raise ValueError(
            "--resume needs --out FILE: the CSV to skip done files from and append to"
        )
    check_output_paths(arguments.out)
    run = resolve_run(arguments.model, warn=warn)
    try:
        with prediction_csv.output_lock(arguments.out):
            predict_files(arguments, run)
    except prediction_csv.OutputBusyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def predict_files(arguments, run) -> None:
    """Predict the files of `arguments.paths`, resuming onto `arguments.out` when asked."""
    # Read before TensorFlow loads, so a refused resume says so in a second.
    done, kept_bytes = (
        prediction_csv.read_done_files(arguments.out, run) if arguments.resume else (set(), 0)
    )
    from core.serving.inference import Predictor, find_images

    files = find_images(arguments.paths)
    todo = prediction_csv.remaining_files(files, done, arguments.out)
    announce(len(todo), len(files) - len(todo), arguments.out)
    # Nothing left to do needs no model, but still cuts a half-written last row.
    predictions = (
        Predictor(run).predict_many(((f, f) for f in todo), arguments.tta) if todo else ()
    )
    with prediction_csv.open_output(arguments.out, kept_bytes) as handle:
        if not kept_bytes:
            spreadsheet.writer(handle).writerow(prediction_csv.predict_columns(run))
        write_predictions(
            predictions, len(todo), handle, arguments.out is None, run.card.diagnoses
        )


def check_output_paths(*paths: str | None) -> None:
    """ValueError before any work when an output file could not be written at the end."""
    for path in filter(None, paths):
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise ValueError(f"{path} is a folder; give a file name")
        if not os.path.isdir(folder):
            raise ValueError(f"cannot write {path}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK) or (
            os.path.exists(path) and not os.access(path, os.W_OK)
        ):
            raise ValueError(f"cannot write {path}: permission denied")


def write_predictions(
    predictions, total: int, handle, to_stdout: bool, diagnosis_names: tuple[str, ...] = ()
) -> None:
    """CSV rows as the predictions come, with progress on standard error."""
    writer = spreadsheet.writer(handle)
    # Live redrawing only where it cannot tear the CSV rows printed to the same terminal.
    terminal = sys.stderr.isatty() and not (to_stdout and sys.stdout.isatty())
    progress = Progress(total, sys.stderr, terminal)
    for prediction in predictions:
        writer.writerow(prediction_csv.prediction_row(prediction, diagnosis_names))
        # Row by row, so an interrupted run leaves every finished row for --resume.
        handle.flush()
        progress.advance()
    progress.finish()


def announce(todo: int, skipped: int, out: str | None) -> None:
    already = f" ({skipped:,} already in {out})" if skipped else ""
    print(f"predicting {todo:,} images{already}", file=sys.stderr, flush=True)


class Progress:
    """Images done of the total, images/s and time left, on standard error.

    On a terminal the line is redrawn in place twice a second; elsewhere (a log file, a job
    scheduler's output) one line every 10 seconds, so a day-long run logs a few lines a
    minute, not one per image. `finish` always writes the final count and rate.
    """

    def __init__(self, total: int, stream, terminal: bool, clock=time.monotonic):
        self.total = total
        self.stream = stream
        self.terminal = terminal
        self.interval = 0.5 if terminal else 10.0
        self.clock = clock
        self.started = self.shown = clock()
        self.first: float | None = None
        self.done = 0

    def advance(self) -> None:
        now = self.clock()
        if self.first is None:
            self.first = now
        self.done += 1
        if now - self.shown >= self.interval:
            self.shown = now
            self.write(self.line(now), end="" if self.terminal else "\n")

    def finish(self) -> None:
        self.write(self.line(self.clock()), end="\n")

    def rate(self, now: float) -> float:
        """Images/s since the first image: loading and tracing would skew the time left."""
        if self.first is None or now <= self.first:
            return 0.0
        return (self.done - 1) / (now - self.first)

    def line(self, now: float) -> str:
        rate = self.rate(now)
        share = self.done / self.total if self.total else 1.0
        parts = [
            f"predicted {self.done:,} of {self.total:,} ({share:.1%})",
            f"{rate:.1f} images/s",
        ]
        if self.done == self.total:
            parts.append(f"in {format_duration(now - self.started)}")
        elif rate:
            parts.append(f"{format_duration((self.total - self.done) / rate)} left")
        return ", ".join(parts)

    def write(self, text: str, end: str) -> None:
        # Carriage return and clear-to-end-of-line redraw the same terminal line.
        prefix = "\r\x1b[K" if self.terminal else ""
        print(prefix + text, end=end, file=self.stream, flush=True)


def format_duration(seconds: float) -> str:
    """4h02m, 15m38s or 42s."""
    whole = round(seconds)
    hours, minutes, rest = whole // 3600, whole // 60 % 60, whole % 60
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def command_refit_ood(arguments) -> int:
    from core.train.training import refit_ood

    entry = refit_ood(
        arguments.run_id, arguments.data, arguments.csv, lambda p: print(p.message, flush=True)
    )
    check = entry["non_dermoscopy_check"]
    print(
        f"flagged: {check['non_dermoscopy_flagged']:.1%} of {check['n_non_dermoscopy']} "
        f"non-dermoscopy images, {entry['flagged']['val']:.1%} of validation and "
        f"{entry['flagged']['test']:.1%} of test dermoscopy; AUROC {check['auroc']:.4f}"
    )
    return 0


def command_runs(arguments) -> int:
    from core.storage.runs import active_run_id, list_runs

    found, problems = list_runs()
    active = active_run_id()
    for run in found:
        test = run.card.test_metrics
        auc = test.get("roc_auc")
        marker = "*" if run.run_id == active else " "
        auc_text = "n/a" if auc is None else f"{auc:.3f}"
        print(f"{marker} {run.run_id}  {run.card.architecture}  test AUC {auc_text}")
    for problem in problems:
        print(f"! {problem}", file=sys.stderr)
    if not found:
        print("no runs yet: python -m core train --data DIR", file=sys.stderr)
    return 0


def command_activate(arguments) -> int:
    from core.storage.runs import set_active

    run = set_active(arguments.run_id)
    print(f"active run: {run.run_id}")
    return 0


def command_worker(arguments) -> int:
    from core.worker import run_job

    return run_job(arguments.job_folder)


COMMANDS = {
    "train": command_train,
    "ensemble": command_ensemble,
    "crossval": command_crossval,
    "crossval-merge": command_crossval_merge,
    "refit-ood": command_refit_ood,
    "evaluate": command_evaluate,
    "predict": command_predict,
    "operating-point": command_operating_point,
    "runs": command_runs,
    "activate": command_activate,
    "worker": command_worker,
}
