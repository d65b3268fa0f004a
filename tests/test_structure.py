"""The package's shape: no import cycles, modules of a readable size, no Streamlit in core."""

import ast
import subprocess
import sys
from pathlib import Path

from core import config

PACKAGES = ("core", "ui")
MAX_MODULE_LINES = 600


def module_files() -> dict[str, Path]:
    """Every module of the packages, subpackages included, by its dotted name."""
    files = {}
    for package in PACKAGES:
        for path in sorted((config.REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(config.REPO_ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_names(tree: ast.Module) -> set[str]:
    """Every module named by an import anywhere in `tree`, function bodies included.

    `from core.storage import runs` names `core.storage.runs`; a name that is not a module
    (`from core.modelling.model import build_model`) counts as its module.
    """
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph = {}
    for name, path in files.items():
        imported = imported_names(ast.parse(path.read_text(), filename=str(path)))
        graph[name] = {other for other in imported if other in files and other != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    finished: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in finished:
            return None
        for other in sorted(graph[name]):
            cycle = visit(other, [*path, name])
            if cycle:
                return cycle
        finished.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def test_imports_inside_functions_count_and_a_cycle_is_found():
    source = "import core.a\n\ndef late():\n    from core import b\n"
    assert {"core.a", "core.b"} <= imported_names(ast.parse(source))
    assert find_cycle({"core.a": {"core.b"}, "core.b": {"core.a"}}) == [
        "core.a",
        "core.b",
        "core.a",
    ]
    assert find_cycle({"core.a": {"core.b"}, "core.b": set()}) is None


def test_no_import_cycles_counting_imports_inside_functions():
    assert find_cycle(import_graph()) is None


def test_no_module_is_over_600_lines():
    lengths = {name: len(path.read_text().splitlines()) for name, path in module_files().items()}
    assert {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES} == {}


def loaded_after_import(modules: tuple[str, ...], watched: tuple[str, ...]) -> list[str]:
    """Which of `watched` a fresh interpreter has loaded after importing `modules`."""
    script = (
        f"import sys\nimport {', '.join(modules)}\n"
        f"print(' '.join(name for name in {watched!r} if name in sys.modules))"
    )
    finished = subprocess.run(
        [sys.executable, "-c", script],
        cwd=config.REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return finished.stdout.split()


def test_core_never_loads_streamlit():
    modules = ("core", "core.__main__", "core.storage.runs", "core.storage.db", "core.worker")
    assert loaded_after_import(modules, ("streamlit",)) == []


def test_the_cli_database_and_worker_never_load_tensorflow():
    # The app starts jobs and the CLI answers `--help` or `crossval-merge` without paying for
    # TensorFlow: only the code that trains or scores imports it.
    modules = (
        "core.__main__",
        "core.storage.runs",
        "core.storage.db",
        "core.worker",
        "core.train.crossval",
    )
    assert loaded_after_import(modules, ("tensorflow", "keras")) == []


def test_the_layers_without_tensorflow_never_load_it():
    # Data, storage and analysis serve the pages that only read results: none of them may
    # load TensorFlow, so those pages and their tests stay fast.
    layers = ("core.inputs", "core.storage", "core.analysis")
    modules = tuple(name for name in module_files() if name.startswith(layers))
    assert loaded_after_import(modules, ("tensorflow", "keras")) == []
