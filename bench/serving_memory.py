"""Peak memory of prediction against the serving issue's aims, each in a fresh process.

`python -m core predict` with the card's TTA over 2,000 images, and the upload path
(`expand_uploads` + `predict_uploads`) on a ZIP of four 7000 x 7000 16-bit PNGs that decode to
49 megapixels each (`bench.upload_probe`). The baseline is the same command without TTA over
the same images: TensorFlow, the model and batches of one view.
"""

from bench.archive import MEBIBYTE, run_predict
from bench.common import Settings, image_folder, run_probe
from bench.report import Figure, Goal

# Streamlit Community Cloud gives an app about 1 to 2.7 GB; these leave the app room.
CLI_GOAL_MIB = 1.5 * 1024
UPLOAD_GOAL_MIB = 2.0 * 1024


def serving_memory(settings: Settings) -> list[Figure]:
    count = settings.size(2000, 16)
    folder = image_folder(settings, count)
    plain = run_predict(settings, folder, "serving-no-tta.csv", "--no-tta")
    with_tta = run_predict(settings, folder, "serving-tta.csv")
    hostile = run_probe("bench.upload_probe", str(settings.run.folder))
    card = settings.run.card
    views = f"{card.tta_views} TTA" if card.tta else "no TTA on its card"
    baseline = {
        "baseline": plain["peak_rss_mib"],
        "unit": "MiB",
        "baseline_name": f"predict --no-tta over the {count} images",
    }
    return [
        Figure(
            group="serving_memory",
            name=f"predict peak RSS, {count} images, the card's setting ({views})",
            value=with_tta["peak_rss_mib"],
            goal=Goal("value", "<=", CLI_GOAL_MIB),
            details={"with_tta": with_tta, "no_tta": plain},
            **baseline,
        ),
        Figure(
            group="serving_memory",
            name="upload path peak RSS, hostile ZIP of four 49 MP 16-bit PNGs",
            value=hostile["peak_rss"] / MEBIBYTE,
            goal=Goal("value", "<=", UPLOAD_GOAL_MIB),
            details=hostile,
            **baseline,
        ),
    ]
