"""Would an ensemble help a new clinic? Pair held-out-source folds of two or more recipes.

Each `python -m core crossval --source S --predictions FILE` run writes every held-out
image's calibrated probability. Given such files of different recipes (say MobileNetV2 and
EfficientNet-Lite0, both trained without the same source), this pairs them by source and
image, combines them in logit space (`core.analysis.calibration.mean_logit`) and prints, per
held-out source, each recipe's and the combination's ROC AUC with a 95% bootstrap interval and the
specificity at 90% sensitivity (threshold chosen on the source itself: an upper bound on what
a clinic gets, since a real threshold is chosen without its images).

    python -m scripts.fold_ensemble NAME=FILE.csv[,FILE.csv...] NAME=FILE.csv ... [--json OUT]
"""

import argparse
import json

import numpy as np
import pandas as pd

from core.analysis.calibration import choose_threshold, mean_logit
from core.analysis.metrics import evaluate, threshold_metrics

TARGET_SENSITIVITY = 0.90


def read_recipe(argument: str) -> tuple[str, pd.DataFrame]:
    """NAME=FILE[,FILE...]: one recipe's held-out predictions, every fold together."""
    name, _, files = argument.partition("=")
    if not name or not files:
        raise ValueError(f"expected NAME=FILE.csv[,FILE.csv], got {argument!r}")
    frame = pd.concat([pd.read_csv(path) for path in files.split(",")])
    return name, frame.set_index(["held_out", "image_name"])


def figures(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    scored = evaluate(labels, probabilities, 0.5, n_bootstrap=1000)
    threshold = choose_threshold(labels, probabilities, "sensitivity", TARGET_SENSITIVITY)
    at = threshold_metrics(labels, probabilities, threshold)
    return {
        "roc_auc": scored["roc_auc"],
        "roc_auc_interval": scored["intervals"]["roc_auc"],
        "specificity_at_90_sensitivity": at["specificity"],
    }


def compare(recipes: dict[str, pd.DataFrame]) -> dict:
    """Per held-out source: n, malignant n, and figures of each recipe and the ensemble."""
    shared = sorted(set.intersection(*(set(frame.index) for frame in recipes.values())))
    if not shared:
        raise ValueError("the recipes share no held-out image: were the same sources held out?")
    table = pd.DataFrame(
        {name: frame.loc[shared, "probability"] for name, frame in recipes.items()}
    )
    table["label"] = next(iter(recipes.values())).loc[shared, "label"]
    table["ensemble"] = mean_logit(table[list(recipes)].to_numpy().T)
    result = {}
    for source, rows in table.groupby(level="held_out"):
        labels = rows["label"].to_numpy()
        entry = {"n": len(rows), "n_malignant": int(labels.sum())}
        for name in [*recipes, "ensemble"]:
            entry[name] = figures(labels, rows[name].to_numpy())
        result[source] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", help="NAME=FILE.csv[,FILE.csv...], two or more")
    parser.add_argument("--json", help="also write the figures to this file")
    arguments = parser.parse_args()
    recipes = dict(read_recipe(argument) for argument in arguments.recipes)
    if len(recipes) < 2:
        parser.error("give two or more recipes to combine")
    result = compare(recipes)
    for source, entry in result.items():
        print(f"{source}: {entry['n']} images, {entry['n_malignant']} malignant")
        for name in [*recipes, "ensemble"]:
            figure = entry[name]
            low, high = figure["roc_auc_interval"]
            print(
                f"  {name:12} ROC AUC {figure['roc_auc']:.3f} ({low:.3f}-{high:.3f}), "
                f"specificity at 90% sensitivity {figure['specificity_at_90_sensitivity']:.3f}"
            )
    if arguments.json:
        with open(arguments.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
