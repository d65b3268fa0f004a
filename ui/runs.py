"""Finished runs as the pages offer them: a picker, its labels, and every run's card."""

import streamlit as st

import ui.formatting
import ui.page
from core.storage import runs
from core.storage.card import Card


def run_label(run: runs.Run, active_id: str | None) -> str:
    auc = run.card.test_metrics.get("roc_auc")
    marker = " (active)" if run.run_id == active_id else ""
    return f"{run.run_id}{marker} - {run.card.architecture}, test AUC {ui.formatting.number(auc)}"


def run_cards() -> dict[str, Card]:
    """Every finished run's card by run id, newest first, read from the run folders."""
    found, _ = runs.list_runs()
    return {run.run_id: run.card for run in found}


def run_picker(key: str, label: str = "Model") -> runs.Run | None:
    """A selectbox of the finished runs, the active one first and selected by default."""
    active, problems = runs.active_run()
    found, _ = runs.list_runs()
    ui.page.show_problems(problems)
    if active is None:
        return None
    by_id = {active.run_id: active, **{run.run_id: run for run in found}}
    chosen = st.selectbox(
        label,
        list(by_id),
        key=key,
        format_func=lambda run_id: run_label(by_id[run_id], active.run_id),
    )
    return by_id[chosen]
