"""Render local web pages with headless Chromium into data/ood/, for the OOD test set.

Seven kinds of page (search, form, news article, data table, dashboard, code listing, app
screen) are written as HTML here, each in four themes at a different window size, and
screenshotted with Chromium's own --screenshot flag. Nothing is fetched from the network: pages
use only inline CSS and SVG. The screenshots are shrunk to at most 640 px and saved as JPEG
(quality 85) so the committed folder stays small.

    python scripts/make_ood_screenshots.py [--chromium /usr/bin/chromium] [--out data/ood]
"""

import argparse
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_SIDE = 640
THEMES = {
    "light": ("#ffffff", "#202124", "#1a73e8", "#f1f3f4"),
    "dark": ("#1e1f22", "#e8eaed", "#8ab4f8", "#2d2f33"),
    "sepia": ("#f5ecd9", "#3b2f20", "#a0522d", "#e8dcc0"),
    "blue": ("#eaf2fb", "#0b2545", "#13315c", "#cfe0f3"),
}
SIZES = ((1280, 800), (800, 600), (390, 844), (1024, 768))
# Filler words: what the pages say does not matter, only that they look like text.
WORDS_TEXT = (
    "data report update market weather city council season results health science "
    "travel guide review price account order project team meeting release version"
)
WORDS = WORDS_TEXT.split()


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def page(title: str, body: str, theme: str) -> str:
    background, ink, accent, panel = THEMES[theme]
    style = (
        f"body{{margin:0;font-family:sans-serif;background:{background};color:{ink}}}"
        f"header{{background:{accent};color:white;padding:12px 20px;font-size:20px}}"
        f".panel{{background:{panel};padding:12px;margin:10px;border-radius:8px}}"
        f"button{{background:{accent};color:white;border:0;padding:8px 16px;border-radius:6px}}"
        "input,select,textarea{padding:8px;margin:4px 0;width:90%;font-size:15px}"
        "table{border-collapse:collapse;width:100%}td,th{border:1px solid #999;padding:4px}"
        "pre{font-family:monospace;font-size:13px;line-height:1.4}"
    )
    return f"<html><head><style>{style}</style><title>{title}</title></head><body>{body}</body></html>"


def search_page(rng: random.Random) -> str:
    results = "".join(
        f"<div class=panel><a href='#'>{words(rng, 5).title()}</a><p>{words(rng, 25)}</p></div>"
        for _ in range(6)
    )
    box = "<div style='padding:30px'><input value='" + words(rng, 3) + "'><button>Search</button>"
    return f"<header>Search</header>{box}</div>{results}"


def form_page(rng: random.Random) -> str:
    fields = "".join(
        f"<label>{words(rng, 2).title()}</label><br><input placeholder='{words(rng, 2)}'><br>"
        for _ in range(5)
    )
    choice = "<select><option>" + words(rng, 2) + "</option></select><br>"
    return f"<header>Sign up</header><div class=panel>{fields}{choice}<textarea rows=4>{words(rng, 20)}</textarea><br><button>Submit</button></div>"


def article_page(rng: random.Random) -> str:
    paragraphs = "".join(f"<p>{words(rng, 60)}.</p>" for _ in range(5))
    picture = (
        "<svg width='100%' height='180'><rect width='100%' height='180' fill='#7fa7c9'/>"
        "<circle cx='80' cy='60' r='30' fill='#f6d36b'/><polygon points='0,180 200,70 400,180'"
        " fill='#4b7f52'/></svg>"
    )
    title = f"<h1 style='margin:16px'>{words(rng, 7).title()}</h1>"
    return (
        f"<header>Daily News</header>{title}{picture}<div style='margin:16px'>{paragraphs}</div>"
    )


def table_page(rng: random.Random) -> str:
    header = "".join(f"<th>{word.title()}</th>" for word in rng.sample(WORDS, 6))
    rows = "".join(
        "<tr>" + "".join(f"<td>{rng.randint(0, 9999)}</td>" for _ in range(6)) + "</tr>"
        for _ in range(25)
    )
    return (
        f"<header>Data table</header><div class=panel><table><tr>{header}</tr>{rows}</table></div>"
    )


def dashboard_page(rng: random.Random) -> str:
    bars = "".join(
        f"<rect x='{20 + index * 40}' y='{200 - height}' width='28' height='{height}' fill='#4a90d9'/>"
        for index, height in enumerate(rng.randint(20, 190) for _ in range(10))
    )
    tiles = "".join(
        f"<div class=panel style='display:inline-block;width:140px'><b style='font-size:28px'>"
        f"{rng.randint(10, 999)}</b><br>{words(rng, 2)}</div>"
        for _ in range(4)
    )
    chart = f"<div class=panel><svg width='440' height='210'>{bars}</svg></div>"
    return f"<header>Dashboard</header>{tiles}{chart}"


def code_page(rng: random.Random) -> str:
    lines = []
    for number in range(1, 40):
        indent = "    " * rng.randint(0, 3)
        name = rng.choice(WORDS)
        lines.append(
            f"{number:3d}  {indent}{name} = compute_{rng.choice(WORDS)}({name}, {number})"
        )
    return f"<header>editor.py</header><pre class=panel>{chr(10).join(lines)}</pre>"


def app_page(rng: random.Random) -> str:
    items = "".join(
        f"<div class=panel><b>{words(rng, 3).title()}</b><br>{words(rng, 10)}"
        f"<br><button>Open</button></div>"
        for _ in range(5)
    )
    return f"<header>My App &#9776;</header>{items}"


PAGES = {
    "search": search_page,
    "form": form_page,
    "article": article_page,
    "table": table_page,
    "dashboard": dashboard_page,
    "code": code_page,
    "app": app_page,
}


def screenshot(chromium: str, html: Path, target: Path, size: tuple[int, int]) -> None:
    # A fresh profile and no background services: nothing is written outside the temp folder
    # and nothing tries the network.
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--screenshot={target}",
                f"--window-size={size[0]},{size[1]}",
                html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )


def shrink_to_jpeg(png: Path, target: Path) -> None:
    with Image.open(png) as image:
        image = image.convert("RGB")
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        image.save(target, "JPEG", quality=85, optimize=True)


def render_all(chromium: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        for page_index, (kind, make_body) in enumerate(PAGES.items()):
            for theme_index, theme in enumerate(THEMES):
                html = Path(scratch) / f"{kind}-{theme}.html"
                html.write_text(page(kind, make_body(rng), theme), encoding="utf-8")
                png = Path(scratch) / f"{kind}-{theme}.png"
                size = SIZES[(page_index + theme_index) % len(SIZES)]
                screenshot(chromium, html, png, size)
                target = out / f"{kind}-{theme}.jpg"
                shrink_to_jpeg(png, target)
                written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "ood")
    arguments = parser.parse_args()
    written = render_all(arguments.chromium, arguments.out)
    total = sum(path.stat().st_size for path in written)
    print(f"wrote {len(written)} screenshots, {total / 1024:.0f} KiB, to {arguments.out}")


if __name__ == "__main__":
    main()
