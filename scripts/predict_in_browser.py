"""Predict images through a running app in Chromium, as a visitor would, and time each one.

    python scripts/predict_in_browser.py URL IMAGE [IMAGE ...]

Each image is uploaded on a freshly loaded Predict page; the time runs from choosing the file
to the calibrated probability on the page, then the Grad-CAM heat map is awaited too, so the
server has done all of a prediction's work when this returns. The first image also loads
TensorFlow and the model in the server. Prints those seconds, one per image, on one line.

Needs playwright (requirements-dev.txt) and Debian's Chromium (`make chromium`).
`scripts/container-check.sh` uses it to measure the app's memory once it has predicted.
"""

import argparse
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

# Playwright cannot download its own browser here: it drives the system's Chromium, without
# the background requests that a machine with no internet refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The first prediction loads TensorFlow and the model: minutes on a small, busy machine.
TIMEOUT_MS = 300_000


def chromium_path() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium: `make chromium` installs it")
    return chromium


@contextmanager
def chromium_page(width: int = 1280, height: int = 800) -> Iterator[Page]:
    """A page of headless Chromium, closed on leaving."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def predict(url: str, images: list[Path]) -> list[float]:
    seconds = []
    with chromium_page() as page:
        for image in images:
            page.goto(f"{url.rstrip('/')}/Predict")
            upload = page.locator("input[type=file]")
            expect(upload).to_be_attached(timeout=TIMEOUT_MS)
            started = time.monotonic()
            upload.set_input_files(image)
            expect(page.get_by_text("Malignant probability (calibrated)")).to_be_visible(
                timeout=TIMEOUT_MS
            )
            seconds.append(time.monotonic() - started)
            heat_map = page.get_by_test_id("stImage").filter(has_text="Grad-CAM toward")
            expect(heat_map.locator("img")).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.get_by_test_id("stException")).to_have_count(0)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the app's address, e.g. http://127.0.0.1:8501")
    parser.add_argument("images", nargs="+", type=Path, help="images to upload, one at a time")
    arguments = parser.parse_args()
    print(" ".join(f"{seconds:.2f}" for seconds in predict(arguments.url, arguments.images)))


if __name__ == "__main__":
    main()
