"""The benchmark's report: structure, ratios and goals (not the speed goals themselves)."""

import io
import json
import math
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from bench.report import Figure, Goal, finite, machine, table
from bench.upload_probe import hostile_zip
from core import config

EXPECTED_GROUPS = {
    "single",
    "many",
    "cli",
    "memory",
    "serving_memory",
    "archive",
    "cache",
    "fine_tune",
    "stream_scale",
    "history",
    "metrics",
}


def test_ratio_reads_as_a_speedup_for_times():
    figure = Figure("single", "latency", 10.0, 50.0, "ms", "naive", speedup=True)
    assert figure.ratio == pytest.approx(5.0)


def test_ratio_is_value_over_baseline_otherwise():
    goal = Goal("ratio", ">=", 0.85)
    figure = Figure("many", "throughput", 90.0, 100.0, "img/s", "raw", goal=goal)
    assert figure.ratio == pytest.approx(0.9)
    assert figure.passed is True


def test_goals_on_value_and_difference():
    assert Goal("value", "<", 300).met(299.0, 1.0, None)
    assert not Goal("value", "<", 300).met(300.0, 1.0, None)
    assert Goal("difference", "<=", 0.005).met(0.801, 0.804, None)
    assert not Goal("difference", "<=", 0.005).met(0.80, 0.81, None)


def test_figure_without_goal_has_no_verdict_and_zero_baseline_no_ratio():
    figure = Figure("app", "imports", 0, 0, "", "none")
    assert figure.ratio is None
    assert figure.passed is None
    assert "imports" in table([figure])


def test_bad_goal_is_refused():
    with pytest.raises(ValueError, match="measure"):
        Goal("speed", ">=", 1)


def test_json_payload_has_no_nan():
    assert finite({"a": [float("nan"), 1.0], "b": float("inf")}) == {"a": [None, 1.0], "b": None}


def test_machine_names_cpu_cores_and_versions():
    description = machine()
    assert description["cpu"]
    assert description["cores"] >= 1
    assert "python" in description["versions"]


@pytest.mark.slow
def test_epoch_probe_reports_speed_and_peak_memory_of_a_streamed_epoch(tmp_path):
    from core.train import image_cache

    folder = image_cache.cache_folder(32, "bilinear", tmp_path)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    paths = [image_cache.image_path(folder, f"{index:064x}") for index in range(40)]
    for path in paths:
        image_cache.write_image(path, image)
    file_list = tmp_path / "files.txt"
    file_list.write_text("\n".join(str(path) for path in paths))
    completed = subprocess.run(
        [sys.executable, "-m", "bench.epoch_probe", "stream", str(file_list), "32", "8"],
        cwd=config.REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["images"] == 40
    assert result["images_per_second"] > 0 and result["seconds"] > 0
    assert result["peak_rss"] > 100 * 1024**2  # TensorFlow alone takes more than this.


def test_upload_probe_zip_is_tiny_and_each_scan_just_under_the_pixel_limit():
    archive = hostile_zip()
    assert len(archive) < 10_000
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        scans = [Image.open(opened.open(name)) for name in opened.namelist()]
    assert len(scans) == 4
    for scan in scans:
        assert scan.mode == "I;16" and scan.width * scan.height <= config.MAX_IMAGE_PIXELS
        assert scan.width * scan.height > 0.95 * config.MAX_IMAGE_PIXELS


@pytest.mark.slow
def test_quick_benchmark_reports_every_figure_with_a_ratio(tmp_path):
    results = tmp_path / "results.json"
    environment = {**os.environ, "DERMO_DB_PATH": str(tmp_path / "app.duckdb")}
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--tiny-model", "--json", str(results)],
        cwd=config.REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        # The app_memory figure starts the app and Chromium: about a minute of it.
        timeout=480,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "ratio" in completed.stdout and "baseline" in completed.stdout
    report = json.loads(results.read_text())
    assert report["quick"] is True and report["errors"] == {}
    assert {"cpu", "cores", "versions"} <= set(report["machine"])
    groups = {figure["group"] for figure in report["figures"]}
    assert groups >= EXPECTED_GROUPS
    assert "app" in groups or "app" in report["skipped"]
    assert "app_memory" in groups or "app_memory" in report["skipped"]
    for figure in report["figures"]:
        assert {"name", "value", "baseline", "unit", "goal", "passed"} <= set(figure)
        assert math.isfinite(figure["value"]) and math.isfinite(figure["baseline"])
        if figure["baseline"]:
            assert figure["ratio"] is not None and math.isfinite(figure["ratio"])
        if figure["goal"] is not None:
            assert isinstance(figure["passed"], bool)


def test_runtimes_benchmark_skips_and_says_what_to_install(monkeypatch):
    from bench import runtimes
    from bench.common import Skipped

    monkeypatch.setattr(runtimes, "missing_packages", lambda engine: ["absent"])
    with pytest.raises(Skipped, match="pip install onnxruntime tf2onnx ai-edge-litert"):
        runtimes.runtimes(None)
