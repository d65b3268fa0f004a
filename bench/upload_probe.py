"""Run in a fresh process: the upload path's peak memory on a hostile ZIP.

python -m bench.upload_probe RUN_FOLDER   (prints one JSON line)

The ZIP holds four 7000 x 7000 16-bit PNGs of one grey level each: a few kilobytes that each
decode to 49 megapixels, just under the 50 MP limit. `expand_uploads` and `predict_uploads`
take it as the Predict page does, without a database. Prints the ZIP's size, seconds of the
upload path, how many images were predicted and refused, and the process's peak RSS in bytes.
"""

import io
import json
import sys
import time
import zipfile

from PIL import Image

from bench.common import peak_resident_bytes

SIDE = 7000
SCANS = 4


def hostile_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(SCANS):
            png = io.BytesIO()
            Image.new("I;16", (SIDE, SIDE), 1000 * (index + 1)).save(png, format="PNG")
            archive.writestr(f"scan{index}.png", png.getvalue())
    return buffer.getvalue()


def main() -> None:
    archive = hostile_zip()
    from core.serving import predict_service
    from core.serving.inference import Predictor
    from core.storage.runs import load_run

    predictor = Predictor(load_run(sys.argv[1]))
    start = time.perf_counter()
    uploads, problems = predict_service.expand_uploads([("hostile.zip", archive)])
    results = predict_service.predict_uploads(predictor, None, uploads, "bench")
    finished = time.perf_counter()
    predicted = sum(result.ok for result in results)
    result = {
        "zip_bytes": len(archive),
        "seconds": finished - start,
        "predicted": predicted,
        "refused": len(problems) + len(results) - predicted,
        "peak_rss": peak_resident_bytes(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
