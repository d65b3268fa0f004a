"""Helpers of the Home page."""

import pandas as pd
import streamlit as st

import ui.formatting
from core.analysis import reports
from core.inputs import datasets
from core.storage import db
from core.storage.card import Card

# What a first visit can do, each with the page that does it; History keeps what was done.
START_HERE = (
    (
        "pages/1_Predict.py",
        "Predict an image: its malignant probability and Grad-CAM, from the active model",
        ":material/biotech:",
    ),
    (
        "pages/2_Train.py",
        "Train a model on the bundled sample (a few minutes), or on your own dataset",
        ":material/model_training:",
    ),
    (
        "pages/3_Metrics.py",
        "Evaluate a model on your own labelled images, and compare runs",
        ":material/monitoring:",
    ),
    (
        "pages/4_History.py",
        "Later, History: stored predictions, and their confirmed outcomes",
        ":material/history:",
    ),
)


def run_facts(card: Card) -> pd.DataFrame:
    """What a researcher asks first about a model, from its card."""
    data, test = card.data, card.test_metrics
    balance = data.get("class_balance") or {}
    source = datasets.describe_location(data["source"]) if data.get("source") else "n/a"
    weights = datasets.without_paths(str(card.weights))
    facts = {
        "Backbone": f"{card.architecture} (weights {weights})",
        "Input size": f"{card.image_size} px, {card.resample}",
        "Trained on": f"{source}, sites {', '.join(data.get('sites') or [])}",
        "Images": f"{data.get('n_images')} ({balance.get('malignant')} malignant)",
        "Test ROC AUC": ui.formatting.with_interval(test, "roc_auc"),
        "Threshold": f"{ui.formatting.number(card.threshold)} (rule: {card.threshold_rule})",
        "Sensitivity at threshold": ui.formatting.with_interval(test, "sensitivity"),
        "Specificity at threshold": ui.formatting.with_interval(test, "specificity"),
        "Test-time augmentation": reports.tta_text(card, card.tta),
        "Trained at": ui.formatting.utc_time(card.created_at),
    }
    return pd.DataFrame({"Property": list(facts), "Value": list(facts.values())})


def database_summary(database: db.Database | None) -> None:
    """How many runs and predictions are stored, and where; or that nothing is."""
    if database is None:
        st.caption("Not available: see the message above. Nothing is being stored.")
        return
    status = database.status()
    trained, predicted = st.columns(2)
    trained.metric("Runs", status["n_runs"])
    predicted.metric("Stored predictions", status["n_predictions"])
    location = ui.formatting.file_location(status["path"])
    st.caption(f"Stored in {location} (schema version {status['schema_version']})")
