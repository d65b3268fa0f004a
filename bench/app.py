"""App benchmarks: Home's first render in fresh processes, and which pages stay light."""

import os
import statistics
import sys
from pathlib import Path

from bench.common import Settings, Skipped, run_probe
from bench.report import Figure, Goal
from core import config

TRIVIAL_PAGE = 'import streamlit as st\n\nst.title("Baseline")\n'
LIGHT_PAGES = ("Home", "History", "Metrics")


def find_page(name: str) -> Path | None:
    """Home.py at the root, other pages in pages/ under any numeric prefix."""
    if name == "Home":
        home = config.REPO_ROOT / "Home.py"
        return home if home.is_file() else None
    matches = sorted((config.REPO_ROOT / "pages").glob(f"*{name}.py"))
    return matches[0] if matches else None


def probe_page(page: Path, settings: Settings) -> dict:
    """Render `page` once in a fresh process, with a scratch database."""
    environment = dict(os.environ)
    environment["DERMO_DB_PATH"] = str(settings.work_dir / "app-probe.duckdb")
    environment["PYTHONPATH"] = str(config.REPO_ROOT)
    return run_probe("bench.page_probe", str(page), environment=environment)


def first_render(settings: Settings, home: Path) -> tuple[Figure, dict]:
    """Home's first render vs a one-line page; also returns one probe of Home."""
    trivial = settings.work_dir / "trivial_page.py"
    trivial.write_text(TRIVIAL_PAGE)
    home_runs, trivial_runs = [], []
    for _ in range(settings.size(5, 1)):
        home_runs.append(probe_page(home, settings))
        trivial_runs.append(probe_page(trivial, settings))
    home_seconds = [run["seconds"] for run in home_runs]
    figure = Figure(
        group="app",
        name="Home first render, fresh process (median)",
        value=statistics.median(home_seconds),
        baseline=statistics.median(run["seconds"] for run in trivial_runs),
        unit="s",
        baseline_name="one-line Streamlit page",
        goal=Goal("value", "<", 2.0),
        details={"runs_seconds": home_seconds, "exceptions": home_runs[0]["exceptions"]},
    )
    return figure, home_runs[0]


# No page without a model may load TensorFlow; Home, the first page a visitor sees, may not
# load scikit-learn either (its import alone takes about 2 s on a small machine).
FORBIDDEN_MODULES = {
    "Home": ("tensorflow", "keras", "sklearn"),
    "History": ("tensorflow", "keras"),
    "Metrics": ("tensorflow", "keras"),
}


def heavy_imports(name: str, probe: dict) -> Figure:
    forbidden = FORBIDDEN_MODULES[name]
    return Figure(
        group="app",
        name=f"{name}: {'/'.join(forbidden)} modules imported",
        value=len([module for module in probe["heavy_modules"] if module in forbidden]),
        baseline=0,
        unit="",
        baseline_name="none",
        goal=Goal("value", "<=", 0),
        details=probe,
    )


def app(settings: Settings) -> list[Figure]:
    pages = {name: find_page(name) for name in LIGHT_PAGES}
    if pages["Home"] is None:
        raise Skipped("Home.py does not exist yet")
    render, home_probe = first_render(settings, pages["Home"])
    figures = [render, heavy_imports("Home", home_probe)]
    for name in LIGHT_PAGES[1:]:
        if pages[name] is None:
            print(f"app: no {name} page yet; its imports are not checked", file=sys.stderr)
            continue
        figures.append(heavy_imports(name, probe_page(pages[name], settings)))
    return figures
