"""Run in a fresh process: one engine's forward pass with TTA over a folder, for its memory.

python -m bench.runtime_probe ENGINE MODEL FOLDER IMAGE_SIZE RESAMPLE IMAGES_PER_CALL [VIEWS]

ENGINE tensorflow: MODEL is a run's .keras file, run through `make_forward` with the TTA
views VIEWS. ENGINE onnxruntime or litert: MODEL is the forward pass with TTA exported by
`bench.runtimes`, and neither TensorFlow nor Keras is imported, so the peak is what serving
with that runtime alone would hold. Prints one JSON line: seconds to import and load,
seconds of the forward passes, peak RSS in bytes.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import peak_resident_bytes
from core.inputs import images


def main() -> None:
    engine, model, folder, size, resample, per_call = sys.argv[1:7]
    start = time.perf_counter()
    if engine == "tensorflow":
        import keras

        from core.serving.inference import make_forward

        forward = make_forward(keras.saving.load_model(model), True, sys.argv[7])
    else:
        from bench.engines import FORWARDS

        forward = FORWARDS[engine](Path(model))
    loaded = time.perf_counter()
    files = sorted(str(path) for path in Path(folder).iterdir())
    arrays = np.stack(images.decode_many(files, int(size), resample))
    forward_start = time.perf_counter()
    step = int(per_call)
    for first in range(0, len(arrays), step):
        np.asarray(forward(arrays[first : first + step])[0])
    finished = time.perf_counter()
    result = {
        "load_seconds": loaded - start,
        "forward_seconds": finished - forward_start,
        "images": len(arrays),
        "peak_rss": peak_resident_bytes(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
