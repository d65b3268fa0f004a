"""Grouped cross-validation of the frozen-backbone baseline, overall and per site.

    python -m scripts.grouped_cv --data DIR --csv FILE [--folds 5] [--site-of-interest SITE]

The baseline is the frozen ImageNet backbone's pooled features (from the feature cache) with a
logistic-regression head, scored with K folds grouped exactly like the training split
(patients, lesions, near-duplicate images). One test split of a site with few malignant images
gives a wide interval; the spread over folds says how much a single split can mislead.
"""

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.modelling.model import build_model, resolve_weights
from core.train.recipe import head_features, prepare_data
from core.train.train_config import TrainConfig


def fold_scores(vectors, labels, groups, sites, folds, seed, site_of_interest):
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_rows, test_rows in splitter.split(vectors, labels, groups):
        head = make_pipeline(
            StandardScaler(), LogisticRegression(C=0.05, class_weight="balanced", max_iter=2000)
        )
        head.fit(vectors[train_rows], labels[train_rows])
        scores = head.predict_proba(vectors[test_rows])[:, 1]
        in_site = sites[test_rows] == site_of_interest
        site_auc = (
            roc_auc_score(labels[test_rows][in_site], scores[in_site])
            if len(set(labels[test_rows][in_site])) == 2
            else float("nan")
        )
        yield (
            roc_auc_score(labels[test_rows], scores),
            site_auc,
            int(labels[test_rows][in_site].sum()),
        )


def print_progress(progress) -> None:
    print(progress.message, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--csv")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--site-of-interest", default="upper extremity")
    arguments = parser.parse_args()
    train_config = TrainConfig(data_dir=arguments.data, csv=arguments.csv)
    prepared = prepare_data(train_config, print_progress)
    # Offline, the cached ImageNet file of another input size stands in (see resolve_weights).
    weights = resolve_weights(train_config.backbone, train_config.image_size, train_config.weights)
    model = build_model(train_config.backbone, train_config.image_size, weights.argument)
    rows = np.arange(len(prepared.labels))
    vectors = head_features(model, train_config, prepared, rows, print_progress)
    sites = prepared.dataset.frame["site"].to_numpy()
    results = list(
        fold_scores(
            vectors,
            prepared.labels,
            prepared.split.groups,
            sites,
            arguments.folds,
            arguments.seed,
            arguments.site_of_interest,
        )
    )
    overall = np.array([result[0] for result in results])
    site = np.array([result[1] for result in results])
    print(
        f"{arguments.folds}-fold grouped CV, frozen {train_config.backbone} + logistic regression"
    )
    print(
        f"  overall ROC AUC: mean {overall.mean():.3f}, sd {overall.std(ddof=1):.3f}, "
        f"folds {np.round(overall, 3).tolist()}"
    )
    print(
        f"  {arguments.site_of_interest} ROC AUC: mean {np.nanmean(site):.3f}, "
        f"sd {np.nanstd(site, ddof=1):.3f}, folds {np.round(site, 3).tolist()}, "
        f"malignant per fold {[result[2] for result in results]}"
    )


if __name__ == "__main__":
    main()
