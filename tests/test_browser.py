"""End to end in a real browser: Chromium drives the app, served by Streamlit, over every page.

The server runs as a subprocess on a free local port with its own models folder, database,
data root and feature cache. The journey uploads a sample image on Predict, waits for the
probability and the Grad-CAM heat map, finds the stored row on History and checks that no page
shows a Streamlit exception; then it deletes and confirms History rows (selected by clicking
their checkbox cells on the table's canvas), activates another run on Train, downloads a case
report from Predict and reads the PDF's text, evaluates an uploaded ZIP of labelled images on
Metrics, and checks that no page fetched anything from outside the app. Full-page screenshots,
1400 and 400 px wide, go to test-artifacts/; with UPDATE_SCREENSHOTS=1 they also replace the
images in docs/screenshots/.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.app_memory import app_command, free_port
from core import config
from core.storage import runs

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs the playwright package (requirements-dev.txt)"
)


def _find_chromium() -> str | None:
    # Playwright cannot download its own browser here, so it drives Debian's Chromium.
    candidates = ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
    return next((path for path in candidates if path and Path(path).is_file()), None)


CHROMIUM = _find_chromium()
pytestmark = [
    pytest.mark.browser,
    # Without the committed default model, the app's run is trained (`_models_for_the_app`).
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: `make chromium` installs it"),
]

ARTIFACTS_DIR = config.REPO_ROOT / "test-artifacts"
SCREENSHOTS_DIR = config.REPO_ROOT / "docs" / "screenshots"
SAMPLE_IMAGE = config.SAMPLE_DIR / "images" / "ISIC_0024483.jpg"
# 1400 px: the width the app was walked through at (a laptop with the sidebar open).
VIEWPORT = {"width": 1400, "height": 800}
NARROW = 400
# Streamlit's dataframe rows and header are 35 px tall; the selection checkboxes sit in the
# first 30 px of each row.
ROW_PIXELS = 35
CHECKBOX_X = 16
SERVER_START_SECONDS = 90
PAGE_TIMEOUT_MS = 60_000
# The first prediction loads TensorFlow and the model in the server: slow on a busy machine.
PREDICTION_TIMEOUT_MS = 180_000

# True once a script run has finished and its slow parts have drawn: widgets past their loading
# skeletons, tables on their canvas, Plotly charts as SVG and images decoded. Elements in hidden
# tabs never draw, so only visible ones count.
PAGE_SETTLED = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.dataset.testScriptState !== "notRunning") return false;
    const shown = (selector) =>
        [...document.querySelectorAll(selector)].filter((element) => element.checkVisibility());
    return shown('[data-testid="stSkeleton"]').length === 0
        && shown('[data-testid="stDataFrame"]').every(
            (table) => table.querySelector('[data-testid="data-grid-canvas"]'))
        && shown('[data-testid="stPlotlyChart"]').every(
            (chart) => chart.querySelector(".main-svg"))
        && shown("img").every((image) => image.complete && image.naturalWidth > 0);
}"""


def _models_for_the_app(models_dir: Path, request: pytest.FixtureRequest) -> str:
    """Copy the committed default model (else a tiny run) and a second run; return the first.

    The second run, a copy under another id, is there to be activated on the Train page.
    """
    committed = config.REPO_ROOT / "models"
    default, _ = runs.active_run(committed)
    if default is not None and default.run_id == runs.active_run_id(committed):
        source = default.folder
    else:
        run_id = request.getfixturevalue("trained_run")
        source = request.getfixturevalue("app_paths").models_dir / run_id
    shutil.copytree(source, models_dir / source.name)
    copy = models_dir / SECOND_RUN
    shutil.copytree(source, copy)
    card = json.loads((copy / runs.CARD_FILE).read_text())
    (copy / runs.CARD_FILE).write_text(json.dumps({**card, "run_id": SECOND_RUN}))
    runs.set_active(source.name, models_dir)
    return source.name


SECOND_RUN = "20000101-000000-second-copy"


def _wait_until_healthy(server: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"Streamlit exited with {server.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)  # Polling interval, not a wait for the work itself.
    pytest.fail(f"Streamlit did not answer in {SERVER_START_SECONDS} s:\n{log_path.read_text()}")


def _stop(server: subprocess.Popen) -> None:
    # Streamlit runs in its own process group, so this also ends anything it started.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=15)


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, request) -> Iterator[tuple[str, str]]:
    """(URL, active run id) of the app served from temporary folders."""
    root = tmp_path_factory.mktemp("browser_app")
    (root / "models").mkdir()
    (root / "data").mkdir()
    run_id = _models_for_the_app(root / "models", request)
    # Single-user mode whatever this shell sets, so the screenshots do not depend on it.
    inherited = {name: value for name, value in os.environ.items() if name != "DERMO_ADMIN_SECRET"}
    environment = {
        **inherited,
        "DERMO_MODELS_DIR": str(root / "models"),
        "DERMO_DB_PATH": str(root / "app.duckdb"),
        "DERMO_DATA_ROOT": str(root / "data"),
        "DERMO_CACHE_DIR": str(root / "cache"),
    }
    port = free_port()
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    log_path = ARTIFACTS_DIR / "streamlit.log"
    command = app_command(port)
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command,
            cwd=config.REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(server, url, log_path)
        yield url, run_id
    finally:
        _stop(server)


# Every request the browser made to anything but the app itself (a font CDN, say).
EXTERNAL_REQUESTS: list[str] = []


@pytest.fixture(scope="module")
def browser_page(served_app) -> Iterator["sync_api.Page"]:
    # The app's own browser script launches Chromium the same way; it imports playwright,
    # so only once the module-level skip has passed.
    from scripts.predict_in_browser import CHROMIUM_ARGS

    url, _ = served_app
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("request", lambda request: _note_external(request.url, url))
            yield page
        finally:
            browser.close()


def _note_external(requested: str, app_url: str) -> None:
    if not requested.startswith((app_url, "data:", "blob:")):
        EXTERNAL_REQUESTS.append(requested)


def settle(page: "sync_api.Page") -> None:
    """Wait for the current script run to finish drawing and check it raised nothing."""
    page.wait_for_function(PAGE_SETTLED, timeout=PAGE_TIMEOUT_MS, polling=200)
    sync_api.expect(page.get_by_test_id("stException")).to_have_count(0)


def screenshot(page: "sync_api.Page", name: str) -> None:
    """Full-page screenshots 1400 and 400 px wide; README images with UPDATE_SCREENSHOTS=1."""
    for width, suffix in ((VIEWPORT["width"], ""), (NARROW, "-narrow")):
        path = ARTIFACTS_DIR / f"{name}{suffix}.png"
        _capture(page, width, path)
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS_DIR / path.name)
    page.set_viewport_size(VIEWPORT)
    settle(page)


# Narrow screens slide the sidebar away; the capture waits until it is off the page.
SIDEBAR_AWAY = """() => {
    const sidebar = document.querySelector('[data-testid="stSidebar"]');
    return !sidebar || sidebar.getBoundingClientRect().right <= 0;
}"""


def _capture(page: "sync_api.Page", width: int, path: Path) -> None:
    # The app scrolls inside its main element, so a full-page capture would stop at the
    # viewport: grow the viewport to the content instead.
    page.set_viewport_size({"width": width, "height": VIEWPORT["height"]})
    settle(page)
    if width < VIEWPORT["width"]:
        page.wait_for_function(SIDEBAR_AWAY, timeout=PAGE_TIMEOUT_MS, polling=100)
    height = page.get_by_test_id("stMain").evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": width, "height": max(height, VIEWPORT["height"])})
    settle(page)
    page.screenshot(path=path)


def open_page(page: "sync_api.Page", name: str, heading: str | None = None) -> None:
    """Follow the sidebar link (one browser session throughout) and wait for the page."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=name, exact=True).click()
    sync_api.expect(page.get_by_role("heading", name=heading or name, exact=True)).to_be_visible(
        timeout=PAGE_TIMEOUT_MS
    )
    settle(page)


def test_every_page_in_a_browser(served_app, browser_page):
    url, run_id = served_app
    page, expect = browser_page, sync_api.expect
    page.goto(url)
    expect(page.get_by_role("heading", name="Dermoscopy classifier")).to_be_visible(
        timeout=PAGE_TIMEOUT_MS
    )
    expect(page.get_by_text(run_id, exact=True)).to_be_visible()
    expect(page.get_by_text("not a diagnostic device")).to_be_visible()
    screenshot(page, "home")

    open_page(page, "Predict")
    page.locator("input[type=file]").set_input_files(SAMPLE_IMAGE)
    expect(page.get_by_text("Malignant probability (calibrated)")).to_be_visible(
        timeout=PREDICTION_TIMEOUT_MS
    )
    expect(page.get_by_test_id("stMetricValue").first).to_contain_text("%")
    heat_map = page.get_by_test_id("stImage").filter(has_text="Grad-CAM toward")
    expect(heat_map.locator("img")).to_be_visible(timeout=PREDICTION_TIMEOUT_MS)
    screenshot(page, "predict")

    open_page(page, "History")
    # The table draws on a canvas; its cells are mirrored in an accessible grid.
    cells = page.get_by_test_id("stDataFrame").locator("td[role=gridcell]")
    expect(cells.get_by_text(SAMPLE_IMAGE.name, exact=True)).to_have_count(1)
    screenshot(page, "history")

    for name in ("Train", "Metrics"):
        open_page(page, name)
        screenshot(page, name.lower())


def history_total(page: "sync_api.Page") -> int:
    """The number of predictions that the History page says match."""
    caption = page.get_by_text(re.compile(r"^\d+ predictions?, newest first")).inner_text()
    return int(caption.split()[0])


def select_history_row(page: "sync_api.Page", row: int) -> None:
    """Tick the selection checkbox of a table row (0 is the top one) on the canvas."""
    table = page.get_by_test_id("stDataFrame").first.bounding_box()
    y = table["y"] + ROW_PIXELS * (row + 1) + ROW_PIXELS / 2
    page.mouse.click(table["x"] + CHECKBOX_X, y)
    settle(page)


def test_history_deletes_only_the_row_selected_then_starts_over(served_app, browser_page):
    page, expect = browser_page, sync_api.expect
    page.goto(served_app[0])
    open_page(page, "Predict")
    others = sorted((config.SAMPLE_DIR / "images").glob("*.jpg"))[1:4]
    page.locator("input[type=file]").set_input_files(others)
    expect(page.get_by_text("Malignant probability (calibrated)")).to_be_visible(
        timeout=PREDICTION_TIMEOUT_MS
    )
    open_page(page, "History")
    before = history_total(page)
    assert before >= 3
    select_history_row(page, 0)
    expect(page.get_by_text("1 prediction selected")).to_be_visible()
    page.get_by_text("Yes, delete them", exact=True).click()
    settle(page)
    page.get_by_role("button", name="Delete selected").click()
    settle(page)
    expect(page.get_by_text("Deleted 1 prediction.")).to_be_visible()
    settle(page)
    assert history_total(page) == before - 1
    # Nothing stays selected or armed: the row that moved up is not deleted by a second click.
    expect(page.get_by_text(re.compile(r"predictions? selected"))).to_have_count(0)
    expect(page.get_by_role("button", name="Delete selected")).to_have_count(0)
    page.get_by_role("button", name="Undo the last delete (1 prediction)").click()
    settle(page)
    expect(page.get_by_text("Restored 1 prediction.")).to_be_visible()
    # The click may land before the rerun starts: settle once the rerun is seen.
    settle(page)
    assert history_total(page) == before


def choose(page: "sync_api.Page", label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label`, as a keyboard user would."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label).last
    box.scroll_into_view_if_needed()
    box.locator("input").click()
    page.keyboard.type(option)
    page.keyboard.press("Enter")
    settle(page)


def test_an_outcome_shows_at_once_and_a_contradiction_is_refused(served_app, browser_page):
    page, expect = browser_page, sync_api.expect
    open_page(page, "History")
    select_history_row(page, 0)
    choose(page, "Confirmed outcome", "benign")
    choose(page, "Diagnosis (optional)", "melanoma")
    page.get_by_role("button", name="Save outcome").click()
    settle(page)
    expect(page.get_by_text("melanoma is a malignant diagnosis")).to_be_visible()
    choose(page, "Confirmed outcome", "malignant")
    page.get_by_role("button", name="Save outcome").click()
    settle(page)
    expect(page.get_by_text("Outcome malignant saved for 1 prediction.")).to_be_visible()
    # The top row's Confirmed and Confirmed diagnosis cells (after File, Result, Probability,
    # Out of distribution and Top diagnosis).
    cells = page.get_by_test_id("stDataFrame").first.locator("td[role=gridcell]")
    expect(cells.nth(5)).to_have_text("malignant")
    expect(cells.nth(6)).to_have_text("melanoma")
    expect(page.get_by_text(re.compile(r"predictions? selected"))).to_have_count(0)


def test_another_run_is_activated_on_the_train_page(served_app, browser_page):
    page, expect = browser_page, sync_api.expect
    open_page(page, "Train")
    choose(page, "Run", SECOND_RUN)
    anyway = page.get_by_text("Activate anyway")
    if anyway.count():  # a tiny stand-in run can be near chance
        anyway.click()
        settle(page)
    page.get_by_role("button", name="Make this run active").click()
    settle(page)
    expect(page.get_by_text(f"Run {SECOND_RUN} is now the active model.")).to_be_visible()
    open_page(page, "Home", "Dermoscopy classifier")
    expect(page.get_by_text(SECOND_RUN, exact=True)).to_be_visible()


def test_the_case_report_downloads_from_predict_as_a_pdf(served_app, browser_page):
    # Imported here: only this test reads PDFs (pypdf is in requirements-dev.txt).
    pypdf = pytest.importorskip("pypdf", reason="needs pypdf (requirements-dev.txt)")
    url, _ = served_app
    page, expect = browser_page, sync_api.expect
    page.goto(url)
    open_page(page, "Predict")
    page.locator("input[type=file]").set_input_files(SAMPLE_IMAGE)
    button = page.get_by_test_id("stDownloadButton").filter(has_text="Case report (PDF)")
    expect(button).to_be_visible(timeout=PREDICTION_TIMEOUT_MS)
    settle(page)
    probability = page.get_by_test_id("stMetricValue").first.inner_text().strip()
    caption = page.get_by_text(re.compile(r"^Model \S+, \d+x\d+ px")).inner_text()
    model = caption.split()[1].rstrip(",")
    with page.expect_download(timeout=PAGE_TIMEOUT_MS) as download:
        button.locator("button").click()
    reader = pypdf.PdfReader(download.value.path())
    text = "\n".join(pdf_page.extract_text() for pdf_page in reader.pages)
    assert len(reader.pages) == 1
    for expected in (SAMPLE_IMAGE.name, probability, model, "not a diagnostic device"):
        assert expected in text, f"{expected!r} is not in the report"


def test_an_uploaded_dataset_is_evaluated_on_the_metrics_page(served_app, browser_page, tmp_path):
    url, _ = served_app
    page, expect = browser_page, sync_api.expect
    archive = tmp_path / "own-images.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for index, image in enumerate(sorted((config.SAMPLE_DIR / "images").glob("*.jpg"))[:6]):
            zipped.write(image, f"{'malignant' if index % 2 else 'benign'}/{image.name}")
    page.goto(url)
    open_page(page, "Metrics")
    page.get_by_role("tab", name="Evaluate on your data").click()
    settle(page)
    page.get_by_text("Upload a ZIP", exact=True).click()
    settle(page)
    page.locator("input[type=file]").set_input_files(archive)
    settle(page)
    page.get_by_role("button", name="Unpack into the data folder").click()
    settle(page)
    expect(page.get_by_text("Unpacked 6 files")).to_be_visible()
    page.get_by_role("button", name="Start evaluation").click()
    finished = page.get_by_text(re.compile(r"Evaluation finished \d+ s after Start"))
    expect(finished).to_be_visible(timeout=PREDICTION_TIMEOUT_MS)
    settle(page)
    # The stored evaluation of the active run opens below: its caption and headline table.
    described = "uploads/own-images in the data folder: 6 images, 3 malignant"
    expect(page.get_by_text(described, exact=False)).to_be_visible()
    headline = page.locator('[data-testid="stTable"]:visible').filter(has_text="95% CI low")
    expect(headline).to_have_count(1)
    expect(headline).to_contain_text("Sensitivity")
    expect(page.get_by_text("Out of distribution:", exact=False)).to_be_visible()
    screenshot(page, "metrics-evaluate")


# Last, so that it covers the requests of every test before it.
def test_no_page_fetched_anything_from_outside_the_app(served_app, browser_page):
    assert EXTERNAL_REQUESTS == []
