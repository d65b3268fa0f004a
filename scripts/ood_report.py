"""Measure the OOD flag on the shared dermoscopy data and the non-dermoscopy test set.

For each kind of features (frozen ImageNet MobileNetV2 at 224 and 160 px, and the committed
default model's fine-tuned features at 160 px) the detector is fitted with
`core.modelling.ood.fit_ood`'s defaults on a train part of the shared images, thresholded on a validation part and measured
on a test part and on `core.modelling.ood_set.non_dermoscopy_images()`. The default model's own
split.csv gives the parts for its features (images it never saw, ISIC 2017, are reported
apart); frozen features use a random 70/15/15 split by image. Then, once per source, the
detector is refitted without that source, and the share of the source's images it flags is
reported: what a clinic whose images are not in the training data would see.

    python -m scripts.ood_report [--cache FOLDER] [--json FILE] [--kinds frozen224 ...]

It needs ../shared/data/dermoscopy (and ../shared/keras for the frozen weights); without them
it says so and exits.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core import config
from core.inputs import images
from core.modelling.ood import OOD_FILE, evaluate_detector, fit_ood
from core.modelling.ood_set import kind_of, non_dermoscopy_images
from core.storage import spreadsheet

SHARED = config.REPO_ROOT.parent / "shared"
DATA = SHARED / "data" / "dermoscopy"
DEFAULT_RUN = config.REPO_ROOT / "models" / "20261128-065433-mobilenet-v2-c0e8"
KINDS = ("frozen224", "frozen160", "tuned160")
PARTS = (0.7, 0.15, 0.15)


def frozen_forward(size: int):
    """Frozen ImageNet MobileNetV2, average-pooled; its inputs are scaled to [-1, 1]."""
    import keras
    import tensorflow as tf

    from core.modelling.model import imagenet_file_name, keras_weights_dir

    # The 160 px file is the one cached; the convolution weights are the same at any size.
    weights = keras_weights_dir() / imagenet_file_name("mobilenet_v2", 160)
    backbone = keras.applications.MobileNetV2(
        include_top=False, weights=str(weights), input_shape=(size, size, 3), pooling="avg"
    )

    # Traced once, fed uint8 batches: scaling all images to float up front would take 13 GB.
    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def forward(batch):
        return backbone(tf.cast(batch, tf.float32) / 127.5 - 1, training=False)

    def extract(arrays: np.ndarray) -> np.ndarray:
        starts = range(0, len(arrays), 64)
        return np.concatenate([forward(arrays[start : start + 64]).numpy() for start in starts])

    return extract


def tuned_forward():
    import keras

    from core.serving.inference import forward_in_batches, make_forward

    forward = make_forward(keras.saving.load_model(DEFAULT_RUN / "model.keras"), tta=False)
    return lambda arrays: forward_in_batches(forward, arrays)[1]


def compute_features(kind: str, metadata: pd.DataFrame, others: list) -> dict[str, np.ndarray]:
    size = int(kind[-3:])
    extract = tuned_forward() if kind.startswith("tuned") else frozen_forward(size)
    paths = [DATA / "images" / f"{name}.jpg" for name in metadata.image_name]
    dermoscopy = extract(np.stack(images.decode_many(paths, size)))
    other = extract(np.stack([images.resize_for_model(image, size) for _, image in others]))
    return {"dermoscopy": dermoscopy, "other": other}


def features(kind: str, metadata: pd.DataFrame, others: list, cache: Path | None) -> dict:
    """Features of both sets, from the cache folder when it has them (they take minutes)."""
    path = cache / f"ood_features_{kind}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as stored:
            return dict(stored)
    computed = compute_features(kind, metadata, others)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **computed)
    return computed


def parts(kind: str, metadata: pd.DataFrame) -> np.ndarray:
    """train/val/test (or none) per image, in metadata order."""
    if kind.startswith("tuned"):
        split = spreadsheet.read_csv(DEFAULT_RUN / "split.csv")
        joined = metadata[["image_name"]].merge(split, on="image_name", how="left")
        return joined["split"].fillna("none").to_numpy()
    draws = np.random.default_rng(0).random(len(metadata))
    edges = np.cumsum(PARTS)[:2]
    return np.where(draws < edges[0], "train", np.where(draws < edges[1], "val", "test"))


def score_ms(model, feature: np.ndarray) -> float:
    """Median milliseconds to score one image, as the Predict page does."""
    times = []
    for _ in range(200):
        start = time.perf_counter()
        model.score(feature[None, :])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def held_out_sources(dermoscopy, split, sources, other) -> dict[str, float]:
    """Refit without each source; the share of that source's images flagged."""
    shares = {}
    for source in sorted(set(sources)):
        kept = sources != source
        model = fit_ood(dermoscopy[kept & (split == "train")], dermoscopy[kept & (split == "val")])
        shares[source] = float(np.mean(model.score(dermoscopy[~kept]) > model.threshold))
        shares[f"{source} (non-dermoscopy flagged)"] = float(
            np.mean(model.score(other) > model.threshold)
        )
    return shares


def measure(data: dict, split: np.ndarray, sources: np.ndarray, names: list) -> dict:
    dermoscopy, other = data["dermoscopy"], data["other"]
    model = fit_ood(dermoscopy[split == "train"], dermoscopy[split == "val"])
    report = evaluate_detector(model, dermoscopy[split == "test"], other)
    report["val_flagged"] = float(
        np.mean(model.score(dermoscopy[split == "val"]) > model.threshold)
    )
    if np.any(split == "none"):
        unseen = dermoscopy[split == "none"]
        report["unseen_by_model_flagged"] = float(np.mean(model.score(unseen) > model.threshold))
    missed = pd.Series(model.score(other) <= model.threshold).groupby([kind_of(n) for n in names])
    report["missed_by_kind"] = {key: float(value) for key, value in missed.mean().items()}
    report["held_out_source_flagged"] = held_out_sources(dermoscopy, split, sources, other)
    report["score_ms_one_image"] = score_ms(model, other[0])
    report["ood_npz_kib"] = saved_kib(model)
    report["method"] = model.method
    return report


def saved_kib(model) -> float:
    with tempfile.TemporaryDirectory() as folder:
        model.save(Path(folder))
        return (Path(folder) / OOD_FILE).stat().st_size / 1024


def print_table(reports: dict[str, dict]) -> None:
    print("| features | non-dermoscopy flagged | dermoscopy val / test flagged | AUROC |")
    print("|---|---|---|---|")
    for kind, report in reports.items():
        print(
            f"| {kind} | {report['non_dermoscopy_flagged']:.1%} | {report['val_flagged']:.1%} / "
            f"{report['dermoscopy_flagged']:.1%} | {report['auroc']:.4f} |"
        )
    for kind, report in reports.items():
        print(f"\n{kind}: held-out source flagged (non-dermoscopy flagged by that refit)")
        for source, share in report["held_out_source_flagged"].items():
            print(f"  {source}: {share:.1%}")
        if "unseen_by_model_flagged" in report:
            unseen = report["unseen_by_model_flagged"]
            print(f"  images not in the default model's split.csv: {unseen:.1%}")
        misses = ", ".join(f"{key} {value:.0%}" for key, value in report["missed_by_kind"].items())
        print(f"  missed by kind: {misses}")
        print(f"  score, one image: {report['score_ms_one_image']:.3f} ms")
        print(f"  ood.npz: {report['ood_npz_kib']:.0f} KiB; method: {report['method']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache",
        type=Path,
        help="folder to keep computed features in (empty it after changing the set or model)",
    )
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    arguments = parser.parse_args()
    if not (DATA / "metadata.csv").is_file():
        print(f"skipped: the shared dermoscopy data ({DATA}) is absent")
        return
    if (SHARED / "keras").is_dir():
        # Before keras is imported: the shared cache holds the ImageNet weights, offline.
        os.environ.setdefault("KERAS_HOME", str(SHARED / "keras"))
    metadata = pd.read_csv(DATA / "metadata.csv", keep_default_na=False)
    others = non_dermoscopy_images()
    names = [name for name, _ in others]
    sources = metadata["source"].to_numpy()
    reports = {}
    for kind in arguments.kinds:
        data = features(kind, metadata, others, arguments.cache)
        reports[kind] = measure(data, parts(kind, metadata), sources, names)
    print_table(reports)
    if arguments.json:
        arguments.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
