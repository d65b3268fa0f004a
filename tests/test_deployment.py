"""Deployment files: the Dockerfile, the Space README, the entrypoint and the requirements.

No Docker engine is needed: the Dockerfile is read as text, and the entrypoint script runs
directly against a temporary folder that stands in for the Space's persistent storage (/data).
"""

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.config import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
SPACE_README = REPO_ROOT / "docs" / "huggingface-space-README.md"
ENTRYPOINT = REPO_ROOT / "scripts" / "docker-entrypoint.sh"
REQUIREMENTS = REPO_ROOT / "requirements.txt"
LOCK = REPO_ROOT / "requirements.lock"
PERSISTENT_PATHS = {
    "DERMO_MODELS_DIR": "models",
    "DERMO_DB_PATH": "app.duckdb",
    "DERMO_DATA_ROOT": "datasets",
    "DERMO_CACHE_DIR": "cache",
}
LOCAL_MODULES = {"core", "ui", "pages"}
# requirements.lock is written on this platform (see its header); markers are judged for it.
LOCK_ENVIRONMENT = {
    **default_environment(),
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "python_version": "3.11",
}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def arguments_of(keyword: str) -> list[str]:
    return [arguments for name, arguments in dockerfile_instructions() if name == keyword]


def dockerfile_cmd() -> list[str]:
    commands = arguments_of("CMD")
    assert len(commands) == 1, "the Dockerfile needs exactly one CMD"
    return json.loads(commands[0])


def option_value(command: list[str], option: str) -> str | None:
    for token in command:
        if token.startswith(f"{option}="):
            return token.partition("=")[2]
    return None


def space_front_matter() -> dict[str, str]:
    match = re.match(r"---\n(.*?)\n---\n", SPACE_README.read_text(), re.DOTALL)
    assert match, f"{SPACE_README.name} must start with a YAML front matter block"
    pairs = (line.partition(":") for line in match.group(1).splitlines())
    return {key.strip(): value.strip() for key, _, value in pairs}


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (last matching rule wins)."""
    candidates = [path, *(str(parent) for parent in PurePosixPath(path).parents if parent.name)]
    ignored = False
    for line in DOCKERIGNORE.read_text().splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        pattern = rule.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates):
            ignored = not rule.startswith("!")
    return ignored


def test_every_copy_source_exists() -> None:
    copies = arguments_of("COPY")
    assert copies, "the Dockerfile copies nothing"
    for arguments in copies:
        tokens = [token for token in shlex.split(arguments) if not token.startswith("--")]
        for source in tokens[:-1]:
            assert (REPO_ROOT / source).exists(), f"COPY source {source} is not in the repository"


@pytest.mark.parametrize(
    "path",
    [
        "Home.py",
        "core/config.py",
        "requirements.lock",
        "scripts/docker-entrypoint.sh",
        "data/sample/metadata.csv",
        "data/sample/ATTRIBUTION.md",
        "models/active.json",
    ],
)
def test_build_context_keeps_what_the_app_needs(path: str) -> None:
    assert not dockerignored(path), f".dockerignore leaves {path} out of the image"


def test_build_context_leaves_local_state_out() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "data/app.duckdb", "models/.unfinished/x"):
        assert dockerignored(path), f".dockerignore lets {path} into the image"


def test_the_base_image_defaults_to_python_slim() -> None:
    # Only scripts/container-check.sh overrides it, on machines that cannot pull the image.
    assert arguments_of("ARG") == ["BASE_IMAGE=python:3.11-slim"]
    assert arguments_of("FROM") == ["${BASE_IMAGE}"]


def test_app_runs_as_uid_1000() -> None:
    assert any(re.search(r"useradd .*-u 1000 user\b", run) for run in arguments_of("RUN"))
    assert arguments_of("USER")[-1] == "user"
    assert arguments_of("WORKDIR") == ["/home/user/app"]
    app_copies = [
        copy for copy in arguments_of("COPY") if shlex.split(copy)[-1] == "/home/user/app"
    ]
    assert app_copies, "the Dockerfile does not copy the app into /home/user/app"
    assert all("--chown=user" in copy for copy in app_copies), "the app must belong to user"


def test_cmd_matches_the_readme_run_command() -> None:
    readme = REPO_ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("README.md is not written yet: no run command to compare the CMD with")
    match = re.search(r"[^\s`]*streamlit run Home\.py[^`\n]*", readme.read_text())
    assert match, "README.md has no line with `streamlit run Home.py`"
    readme_command = shlex.split(match.group(0), comments=True)
    command = dockerfile_cmd()
    assert Path(command[0]).name == Path(readme_command[0]).name == "streamlit"
    assert command[1:3] == readme_command[1:3] == ["run", "Home.py"]
    missing = [token for token in readme_command[3:] if token not in command]
    assert not missing, f"the Dockerfile CMD lacks the README's options {missing}"


def test_ports_agree() -> None:
    command = dockerfile_cmd()
    exposed = " ".join(arguments_of("EXPOSE")).split()
    assert (
        exposed == [space_front_matter()["app_port"]] == [option_value(command, "--server.port")]
    )
    assert option_value(command, "--server.address") == "0.0.0.0"


def test_cmd_keeps_xsrf_protection_for_the_spaces_iframe() -> None:
    command = dockerfile_cmd()
    assert option_value(command, "--server.enableXsrfProtection") in (None, "true")
    assert option_value(command, "--server.xsrfCookieSameSite") == "none"
    assert option_value(command, "--browser.gatherUsageStats") == "false"


def test_a_deployment_watches_no_files() -> None:
    assert option_value(dockerfile_cmd(), "--server.fileWatcherType") == "none"


def make_run_command(*overrides: str) -> list[str]:
    """The streamlit command that `make run` would run, from make's dry run."""
    dry_run = subprocess.run(
        ["make", "-n", "run", *overrides],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")
    line = next(line for line in dry_run.splitlines() if "streamlit run Home.py" in line)
    return shlex.split(line)


def test_make_run_listens_on_localhost_unless_told_otherwise() -> None:
    command = make_run_command()
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8501"
    assert command[command.index("--server.fileWatcherType") + 1] == "poll"
    served = make_run_command("ADDRESS=0.0.0.0", "PORT=8080")
    assert served[served.index("--server.address") + 1] == "0.0.0.0"
    assert served[served.index("--server.port") + 1] == "8080"


def test_healthcheck_polls_streamlit_health_endpoint() -> None:
    (healthcheck,) = arguments_of("HEALTHCHECK")
    port = option_value(dockerfile_cmd(), "--server.port")
    assert f":{port}/_stcore/health" in healthcheck


def test_space_readme_declares_a_docker_space() -> None:
    front_matter = space_front_matter()
    assert front_matter["sdk"] == "docker"
    assert front_matter["license"] == "cc-by-nc-4.0"
    assert len(front_matter["short_description"]) <= 60


def test_entrypoint_is_executable_and_parses() -> None:
    assert os.access(ENTRYPOINT, os.X_OK), f"{ENTRYPOINT.name} is not executable"
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True)


def make_app(root: Path) -> Path:
    """A minimal app folder: the entrypoint, a default model and the sample."""
    app = root / "app"
    (app / "scripts").mkdir(parents=True)
    shutil.copy2(ENTRYPOINT, app / "scripts" / ENTRYPOINT.name)
    (app / "models" / "default-run").mkdir(parents=True)
    (app / "models" / "active.json").write_text('{"run_id": "default-run"}')
    (app / "models" / "default-run" / "card.json").write_text("{}")
    (app / "data" / "sample").mkdir(parents=True)
    (app / "data" / "sample" / "metadata.csv").write_text("image_name,target\n")
    return app


def run_entrypoint(app: Path, persistent: Path, *command: str) -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ["PATH"], "DERMO_PERSISTENT_DIR": str(persistent)}
    return subprocess.run(
        ["bash", str(app / "scripts" / ENTRYPOINT.name), *command],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )


def exported(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def test_entrypoint_moves_state_to_persistent_storage(tmp_path: Path) -> None:
    app, persistent = make_app(tmp_path), tmp_path / "data"
    persistent.mkdir()
    variables = exported(run_entrypoint(app, persistent, "env").stdout)
    for name, relative in PERSISTENT_PATHS.items():
        assert variables[name] == str(persistent / relative)
    assert json.loads((persistent / "models" / "active.json").read_text())["run_id"]
    assert (persistent / "models" / "default-run" / "card.json").is_file()
    assert (persistent / "datasets" / "sample" / "metadata.csv").is_file()


def test_entrypoint_keeps_models_already_on_storage(tmp_path: Path) -> None:
    app, persistent = make_app(tmp_path), tmp_path / "data"
    (persistent / "models").mkdir(parents=True)
    (persistent / "models" / "active.json").write_text('{"run_id": "trained-here"}')
    run_entrypoint(app, persistent, "true")
    assert json.loads((persistent / "models" / "active.json").read_text()) == {
        "run_id": "trained-here"
    }
    assert not (persistent / "models" / "default-run").exists()


def test_entrypoint_without_storage_keeps_repository_paths(tmp_path: Path) -> None:
    result = run_entrypoint(make_app(tmp_path), tmp_path / "absent", "env")
    assert not set(PERSISTENT_PATHS) & set(exported(result.stdout))
    assert "lost" in result.stderr


def test_config_reads_the_entrypoint_variables(tmp_path: Path) -> None:
    persistent = tmp_path / "data"
    persistent.mkdir()
    script = "from core import config; print(config.MODELS_DIR, config.DB_PATH, config.DATA_ROOT)"
    environment = {"PATH": os.environ["PATH"], "DERMO_PERSISTENT_DIR": str(persistent)}
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**environment, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    resolved = persistent.resolve()
    assert result.stdout.split() == [
        str(resolved / "models"),
        str(resolved / "app.duckdb"),
        str(resolved / "datasets"),
    ]


def requirements() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_every_third_party_import_is_a_requirement() -> None:
    sources = [REPO_ROOT / "Home.py", *(REPO_ROOT / "core").rglob("*.py")]
    sources += [*(REPO_ROOT / "ui").glob("*.py"), *(REPO_ROOT / "pages").glob("*.py")]
    listed = {canonicalize_name(requirement.name) for requirement in requirements()}
    # Which installed distributions provide each import name (PIL: pillow); a module that no
    # installed distribution provides is taken to be named like its distribution.
    providers = metadata.packages_distributions()
    missing = {}
    for source in (path for path in sources if path.is_file()):
        for module in imported_modules(source) - set(sys.stdlib_module_names) - LOCAL_MODULES:
            distributions = {canonicalize_name(name) for name in providers.get(module, [module])}
            if not distributions & listed:
                missing.setdefault(module, source.relative_to(REPO_ROOT).as_posix())
    assert not missing, f"imported but not in requirements.txt (first importer): {missing}"


def test_lock_pins_every_requirement() -> None:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, separator, version = line.partition("==")
            assert separator, f"requirements.lock line {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version.strip()
    for requirement in requirements():
        if requirement.marker and not requirement.marker.evaluate(LOCK_ENVIRONMENT):
            continue
        version = pins.get(canonicalize_name(requirement.name))
        assert version, f"requirements.lock does not pin {requirement.name}"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {requirement.name}=={version}, outside {requirement}"
        )


def test_storage_lost_on_restart_is_detected(monkeypatch):
    from core import config

    assert config.ephemeral_storage_reason({}) is None or str(config.REPO_ROOT).startswith(
        "/mount/src"
    )
    assert "marked" in config.ephemeral_storage_reason({"DERMO_EPHEMERAL_STORAGE": "1"})
    monkeypatch.setattr(config, "MODELS_DIR", config.REPO_ROOT / "models")
    assert "Space" in config.ephemeral_storage_reason({"SPACE_ID": "someone/dermoscopy"})
    monkeypatch.setattr(config, "MODELS_DIR", Path("/data/models"))
    assert config.ephemeral_storage_reason({"SPACE_ID": "someone/dermoscopy"}) is None
