"""Run in a fresh process: how long TensorFlow's import and loading a run take.

python -m bench.startup_probe RUN_FOLDER   (prints one JSON line)
"""

import json
import sys
import time


def main() -> None:
    start = time.perf_counter()
    import tensorflow  # noqa: F401  (timed on purpose)

    tensorflow_imported = time.perf_counter()
    from core.serving.inference import Predictor
    from core.storage.runs import load_run

    core_imported = time.perf_counter()
    predictor = Predictor(load_run(sys.argv[1]))
    loaded = time.perf_counter()
    predictor.warm_up()
    warmed = time.perf_counter()
    timings = {
        "tensorflow_import_seconds": tensorflow_imported - start,
        "keras_core_import_seconds": core_imported - tensorflow_imported,
        "model_load_seconds": loaded - core_imported,
        "warm_up_seconds": warmed - loaded,
    }
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
