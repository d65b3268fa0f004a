"""The README's held-out-source tables quote the default run's crossval files, figure by figure."""

import json
import re

import pytest

from core import config
from core.storage import runs

README = config.REPO_ROOT / "README.md"
MODELS = config.REPO_ROOT / "models"
# The README's heading of each table, and the file it quotes.
TABLES = {
    "**Held-out sources** (`crossval.json`": runs.CROSSVAL_FILE,
    "**Held-out sources, the recipe as trained** (`crossval_fine_tuned.json`": (
        "crossval_fine_tuned.json"
    ),
}


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the table after `heading`, header and summary rows left out."""
    after = text[text.index(heading) :]
    lines = after[after.index("\n| held-out source") :].strip().splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if not cells[0].startswith("**"):
            rows.append(cells)
    return rows


def expected_cells(fold: dict) -> dict[str, str]:
    """The figures of one fold as the README writes them."""
    scored, card = fold["metrics"], fold["at_run_threshold"]
    low, high = scored["intervals"]["roc_auc"]
    return {
        "images": f"{scored['n']:,} ({scored['n_positive']:,})",
        "auc": f"{scored['roc_auc']:.3f} ({low:.3f}-{high:.3f})",
        "own": f"{scored['sensitivity']:.3f} / {scored['specificity']:.3f}",
        "card": f"{card['sensitivity']:.3f} / {card['specificity']:.3f}",
        "ood": f"{fold['ood_flagged']:.1%}",
    }


def default_run() -> runs.Run:
    """The committed default (`active.json`), whatever this checkout activated locally."""
    committed = json.loads((MODELS / config.ACTIVE_FILE_NAME).read_text())
    return runs.load_run(MODELS / committed["run_id"])


@pytest.mark.parametrize("heading", list(TABLES))
def test_the_readme_quotes_the_held_out_source_files(heading):
    text = README.read_text(encoding="utf-8")
    crossval = json.loads((default_run().folder / TABLES[heading]).read_text())
    rows = table_rows(text, heading)
    assert len(rows) == len(crossval["folds"])
    for cells, fold in zip(rows, crossval["folds"], strict=True):
        expected = expected_cells(fold)
        # Source, images, AUC, then (fine-tuned table) the head-only AUC; OOD share last.
        own, card = (3, 4) if len(cells) == 6 else (4, 5)
        quoted = {
            "images": cells[1],
            "auc": cells[2],
            "own": cells[own],
            "card": cells[card],
            "ood": cells[-1],
        }
        assert quoted == expected, f"README row {cells[0]!r} differs from {TABLES[heading]}"


def test_the_readme_quotes_the_range_of_head_only_ood_shares():
    crossval = json.loads((default_run().folder / runs.CROSSVAL_FILE).read_text())
    shares = [fold["ood_flagged"] for fold in crossval["folds"]]
    quoted = f"{min(shares) * 100:.1f}-{max(shares):.1%} of a held-out source's images"
    assert re.sub(r"\s+", " ", README.read_text(encoding="utf-8")).count(quoted) == 1
