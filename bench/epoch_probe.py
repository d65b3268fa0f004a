"""Run in a fresh process: one fine-tune epoch over stored images, in memory or streaming.

python -m bench.epoch_probe memory|stream FILE_LIST IMAGE_SIZE BATCH_SIZE   (one JSON line)

FILE_LIST names one decoded-image cache file per line. "memory" reads them all into one
array first, as `prepare_data` does for the in-memory path; "stream" reads them through
tf.data. The peak resident memory (VmHWM) covers the whole process, so the two compare.
"""

import json
import sys
import time
from pathlib import Path

from bench.common import peak_resident_bytes

PROBE_BACKBONE = "mobilenet_v2"


def main() -> None:
    import keras
    import numpy as np

    from core.modelling.model import HEAD_LAYER, build_model, named_outputs, set_fine_tune_layers
    from core.train import pipeline

    mode, file_list, image_size, batch_size = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:5])
    stored = pipeline.StoredImages(Path(file_list).read_text().split(), image_size)
    source = np.asarray(stored) if mode == "memory" else stored
    labels = (np.arange(len(stored)) % 2).astype("float32")
    keras.utils.set_random_seed(0)
    model = build_model(PROBE_BACKBONE, image_size, weights="none", target="binary")
    set_fine_tune_layers(model, 100)
    trainable = pipeline.augmented(named_outputs(model), 1.0, seed=0)
    trainable.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss={HEAD_LAYER: "binary_crossentropy"}
    )
    targets, weights = {HEAD_LAYER: labels}, {HEAD_LAYER: np.ones_like(labels)}
    dataset = pipeline.training_dataset(source, targets, weights, batch_size, seed=0)
    trainable.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)  # Traces the train step.
    start = time.perf_counter()
    trainable.fit(dataset, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    result = {"images": len(stored), "seconds": seconds, "peak_rss": peak_resident_bytes()}
    print(json.dumps({**result, "images_per_second": len(stored) / seconds}))


if __name__ == "__main__":
    main()
