"""Prediction benchmarks: one image, a folder, the command line, and memory over time."""

import gc
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from bench.common import (
    Settings,
    Skipped,
    image_bytes,
    image_folder,
    predictor_for,
    resident_bytes,
    run_probe,
    time_each,
    timed,
)
from bench.report import Figure, Goal
from core import config
from core.inputs import images
from core.serving.inference import decode_for_model, find_images
from core.train.recipe import uint8_function

BATCH_SIZE = 32
MEBIBYTE = 1024**2

# The floor that `python -m core predict` is compared with: the least code that loads the same
# .keras file, decodes in threads and runs batched traced inference.
MINIMAL_PREDICT_SCRIPT = """
import concurrent.futures
import pathlib
import sys

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

model = keras.saving.load_model(sys.argv[1])
size = model.input_shape[1]
files = sorted(path for path in pathlib.Path(sys.argv[2]).rglob("*.jpg"))


def load(path):
    with Image.open(path) as image:
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8)


# The first output is the malignant probability (a diagnosis model has a second one).
first = keras.Model(model.input, model.outputs[0])
forward = tf.function(
    lambda x: first(tf.cast(x, tf.float32), training=False),
    input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)],
)
with concurrent.futures.ThreadPoolExecutor() as pool, open(sys.argv[3], "w") as out:
    arrays = list(pool.map(load, files))
    for start in range(0, len(arrays), 32):
        probabilities = forward(np.stack(arrays[start : start + 32])).numpy()[:, 0]
        for path, probability in zip(files[start : start + 32], probabilities):
            out.write(f"{path},{probability:.6f}\\n")
"""


def milliseconds(durations: list[float]) -> float:
    return statistics.median(durations) * 1000


def single_image(settings: Settings) -> list[Figure]:
    """Decoded bytes to calibrated probability, one image at a time (TTA off)."""
    predictor = predictor_for(settings.run)
    inputs = image_bytes(settings, settings.size(50, 10))
    for name, data in inputs[:5]:
        predictor.predict_bytes(name, data, tta=False)
    pipeline = time_each(lambda item: predictor.predict_bytes(*item, tta=False), inputs)
    decoded = [
        decode_for_model(data, predictor.image_size, predictor.resample) for _, data in inputs
    ]
    decode = time_each(
        lambda item: decode_for_model(item[1], predictor.image_size, predictor.resample), inputs
    )
    batches = [item.array[None] for item in decoded]
    forward = time_each(lambda batch: predictor.predict_arrays(batch, tta=False), batches)
    for batch in batches[:3]:
        predictor.model.predict(batch, verbose=0)
    naive = time_each(lambda batch: predictor.model.predict(batch, verbose=0), batches)
    return [
        Figure(
            group="single",
            name="predict_bytes latency, median",
            value=milliseconds(pipeline),
            baseline=milliseconds(naive),
            unit="ms",
            baseline_name="model.predict(x)",
            speedup=True,
            goal=Goal("ratio", ">=", 5),
            details={
                "images": len(inputs),
                "decode_resize_ms": milliseconds(decode),
                "traced_forward_calibration_ood_ms": milliseconds(forward),
                "predict_bytes_p90_ms": float(np.percentile(pipeline, 90) * 1000),
            },
        )
    ]


def raw_forward_seconds(forward, arrays: np.ndarray) -> float:
    seconds, _ = timed(
        lambda: [
            forward(arrays[start : start + BATCH_SIZE]).numpy()
            for start in range(0, len(arrays), BATCH_SIZE)
        ]
    )
    return seconds


def predict_many_seconds(predictor, files: list[str]) -> float:
    seconds, predictions = timed(
        lambda: list(predictor.predict_many(((f, f) for f in files), False))
    )
    errors = [prediction.error for prediction in predictions if prediction.error]
    if errors:
        raise RuntimeError(f"predict_many failed on {len(errors)} images: {errors[0]}")
    return seconds


def many_images(settings: Settings) -> list[Figure]:
    """A folder through predict_many vs the raw traced forward pass on pre-decoded arrays."""
    predictor = predictor_for(settings.run)
    files = find_images([str(image_folder(settings, settings.size(500, 64)))])
    arrays = np.stack(images.decode_many(files, predictor.image_size, predictor.resample))
    # The model up to its first output, the malignant probability, like the minimal script.
    first = keras.Model(predictor.model.input, predictor.model.outputs[0])
    forward = uint8_function(first, predictor.image_size)
    forward(arrays[:BATCH_SIZE])
    pipeline, raw = [], []
    for _ in range(settings.size(3, 1)):
        pipeline.append(predict_many_seconds(predictor, files))
        raw.append(raw_forward_seconds(forward, arrays))
    pipeline_seconds, raw_seconds = statistics.median(pipeline), statistics.median(raw)
    figures = [
        Figure(
            group="many",
            name="predict_many throughput",
            value=len(files) / pipeline_seconds,
            baseline=len(files) / raw_seconds,
            unit="img/s",
            baseline_name="traced forward, pre-decoded, batch 32",
            goal=Goal("ratio", ">=", 0.85),
            details={"images": len(files), "pipeline_seconds": pipeline, "raw_seconds": raw},
        )
    ]
    return figures + startup_figures(settings, pipeline_seconds)


def startup_figures(settings: Settings, pipeline_seconds: float) -> list[Figure]:
    """TensorFlow import and model load in a fresh process, next to predicting the folder."""
    startup = run_probe("bench.startup_probe", str(settings.run.folder))
    names = {
        "tensorflow_import_seconds": "TensorFlow import (fresh process)",
        "keras_core_import_seconds": "Keras + core.serving.inference import",
        "model_load_seconds": "Predictor load (.keras + OOD)",
        "warm_up_seconds": "Predictor warm-up (tracing)",
    }
    return [
        Figure(
            group="many",
            name=name,
            value=startup[key],
            baseline=pipeline_seconds,
            unit="s",
            baseline_name="predict_many over the folder",
        )
        for key, name in names.items()
    ]


def wall_seconds(command: list[str]) -> float:
    seconds, _ = timed(
        lambda: subprocess.run(
            command, cwd=config.REPO_ROOT, capture_output=True, text=True, check=True
        )
    )
    return seconds


def csv_rows(path: Path) -> int:
    return len(path.read_text().splitlines())


def command_line(settings: Settings) -> list[Figure]:
    """Whole-process `python -m core predict` vs a minimal script doing the same work."""
    folder = image_folder(settings, settings.size(500, 64))
    count = len(find_images([str(folder)]))
    with tempfile.TemporaryDirectory(dir=settings.work_dir) as scratch:
        script = Path(scratch) / "minimal_predict.py"
        script.write_text(MINIMAL_PREDICT_SCRIPT)
        cli_out, minimal_out = Path(scratch) / "cli.csv", Path(scratch) / "minimal.csv"
        cli = [sys.executable, "-m", "core", "predict", "--no-tta", str(folder)]
        cli += ["--model", str(settings.run.folder), "--out", str(cli_out)]
        minimal = [sys.executable, str(script), str(settings.run.model_path), str(folder)]
        minimal.append(str(minimal_out))
        cli_times, minimal_times = [], []
        for _ in range(settings.size(3, 1)):
            cli_times.append(wall_seconds(cli))
            minimal_times.append(wall_seconds(minimal))
        if csv_rows(cli_out) != count + 1 or csv_rows(minimal_out) != count:
            raise RuntimeError(f"expected {count} predictions from both commands")
    return [
        Figure(
            group="cli",
            name="python -m core predict --no-tta, wall",
            value=statistics.median(cli_times),
            baseline=statistics.median(minimal_times),
            unit="s",
            baseline_name="minimal load+decode+traced script",
            goal=Goal("ratio", "<=", 1.25),
            details={"images": count, "cli_seconds": cli_times, "minimal_seconds": minimal_times},
        )
    ]


def memory(settings: Settings) -> list[Figure]:
    """Resident memory after many single predictions vs after the first hundred."""
    predictor = predictor_for(settings.run)
    inputs = image_bytes(settings, settings.size(50, 10))
    early, late = settings.size(100, 20), settings.size(2000, 200)
    for call in range(late):
        name, data = inputs[call % len(inputs)]
        predictor.predict_bytes(name, data, tta=False)
        if call + 1 == early:
            gc.collect()
            early_bytes = resident_bytes()
    gc.collect()
    late_bytes = resident_bytes()
    return [
        Figure(
            group="memory",
            name=f"resident memory after {late} predict_bytes",
            value=late_bytes / MEBIBYTE,
            baseline=early_bytes / MEBIBYTE,
            unit="MiB",
            baseline_name=f"after {early} calls",
            goal=Goal("ratio", "<=", 1.05),
        )
    ]


def tta_median(predictor, inputs) -> float:
    """Median milliseconds of `predict_bytes` with the card's TTA, after one warm-up call."""
    predictor.predict_bytes(*inputs[0])
    return milliseconds(time_each(lambda item: predictor.predict_bytes(*item), inputs))


def ensemble_tta(settings: Settings) -> list[Figure]:
    """One image with the card's TTA through an ensemble, against its first member alone."""
    from core.storage.runs import resolve_run

    if not settings.run.card.is_ensemble:
        raise Skipped(f"run {settings.run.run_id} is not an ensemble (give one with --model)")
    ensemble = predictor_for(settings.run)
    member = predictor_for(resolve_run(settings.run.card.members[0].run_id))
    inputs = image_bytes(settings, settings.size(20, 4))
    medians = [tta_median(predictor, inputs) for predictor in (ensemble, member)]
    return [
        Figure(
            group="ensemble",
            name="one image with the card's TTA, ensemble, median",
            value=medians[0],
            baseline=medians[1],
            unit="ms",
            baseline_name=f"its member {member.run.card.architecture} alone",
            goal=Goal("value", "<", 1500),
            details={"images": len(inputs), "members": len(settings.run.card.members)},
        )
    ]
