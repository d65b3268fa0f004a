"""The app server's memory while a visitor uses it in Chromium, as the hosts would count it.

One Streamlit server, serving the benchmark's run from scratch folders, is driven through one
image with its Grad-CAM, a ZIP of 20 images, History and Metrics. Its resident memory is read
from /proc: idle once Home has rendered, and the high-water mark (VmHWM) at the end.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import Settings, Skipped, status_bytes
from bench.report import Figure, Goal
from core import config
from core.storage import runs

# Streamlit Community Cloud's smaller allowance; an HF Space's free tier has far more.
MEMORY_GOAL_BYTES = 1.5 * 1024**3
SERVER_START_SECONDS = 120
PAGE_TIMEOUT_MS = 300_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def app_command(port: int) -> list[str]:
    """`streamlit run Home.py` on a local port, as the benchmark and the browser test serve it."""
    return [
        *(sys.executable, "-m", "streamlit", "run", "Home.py"),
        *("--server.headless", "true", "--server.address", "127.0.0.1"),
        *("--server.port", str(port), "--browser.gatherUsageStats", "false"),
        # Nothing is edited meanwhile, and watching files costs CPU.
        *("--server.fileWatcherType", "none"),
        # Hide the developer-only Deploy button, so screenshots show what users see.
        *("--client.toolbarMode", "viewer"),
    ]


def app_folders(settings: Settings) -> dict[str, str]:
    """Scratch models, data, cache and database, with the benchmark's run active."""
    root = settings.work_dir / "app-memory"
    models = root / "models"
    shutil.copytree(settings.run.folder, models / settings.run.run_id)
    runs.set_active(settings.run.run_id, models)
    return {
        "DERMO_MODELS_DIR": str(models),
        "DERMO_DATA_ROOT": str(root / "data"),
        "DERMO_CACHE_DIR": str(root / "cache"),
        "DERMO_DB_PATH": str(root / "app.duckdb"),
    }


@contextmanager
def served_app(settings: Settings) -> Iterator[tuple[str, int]]:
    """(URL, server pid) of the app, single-user, on a free local port."""
    environment = {**os.environ, **app_folders(settings)}
    environment.pop("DERMO_ADMIN_SECRET", None)
    port = free_port()
    server = subprocess.Popen(
        app_command(port),
        cwd=config.REPO_ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url)
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_until_healthy(url: str) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the app did not answer at {url} within {SERVER_START_SECONDS} s")


def image_zip(settings: Settings, count: int) -> tuple[Path, Path]:
    """(one image, a ZIP of `count` others) from the benchmark's data."""
    images = sorted(settings.images_dir.glob("*.jpg"))[: count + 1]
    if len(images) < count + 1:
        raise Skipped(f"needs {count + 1} JPEG images in {settings.images_dir}")
    archive = settings.work_dir / "app-memory-images.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for image in images[1:]:
            zipped.write(image, image.name)
    return images[0], archive


# Path under the app's URL -> the page's title.
PAGES = {"": "Dermoscopy classifier", "History": "History", "Metrics": "Metrics"}


def visit(url: str, paths: tuple[str, ...]) -> None:
    """Open each page in Chromium and wait until its title is shown."""
    from playwright.sync_api import expect

    from scripts.predict_in_browser import chromium_page

    with chromium_page(1400, 900) as page:
        for path in paths:
            page.goto(f"{url}/{path}")
            expect(page.get_by_role("heading", name=PAGES[path], exact=True)).to_be_visible(
                timeout=PAGE_TIMEOUT_MS
            )
            expect(page.get_by_test_id("stException")).to_have_count(0)


def app_memory(settings: Settings) -> list[Figure]:
    try:
        from scripts.predict_in_browser import chromium_path, predict

        chromium_path()
    except (ImportError, SystemExit) as missing:
        raise Skipped(f"needs Playwright and Chromium ({missing})") from None

    count = settings.size(20, 2)
    image, archive = image_zip(settings, count)
    with served_app(settings) as (url, pid):
        visit(url, ("",))
        idle = status_bytes("VmRSS", pid)
        predict(url, [image, archive])
        visit(url, ("History", "Metrics"))
        peak, after = status_bytes("VmHWM", pid), status_bytes("VmRSS", pid)
    members = len(settings.run.card.members) or 1
    return [
        Figure(
            group="app_memory",
            name=f"server peak RSS: one image + Grad-CAM, a {count}-image ZIP, History, Metrics",
            value=peak / 1024**2,
            baseline=idle / 1024**2,
            unit="MiB",
            baseline_name="the same server idle, after Home",
            goal=Goal("value", "<=", MEMORY_GOAL_BYTES / 1024**2),
            details={"rss_after_mib": after / 1024**2, "members": members},
        )
    ]
