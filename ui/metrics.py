"""Helpers of the Metrics page: headline tables and the threshold explorer's cards."""

import pandas as pd
import streamlit as st

import ui


def change(value: float | None, reference: float | None, digits: int = 3) -> str | None:
    """A signed delta for st.metric; None (no arrow) when missing or it rounds to zero."""
    if value is None or reference is None or round(value - reference, digits) == 0:
        return None
    return f"{value - reference:+.{digits}f}"


def headline_table(evaluation: dict) -> None:
    """The test metrics with their 95% bootstrap intervals, three decimals, labels in full."""
    from core import reports

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


def classification_report(predictions: pd.DataFrame, threshold: float) -> None:
    from core import reports

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
    )


def threshold_cards(point, reference) -> None:
    """Threshold metrics at `point`, with their change from the run's own threshold."""
    from core import reports

    names = ("sensitivity", "specificity", "ppv", "npv", "f1")
    for column, key in zip(st.columns(len(names)), names, strict=True):
        value = point.counts[key]
        column.metric(
            reports.HEADLINE_METRICS[key], ui.number(value), change(value, reference.counts[key])
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


def comparison_table(
    cards: dict[str, dict], test_predictions: dict[str, pd.DataFrame] | None = None
) -> None:
    """Runs side by side, every row and every label shown in full.

    Given the runs' test predictions, a warning naming each test split's size comes first
    when the splits differ: their test metrics are then not on the same images.
    """
    from core import compare, reports

    warning = compare.test_split_warning(test_predictions) if test_predictions else None
    if warning:
        st.warning(warning, icon=":material/compare_arrows:")
    table = reports.comparison_table(cards)
    st.table(table.rename_axis("Setting or test metric").reset_index(), hide_index=True)


def crossval_section(run, in_source_auc: float | None) -> None:
    """The held-out-source cross-validation of the run's recipe, when its folder has one."""
    from core import charts, reports, runs

    crossval = runs.load_crossval(run)
    if crossval is None:
        return
    st.subheader("Held-out sources")
    st.caption(
        "Each data source held out in turn: the run's recipe trained on the other sources and "
        "was scored on the held-out one, at the threshold its own validation split chose. "
        "Images from a clinic the model never saw, such as your own, are the case that matters."
    )
    st.table(reports.crossval_table(crossval), hide_index=True)
    skipped = reports.crossval_skipped(crossval)
    if skipped:
        st.caption("Not held out: " + "; ".join(skipped) + ".")
    forest, curves = st.columns(2)
    forest.plotly_chart(charts.crossval_forest_figure(crossval, in_source_auc))
    curves.plotly_chart(
        charts.roc_figure(reports.crossval_roc_curves(crossval), title="ROC on held-out sources")
    )


def paired_images(database, test_predictions: dict[str, pd.DataFrame]):
    """The images to compare the runs on, chosen by the user; None when they share none.

    A shared evaluation set, where every run was evaluated on the same dataset, is offered
    first; the images the runs' test splits have in common are always offered.
    """
    from core import compare

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


def paired_comparison(paired, cards: dict[str, dict]) -> None:
    """The paired tests of each run against the first chosen one, and their ROC curves."""
    from core import charts, compare, reports

    thresholds = {run_id: float(cards[run_id]["threshold"]["value"]) for run_id in cards}
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
    marks = {f"{run_id} at its threshold": point for run_id, point in points.items()}
    st.plotly_chart(charts.roc_figure(curves, marks, title="ROC on the paired images"))
