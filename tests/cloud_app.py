"""Every page under AppTest with only what requirements.txt installs importable; run by
tests/test_cloud.py in a fresh process from the repository root, as Community Cloud runs the app.

Cloud installs requirements.txt and what those packages depend on, nothing from
requirements-dev.txt. This process refuses to import any module that comes only from another
installed distribution, renders every page (a sample image predicted on Predict, with its heat
map), and prints one JSON line: the exceptions the pages showed, and every third-party module
loaded from a distribution outside that set.
"""

import importlib.abc
import json
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from streamlit.testing.v1 import AppTest

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "Home.py", *sorted((REPO_ROOT / "pages").glob("*.py"))]
SAMPLE_IMAGE = REPO_ROOT / "data" / "sample" / "images" / "ISIC_0024483.jpg"
# The first Predict run loads TensorFlow and the model, then predicts with test-time
# augmentation: slow on a small, busy machine.
TIMEOUT = 180


def listed_requirements() -> list[Requirement]:
    """requirements.txt's requirements whose markers hold on this machine."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO_ROOT / "requirements.txt").open())
    requirements = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return [item for item in requirements if item.marker is None or item.marker.evaluate()]


def app_distributions() -> set[str]:
    """The distributions Cloud would install: requirements.txt's and all they depend on."""
    environment = default_environment()
    pending, found = listed_requirements(), set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # Not installed here, so nothing of it can be imported either.
        found.add(name)
        extras = requirement.extras or {""}
        for text in distribution.requires or ():
            dependency = Requirement(text)
            if dependency.marker is None or any(
                dependency.marker.evaluate({**environment, "extra": extra}) for extra in extras
            ):
                pending.append(dependency)
    return found


PROVIDERS = {
    module: {canonicalize_name(name) for name in names}
    for module, names in metadata.packages_distributions().items()
}
ALLOWED = app_distributions()


def outside_requirements(module: str) -> set[str]:
    """The distributions providing `module`'s top-level package, if none of them is allowed."""
    providers = PROVIDERS.get(module.partition(".")[0], set())
    return set() if providers & ALLOWED else providers


class RefuseOutsideRequirements(importlib.abc.MetaPathFinder):
    """Makes a module that Cloud would not have installed fail to import, as it would there."""

    def find_spec(self, fullname, path, target=None):
        if providers := outside_requirements(fullname):
            raise ModuleNotFoundError(
                f"{fullname} comes from {sorted(providers)}, not installed by requirements.txt",
                name=fullname,
            )


def run_pages() -> list[str]:
    """Render every page; returns the exceptions they showed, named by page."""
    shown = []

    def run(page: Path, test: AppTest | None = None) -> AppTest:
        test = (test or AppTest.from_file(str(page), default_timeout=TIMEOUT)).run()
        shown.extend(f"{page.name}: {exception.message}" for exception in test.exception)
        return test

    for page in PAGES:
        test = run(page)
        if page.name.endswith("Predict.py"):
            upload = (SAMPLE_IMAGE.name, SAMPLE_IMAGE.read_bytes(), "image/jpeg")
            test.file_uploader(key="predict_upload").set_value(upload)
            run(page, test)
            if not test.metric or test.metric[0].label != "Malignant probability (calibrated)":
                shown.append(f"{page.name}: no probability after uploading {SAMPLE_IMAGE.name}")
            test.segmented_control(key="predict_view").set_value("Heat map")
            run(page, test)
    return shown


def main() -> None:
    sys.meta_path.insert(0, RefuseOutsideRequirements())
    exceptions = run_pages()
    loaded = {
        module: sorted(providers)
        for module in sorted({name.partition(".")[0] for name in sys.modules})
        if (providers := outside_requirements(module))
    }
    print(json.dumps({"exceptions": exceptions, "outside_requirements": loaded}))


if __name__ == "__main__":
    main()
