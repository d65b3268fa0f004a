"""Run in a fresh process: render one Streamlit page once and say what it imported.

    python -m bench.page_probe PAGE.py   (prints one JSON line)

Only Streamlit's test harness is imported before the timer starts, so the time covers the
page's own imports and its first script run, as in a fresh server process.
"""

import json
import sys
import time

from streamlit.testing.v1 import AppTest

HEAVY_MODULES = ("tensorflow", "keras", "sklearn")


def main() -> None:
    page = sys.argv[1]
    start = time.perf_counter()
    app = AppTest.from_file(page, default_timeout=120).run()
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "heavy_modules": [name for name in HEAVY_MODULES if name in sys.modules],
        "exceptions": [str(exception.value) for exception in app.exception],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
