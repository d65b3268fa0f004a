"""TensorFlow's traced forward pass against XLA, ONNX Runtime and LiteRT on the same pipeline.

Only the forward pass changes: decoding, calibration and the OOD score stay `Predictor`'s, so
each figure is the path the Predict page and `python -m core predict` take with another engine
under it. The exported engines run the whole traced function (the TTA views, the model, the
mean over views and the pixel detail), exported from it: ONNX Runtime with tf2onnx, LiteRT
(ai-edge-litert) with TensorFlow's own converter. Both are optional, not in requirements.txt:
an engine whose packages are missing is left out, and the benchmark is skipped when neither
is installed.
"""

import copy
import importlib.util
import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench.common import Settings, Skipped, image_bytes, image_folder, predictor_for, timed
from bench.engines import FORWARDS
from bench.report import Figure, Goal
from core import config
from core.serving.inference import find_images, make_forward, view_count

PACKAGES = {"onnxruntime": ("onnxruntime", "tf2onnx"), "litert": ("ai_edge_litert",)}
INSTALL = "pip install onnxruntime tf2onnx ai-edge-litert"
# The serving issue's aims: one image with the card's TTA on 2 cores, and the largest
# difference of probabilities that would let another runtime replace TensorFlow's.
TTA_AIM_MS = 300
AGREEMENT = 1e-4
# An engine this many times slower than TensorFlow on one image cannot be adopted: it is left
# out of the folder runs, where it would take minutes.
TOO_SLOW = 3
MEBIBYTE = 1024**2


def missing_packages(engine: str) -> list[str]:
    return [package for package in PACKAGES[engine] if importlib.util.find_spec(package) is None]


def export_onnx(forward, path: Path) -> None:
    import tf2onnx

    # tf2onnx logs every rewrite it applies at INFO.
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf2onnx.convert.from_function(
        forward, input_signature=forward.input_signature, opset=17, output_path=str(path)
    )


def export_litert(forward, path: Path) -> None:
    concrete = forward.get_concrete_function()
    path.write_bytes(
        tf.lite.TFLiteConverter.from_concrete_functions([concrete], forward).convert()
    )


EXPORTERS = {"onnxruntime": (export_onnx, ".onnx"), "litert": (export_litert, ".tflite")}


def with_xla(forward):
    """The same traced function, compiled by XLA."""
    return tf.function(
        forward.python_function, input_signature=forward.input_signature, jit_compile=True
    )


def with_forwards(predictor, forwards: dict):
    """A copy of the loaded predictor that differs only in its forward pass (per TTA)."""
    engine = copy.copy(predictor)
    engine._forwards = forwards
    return engine


def build_engines(settings: Settings, predictor) -> tuple[dict, dict, dict]:
    """Predictors by engine, the exported files with TTA by engine, export seconds."""
    plain = {tta: make_forward(predictor.model, tta, predictor.tta_views) for tta in (False, True)}
    engines = {
        "tensorflow": predictor,
        "xla": with_forwards(predictor, {tta: with_xla(f) for tta, f in plain.items()}),
    }
    exported, export_seconds = {}, {}
    folder = settings.work_dir / "runtimes"
    folder.mkdir(exist_ok=True)
    for engine, (export, suffix) in EXPORTERS.items():
        if missing_packages(engine):
            continue
        paths = {tta: folder / f"forward-tta-{tta}{suffix}" for tta in plain}
        export_seconds[engine], _ = timed(
            lambda export=export, paths=paths: [export(plain[tta], paths[tta]) for tta in paths]
        )
        load = FORWARDS[engine]
        engines[engine] = with_forwards(
            predictor, {tta: load(path) for tta, path in paths.items()}
        )
        exported[engine] = paths[True]
    return engines, exported, export_seconds


def warm_up(predictor, tta: bool, totals: list[int]) -> None:
    """One call at each batch size that runs over `totals` images use: XLA compiles once
    for each shape, and that belongs to loading, not to the timings."""
    per_call = predictor._images_per_call(tta)
    sizes = {min(per_call, total) for total in totals} | {total % per_call for total in totals}
    size = predictor.image_size
    for count in sizes - {0}:
        predictor.predict_arrays(np.zeros((count, size, size, 3), np.uint8), tta)


def probabilities_of(predictions) -> np.ndarray:
    errors = [prediction.error for prediction in predictions if prediction.error]
    if errors:
        raise RuntimeError(f"{len(errors)} images failed: {errors[0]}")
    return np.array([prediction.probability for prediction in predictions])


def single_latency(engines: dict, inputs: list, rounds: int):
    """Milliseconds of every `predict_bytes` call with the card's TTA (TensorFlow also with
    TTA off), engine after engine within each round; the last round's probabilities."""
    runs = {name: (engine, None) for name, engine in engines.items()}
    runs["tensorflow, TTA off"] = (engines["tensorflow"], False)
    durations: dict[str, list[float]] = {name: [] for name in runs}
    probabilities: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, (engine, tta) in runs.items():
            predictions = []
            for item in inputs:
                seconds, prediction = timed(
                    lambda item=item, engine=engine, tta=tta: engine.predict_bytes(*item, tta)
                )
                durations[name].append(seconds * 1000)
                predictions.append(prediction)
            probabilities[name] = probabilities_of(predictions)
    return durations, probabilities


def folder_runs(engines: dict, files: list[str], tta: bool, rounds: int):
    """Seconds of `predict_many` over the folder per engine, interleaved; probabilities."""
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    probabilities: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, engine in engines.items():
            duration, predictions = timed(
                lambda engine=engine: list(engine.predict_many(((f, f) for f in files), tta))
            )
            seconds[name].append(duration)
            probabilities[name] = probabilities_of(predictions)
    return seconds, probabilities


def largest_difference(probabilities: dict, name: str) -> float:
    return float(np.max(np.abs(probabilities[name] - probabilities["tensorflow"])))


def probe(engine: str, model: Path, folder: Path, predictor) -> dict:
    """`bench.runtime_probe` in a fresh process: load seconds, forward seconds, peak RSS."""
    command = [sys.executable, "-m", "bench.runtime_probe", engine, str(model), str(folder)]
    command += [str(predictor.image_size), predictor.resample]
    command += [str(predictor._images_per_call(True)), predictor.tta_views]
    output = subprocess.run(
        command, cwd=config.REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def probe_runs(models: dict, folder: Path, predictor, rounds: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            results[name].append(probe(name, model, folder, predictor))
    return results


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(result[key] for result in results)


def runtimes(settings: Settings) -> list[Figure]:
    """One image with the card's TTA, folders, agreement and peak RSS, engine by engine."""
    missing = {engine: missing_packages(engine) for engine in PACKAGES}
    if all(missing.values()):
        raise Skipped(f"no lighter runtime installed ({INSTALL} to compare them)")
    predictor = predictor_for(settings.run)
    engines, exported, export_seconds = build_engines(settings, predictor)
    rounds = settings.size(3, 1)
    inputs = image_bytes(settings, settings.size(10, 2))
    plain_files = find_images([str(image_folder(settings, settings.size(200, 16)))])
    tta_folder = image_folder(settings, settings.size(32, 8))
    tta_files = find_images([str(tta_folder)])
    agreement_files = find_images([str(image_folder(settings, settings.size(500, 16)))])
    for engine in engines.values():
        warm_up(engine, True, [1])
    warm_up(predictor, False, [1])

    durations, single_probabilities = single_latency(engines, inputs, rounds)
    latency = {name: statistics.median(values) for name, values in durations.items()}
    views = view_count(True, predictor.tta_views)
    figures = [
        Figure(
            group="runtimes",
            name=f"tensorflow: one image, card's TTA ({views} views), median",
            value=latency["tensorflow"],
            baseline=latency["tensorflow, TTA off"],
            unit="ms",
            baseline_name="the same, TTA off",
            goal=Goal("value", "<=", TTA_AIM_MS),
            details={"images": len(inputs), "rounds": rounds},
        )
    ]
    left_out = [name for name in engines if latency[name] > TOO_SLOW * latency["tensorflow"]]
    for name in engines:
        if name == "tensorflow":
            continue
        details = {
            "max_abs_probability_difference": largest_difference(single_probabilities, name),
            "export_seconds": export_seconds.get(name),
        }
        if name in left_out:
            details["left_out"] = f"over {TOO_SLOW}x TensorFlow's latency: no folder runs"
        figures.append(
            Figure(
                group="runtimes",
                name=f"{name}: one image, card's TTA, median",
                value=latency[name],
                baseline=latency["tensorflow"],
                unit="ms",
                baseline_name="TensorFlow, traced",
                speedup=True,
                goal=Goal("value", "<=", TTA_AIM_MS),
                details=details,
            )
        )

    fast = {name: engine for name, engine in engines.items() if name not in left_out}
    for engine in fast.values():
        warm_up(engine, False, [len(plain_files), len(agreement_files)])
        warm_up(engine, True, [len(tta_files)])
    folders = {
        f"folder of {len(plain_files)}, TTA off": folder_runs(fast, plain_files, False, rounds),
        f"folder of {len(tta_files)}, card's TTA": folder_runs(fast, tta_files, True, rounds),
    }
    _, agreement = folder_runs(fast, agreement_files, False, 1)
    for name in fast:
        if name == "tensorflow":
            continue
        for label, (seconds, _) in folders.items():
            count = len(plain_files) if "TTA off" in label else len(tta_files)
            figures.append(
                Figure(
                    group="runtimes",
                    name=f"{name}: {label}, predict_many",
                    value=count / statistics.median(seconds[name]),
                    baseline=count / statistics.median(seconds["tensorflow"]),
                    unit="img/s",
                    baseline_name="TensorFlow, traced",
                    details={
                        "seconds": seconds[name],
                        "tensorflow_seconds": seconds["tensorflow"],
                    },
                )
            )
        for label, probabilities, count in (
            ("TTA off", agreement, len(agreement_files)),
            ("card's TTA", folders[f"folder of {len(tta_files)}, card's TTA"][1], len(tta_files)),
        ):
            figures.append(
                Figure(
                    group="runtimes",
                    name=f"{name}: max |probability difference|, {count} images, {label}",
                    value=largest_difference(probabilities, name),
                    baseline=0.0,
                    unit="",
                    baseline_name="TensorFlow's calibrated probabilities",
                    goal=Goal("value", "<=", AGREEMENT),
                )
            )
    return figures + memory_figures(settings, predictor, exported, left_out, tta_folder, rounds)


def memory_figures(settings, predictor, exported: dict, left_out: list, folder: Path, rounds):
    """Peak RSS and load time of each engine alone, in fresh processes, over the TTA folder."""
    models = {"tensorflow": settings.run.model_path}
    models.update({name: path for name, path in exported.items() if name not in left_out})
    results = probe_runs(models, folder, predictor, rounds)
    figures = []
    for name in models:
        if name == "tensorflow":
            continue
        figures += [
            Figure(
                group="runtimes",
                name=f"{name}: peak RSS alone, fresh process, {folder.name} with TTA",
                value=median_of(results[name], "peak_rss") / MEBIBYTE,
                baseline=median_of(results["tensorflow"], "peak_rss") / MEBIBYTE,
                unit="MiB",
                baseline_name="TensorFlow + Keras, traced",
                details={"runs": results[name], "tensorflow_runs": results["tensorflow"]},
            ),
            Figure(
                group="runtimes",
                name=f"{name}: import + load, fresh process",
                value=median_of(results[name], "load_seconds"),
                baseline=median_of(results["tensorflow"], "load_seconds"),
                unit="s",
                baseline_name="TensorFlow + Keras, load the .keras",
                speedup=True,
            ),
        ]
    return figures
