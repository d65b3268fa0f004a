"""Helpers of the Metrics page: headline tables, the threshold explorer's cards, the charts
of an evaluation (the test split's or one on the user's data) and the evaluation job."""

import pandas as pd
import streamlit as st

import ui.datasets
import ui.formatting
import ui.jobs
import ui.page
import ui.runs
from core.storage import runs
from core.storage.card import Card


def change(value: float | None, reference: float | None, digits: int = 3) -> str | None:
    """A signed delta for st.metric; None (no arrow) when missing or it rounds to zero."""
    if value is None or reference is None or round(value - reference, digits) == 0:
        return None
    return f"{value - reference:+.{digits}f}"


def headline_table(evaluation: dict) -> None:
    """The test metrics with their 95% bootstrap intervals, three decimals, labels in full."""
    from core.analysis import reports

    table = reports.headline_table(evaluation).rename(
        columns={
            "metric": "Metric",
            "value": "Value",
            "ci_low": "95% CI low",
            "ci_high": "95% CI high",
        }
    )
    numbers = ["Value", "95% CI low", "95% CI high"]
    st.table(table.style.format("{:.3f}", subset=numbers, na_rep="n/a").hide(axis="index"))


def classification_report(
    predictions: pd.DataFrame, threshold: float, key: str | None = None
) -> None:
    from core.analysis import reports

    st.dataframe(
        reports.classification_report(predictions, threshold),
        hide_index=True,
        column_config={
            "class": st.column_config.TextColumn("Class"),
            "precision": st.column_config.NumberColumn("Precision", format="%.3f"),
            "recall": st.column_config.NumberColumn("Recall", format="%.3f"),
            "f1": st.column_config.NumberColumn("F1", format="%.3f"),
            "support": st.column_config.NumberColumn("Support", format="%d"),
        },
        placeholder="n/a",
        key=key,
    )


def threshold_cards(point, reference) -> None:
    """Threshold metrics at `point`, with their change from the run's own threshold."""
    from core.analysis import reports

    names = ("sensitivity", "specificity", "ppv", "npv", "f1")
    for column, key in zip(st.columns(len(names)), names, strict=True):
        value = point.counts[key]
        column.metric(
            reports.HEADLINE_METRICS[key],
            ui.formatting.number(value),
            change(value, reference.counts[key]),
        )


def threshold_slider(run_id: str, card_threshold: float) -> float:
    """The threshold explorer's slider, one per run, with a reset to the run's own threshold.

    Keyed by run id: a threshold moved for one run must not carry over to another.
    """
    key = f"metrics_threshold_{run_id}"
    # Set before the slider is drawn (not through `value`), so the reset may change it.
    st.session_state.setdefault(key, card_threshold)
    slider, reset = st.columns([4, 1], vertical_alignment="bottom")
    threshold = slider.slider(
        "Threshold",
        0.0,
        1.0,
        step=0.005,
        format="%.3f",
        key=key,
        help=f"The run's own threshold, chosen on validation, is {card_threshold:.3f}.",
    )
    reset.button(
        f"Reset to {card_threshold:.3f}",
        key=f"metrics_threshold_reset_{run_id}",
        on_click=_set_state,
        args=(key, card_threshold),
        disabled=threshold == card_threshold,
    )
    return threshold


def _set_state(key: str, value) -> None:
    st.session_state[key] = value


def test_split(run: runs.Run, predictions: pd.DataFrame, epochs: pd.DataFrame) -> None:
    """The One run tab: a run's held-out test split, explored at any threshold."""
    from core.analysis import charts, reports

    test = run.card.test_metrics
    st.caption(f"Held-out test split: {test['n']} images, {test['n_positive']} malignant.")
    headline_table(test)
    if run.card.is_ensemble:
        members_section(run.card)
    card_threshold = run.card.threshold
    threshold = threshold_slider(run.run_id, card_threshold)
    point = reports.operating_point(predictions, threshold)
    threshold_cards(point, reports.operating_point(predictions, card_threshold))
    evaluation_charts(run.run_id, test, predictions, point, "metrics_test")
    if not epochs.empty:
        st.plotly_chart(charts.learning_curves_figure(epochs))
    site, origin = st.columns(2)
    for column, key in ((site, "site"), (origin, "source")):
        if test["subgroups"].get(key):
            column.plotly_chart(charts.subgroup_auc_figure(test["subgroups"], key))
    crossval_section(run, test.get("roc_auc"))


def members_section(card) -> None:
    """What an ensemble combines, each member beside the ensemble."""
    from core.analysis import reports

    st.markdown("**Ensemble members**, each at its own threshold on the same test split")
    st.dataframe(reports.members_table(card), hide_index=True)
    st.caption(
        f"Combined: {card.combination}. The ensemble's held-out figures combine the members' "
        "fold models the same way."
    )


def evaluation_charts(
    run_id: str, evaluation: dict, predictions: pd.DataFrame, point, key: str
) -> None:
    """Confusion matrices, ROC and PR with the operating point, calibration and the report.

    `evaluation` is a `metrics.evaluate` result and `predictions` its labels and
    probabilities; `key` keeps the charts of two evaluations on one page apart.
    """
    from core.analysis import charts

    counts, normalised = st.columns(2)
    counts.plotly_chart(charts.confusion_matrix_figure(point.counts), key=f"{key}_counts")
    normalised.plotly_chart(
        charts.confusion_matrix_figure(point.counts, normalize=True), key=f"{key}_normalised"
    )
    mark = f"at threshold {point.threshold:.3f}"
    roc, pr = st.columns(2)
    roc_curve = {run_id: {**evaluation["roc"], "auc": evaluation["roc_auc"]}}
    roc_marks = {run_id: point.roc_point} if point.roc_point else {}
    roc.plotly_chart(charts.roc_figure(roc_curve, roc_marks, point_label=mark), key=f"{key}_roc")
    pr_curve = {run_id: {**evaluation["pr"], "ap": evaluation["pr_auc"]}}
    pr_marks = {run_id: point.pr_point} if point.pr_point else {}
    prevalence = evaluation["n_positive"] / evaluation["n"]
    pr.plotly_chart(
        charts.pr_figure(pr_curve, pr_marks, prevalence, point_label=mark), key=f"{key}_pr"
    )
    calibration, report = st.columns(2)
    calibration.plotly_chart(
        charts.calibration_figure(evaluation["calibration"]), key=f"{key}_calibration"
    )
    report.markdown(f"**Classification report at {point.threshold:.3f}**")
    with report:
        classification_report(predictions, point.threshold, key=f"{key}_report")


def evaluate_on_your_data(database, cards: dict[str, Card]) -> None:
    """The "Evaluate on your data" tab: start an evaluation, follow it, see the stored ones."""
    from core import worker

    evaluation_form(cards)
    ui.jobs.job_monitor(worker.EVALUATION, _show_evaluation_finished, "metrics_eval")
    st.subheader("Stored evaluations")
    run = ui.runs.run_picker("metrics_eval_run", "Run")
    if run is not None:
        stored_evaluations(database, run)


def evaluation_form(cards: dict[str, Card]) -> None:
    """Dataset and runs, then Start: disabled while any background job runs."""
    from core import worker
    from core.inputs import datasets

    picked = ui.datasets.dataset_picker("metrics_eval")
    if picked is None:
        return
    data_dir, csv = picked
    problems = _dataset_errors(str(data_dir), str(csv) if csv else None)
    for problem in problems:
        st.error(problem, icon=":material/dataset:")
    active = runs.active_run_id()
    run_ids = st.multiselect(
        "Runs to evaluate",
        list(cards),
        default=[active] if active in cards else list(cards)[:1],
        key="metrics_eval_runs",
        help="Each run scores every image at its own threshold, chosen on its validation "
        "split: it is never re-tuned on your images.",
    )
    skip_unmatched = st.checkbox(
        "Skip rows that cannot be scored",
        key="metrics_eval_skip",
        help="Rows with an invalid target, a name that matches no image, or a repeated name "
        "or image. Without this the evaluation stops and lists them; with it the rest is "
        "scored and the evaluation records how many were skipped.",
    )
    latest = worker.latest_job()
    running = latest is not None and not latest.finished
    clicked = st.button(
        "Start evaluation",
        type="primary",
        key="metrics_eval_start",
        disabled=running or not run_ids or bool(problems),
        help="One background job runs at a time: wait for it or cancel it." if running else None,
    )
    if not clicked:
        return
    request = worker.EvaluationRequest(
        str(data_dir),
        str(csv) if csv else None,
        ("all",),
        tuple(run_ids),
        skip_unmatched=skip_unmatched,
    )
    try:
        worker.start_evaluation(request)
    except (worker.TrainingBusyError, ValueError) as error:
        st.error(datasets.without_paths(str(error)))
        return
    st.rerun()  # Drawn again at once, Start shows as disabled while the job runs.


@st.cache_data(ttl=300, max_entries=8, show_spinner="Checking the dataset")
def _dataset_errors(data_dir: str, csv: str | None) -> list[str]:
    """What keeps the dataset from being evaluated at all, in words and without server paths.

    Rows that cannot be scored are not among them: the skip checkbox decides about those.
    """
    from core.inputs import data, datasets

    report = data.validate_dataset(data_dir, csv, min_per_class=1)
    return [datasets.without_paths(problem.message) for problem in report.errors]


def _show_evaluation_finished(status) -> None:
    from core.inputs import datasets

    if status.state == "cancelled":
        st.warning(f"Evaluation {status.job_id}: {status.message}.")
    elif status.state == "failed":
        error = datasets.without_paths(status.error or "")
        st.error(f"Evaluation {status.job_id} failed: {error}")
    else:
        saved = ui.formatting.plural(len(status.evaluation_ids), "evaluation")
        st.success(
            f"Evaluation finished {status.elapsed_seconds:.0f} s after Start: {saved} stored "
            "with the runs. Choose a run below to see its results."
        )


EVALUATION_LIST_COLUMNS = {
    "created_at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm"),
    "dataset": st.column_config.TextColumn("Dataset"),
    "n_images": st.column_config.NumberColumn("Images", format="%d"),
    "n_malignant": st.column_config.NumberColumn("Malignant", format="%d"),
    "roc_auc": st.column_config.NumberColumn("ROC AUC", format="%.3f"),
    "sensitivity": st.column_config.NumberColumn("Sensitivity", format="%.3f"),
    "specificity": st.column_config.NumberColumn("Specificity", format="%.3f"),
    "ood_flagged": st.column_config.NumberColumn("OOD flagged", format="percent"),
}


def stored_evaluations(database, run: runs.Run) -> None:
    """The run's stored evaluations, newest first, and the one chosen in full."""
    from core.inputs import datasets

    listed = database.list_evaluations(run.run_id)
    if listed.empty:
        st.caption(f"Run {run.run_id} has no stored evaluations yet.")
        return
    st.dataframe(
        listed[list(EVALUATION_LIST_COLUMNS)],
        hide_index=True,
        column_config=EVALUATION_LIST_COLUMNS,
        key="metrics_eval_list",
    )
    names = {
        row.evaluation_id: f"{row.dataset}, {row.n_images} images, {row.created_at:%Y-%m-%d %H:%M}"
        for row in listed.itertuples()
    }
    chosen = st.selectbox(
        "Evaluation", list(names), format_func=names.get, key=f"metrics_eval_id_{run.run_id}"
    )
    predictions = database.evaluation_predictions(chosen)
    try:
        record = runs.read_evaluation(run.folder, chosen)
    except runs.RunError as error:
        st.error(datasets.without_paths(str(error)))
        return
    show_evaluation(run.run_id, record, predictions)


def show_evaluation(run_id: str, record: dict, predictions: pd.DataFrame) -> None:
    """One stored evaluation: what One run shows for the test split, then the subgroups."""
    from core.analysis import reports

    scored = record["metrics"]
    tta = "with" if record["tta"] else "without"
    st.caption(
        f"{record['dataset']}: {scored['n']} images, {scored['n_positive']} malignant, scored "
        f"{ui.formatting.utc_time(record['created_at'])} {tta} test-time augmentation, at the "
        f"run's own threshold {record['threshold']:.3f} (never re-tuned on these images)."
    )
    st.info(reports.ood_summary(record), icon=":material/travel_explore:")
    unreadable = record.get("unreadable") or []
    if unreadable:
        listed = ", ".join(unreadable[:10]) + (", ..." if len(unreadable) > 10 else "")
        ui.page.show_problems(
            [f"{ui.formatting.plural(len(unreadable), 'file')} could not be read: {listed}"]
        )
    skipped = record.get("skipped_rows") or {}
    if skipped:
        ui.page.show_problems([f"Skipped {reports.describe_skipped_rows(skipped)}."])
    overlap = reports.overlap_warning(record)
    if overlap:
        st.warning(overlap, icon=":material/warning:")
    few_cases = reports.few_cases_warning(scored)
    if few_cases:
        st.warning(few_cases, icon=":material/warning:")
    headline_table(scored)
    point = reports.operating_point(predictions, record["threshold"])
    evaluation_charts(run_id, scored, predictions, point, "metrics_eval")
    local_threshold_form(runs.load_run(runs.models_dir() / run_id), record, predictions)
    st.markdown("**Subgroups**")
    table = reports.subgroup_table(scored)
    if table.empty:
        st.caption("No site, sex, age or source is known for these images: no subgroups.")
        return
    st.caption(
        f"With fewer than {reports.MIN_CONFIRMED_CASES} malignant (or benign) images in a "
        f"subgroup, the metrics that depend on them read “{reports.TOO_FEW_CASES}”."
    )
    st.table(table, hide_index=True)


def local_threshold_form(run: runs.Run, record: dict, predictions: pd.DataFrame) -> None:
    """Use a threshold from this evaluation: preview what it gives, adopt it, or go back."""
    from core.analysis import operating_point, reports

    evaluation_id = record["evaluation_id"]
    current = operating_point.threshold_for(run)
    with st.expander("Use a threshold from this evaluation", expanded=current.source == "local"):
        st.caption(
            f"Run {run.run_id} now labels with its {current.note}. A clinic with at least "
            f"{operating_point.MIN_CASES} malignant and {operating_point.MIN_CASES} benign images "
            "of its own, none seen in training, can set this installation's threshold from them."
        )
        target = st.number_input(
            "Target sensitivity",
            min_value=0.5,
            max_value=0.99,
            value=operating_point.DEFAULT_SENSITIVITY,
            step=0.01,
            key=f"metrics_local_target_{evaluation_id}",
        )
        try:
            point = operating_point.choose(
                run,
                predictions,
                target,
                dataset=record["dataset"],
                tta=bool(record["tta"]),
                evaluation_id=evaluation_id,
            )
        except ValueError as error:
            st.warning(f"This evaluation cannot set a threshold: {error}", icon=":material/block:")
            point = None
        if point is not None:
            st.table(reports.local_threshold_table(point), hide_index=True)
            if st.button("Adopt this threshold for the run", key=f"metrics_adopt_{evaluation_id}"):
                operating_point.adopt(point)
                st.rerun()
        if current.source == "local" and st.button(
            "Back to the card's threshold", key=f"metrics_clear_{evaluation_id}"
        ):
            operating_point.clear(run.run_id)
            st.rerun()


def comparison_table(
    cards: dict[str, Card], test_predictions: dict[str, pd.DataFrame] | None = None
) -> None:
    """Runs side by side, every row and every label shown in full.

    Given the runs' test predictions, a warning naming each test split's size comes first
    when the splits differ: their test metrics are then not on the same images.
    """
    from core.analysis import compare, reports

    warning = compare.test_split_warning(test_predictions) if test_predictions else None
    if warning:
        st.warning(warning, icon=":material/compare_arrows:")
    table = reports.comparison_table(cards)
    st.table(table.rename_axis("Setting or test metric").reset_index(), hide_index=True)


# Each kind of held-out-source folds a run folder may hold, with what it measures.
CROSSVAL_KINDS = (
    (
        runs.CROSSVAL_FINE_TUNED_FILE,
        "Held-out sources: the recipe as trained (fine-tuned)",
        (
            "Each listed source held out in turn: the run's full recipe, fine-tuning included, "
            "trained on the other sources and scored the held-out one, at the threshold its "
            "own validation split chose and at this run's threshold."
        ),
    ),
    (
        runs.CROSSVAL_FILE,
        "Held-out sources: head only",
        (
            "Each data source held out in turn: a head on frozen ImageNet features (the "
            "recipe's starting point, minutes instead of hours) trained on the other sources "
            "and was scored on the held-out one."
        ),
    ),
)


def crossval_section(run, in_source_auc: float | None) -> None:
    """Each kind of held-out-source cross-validation the run's folder has, labelled."""
    for file_name, title, caption in CROSSVAL_KINDS:
        crossval = runs.load_crossval(run, file_name)
        if crossval is not None:
            crossval_block(crossval, title, caption, in_source_auc, key=file_name)


def crossval_block(crossval: dict, title: str, caption: str, in_source_auc, key: str) -> None:
    from core.analysis import charts, reports

    st.subheader(title)
    st.caption(
        caption + " Images from a clinic the model never saw, such as your own, are the case "
        "that matters."
    )
    st.table(reports.crossval_table(crossval), hide_index=True)
    skipped = reports.crossval_skipped(crossval)
    if skipped:
        st.caption("Not held out: " + "; ".join(skipped) + ".")
    forest, curves = st.columns(2)
    forest.plotly_chart(
        charts.crossval_forest_figure(crossval, in_source_auc), key=f"{key}_forest"
    )
    curves.plotly_chart(
        charts.roc_figure(
            reports.crossval_roc_curves(crossval),
            title="ROC on held-out sources",
            legend_below=True,
        ),
        key=f"{key}_roc",
    )


def paired_images(database, test_predictions: dict[str, pd.DataFrame]):
    """The images to compare the runs on, chosen by the user; None when they share none.

    A shared evaluation set, where every run was evaluated on the same dataset, is offered
    first; the images the runs' test splits have in common are always offered.
    """
    from core.analysis import compare

    run_ids = list(test_predictions)
    shared = compare.shared_evaluations(database.list_evaluations(), run_ids)
    names = {key: f"Evaluation set {found['dataset']}" for key, found in shared.items()}
    names[compare.TEST_SPLIT] = "Test splits: the images they have in common"
    basis = st.radio("Compare on", list(names), format_func=names.get, key="metrics_compare_basis")
    if basis == compare.TEST_SPLIT:
        paired = compare.pair_test_splits(test_predictions)
    else:
        evaluations = shared[basis]["evaluations"]
        predictions = {
            run_id: database.evaluation_predictions(evaluations[run_id]) for run_id in run_ids
        }
        paired = compare.pair_evaluations(predictions, shared[basis]["dataset"])
    st.caption(paired.description + ".")
    if paired.n_images == 0:
        st.warning(
            "The chosen runs have no image in common here, so they cannot be compared on the "
            "same images. Evaluate them on the same dataset under “Evaluate on your data”.",
            icon=":material/compare_arrows:",
        )
        return None
    return paired


def paired_comparison(paired, cards: dict[str, Card]) -> None:
    """The paired tests of each run against the first chosen one, and their ROC curves."""
    from core.analysis import charts, compare, reports

    thresholds = {run_id: card.threshold for run_id, card in cards.items()}
    reference = next(iter(paired.probabilities))
    st.markdown(f"**Paired comparison on the same images, against {reference}**")
    st.caption(
        "The first run chosen is the reference. ROC AUCs are compared with DeLong's test for "
        "correlated ROC curves; sensitivity (on malignant images) and specificity (on benign "
        "ones) at each run's own threshold with McNemar's test. Differences are the compared "
        f"run minus the reference. With fewer than {reports.MIN_CONFIRMED_CASES} images of a "
        f"class, the results that depend on it read “{reports.TOO_FEW_CASES}”."
    )
    table = compare.paired_table(paired, thresholds)
    st.table(table.rename_axis("Paired result").reset_index(), hide_index=True)
    curves, points = compare.roc_curves(paired, thresholds)
    st.plotly_chart(charts.roc_figure(curves, points, title="ROC on the paired images"))
