"""Build the small real sample shipped in data/sample from a full ISIC 2020-style dataset.

    python scripts/make_sample.py SOURCE_DIR [--out data/sample]

Takes upper-extremity images from the ISIC 2020 and HAM10000 rows only (their licence,
CC BY-NC 4.0, is known), whole lesions at a time so the sample's own splits stay honest,
with a fixed seed. The ATTRIBUTION file travels with the images.
"""

import argparse
import shutil
from pathlib import Path

import pandas as pd

KNOWN_LICENCE_SOURCES = ("ISIC 2020 train", "HAM10000 + ISIC2018 Task3 test", "HAM10000")


def select_rows(metadata: pd.DataFrame, malignant: int, benign: int, seed: int) -> pd.DataFrame:
    rows = metadata[
        metadata["source"].isin(KNOWN_LICENCE_SOURCES)
        & (metadata["anatom_site_general_challenge"] == "upper extremity")
    ].copy()
    # A lesion (else the image) is one unit, so all images of a lesion come together.
    rows["unit"] = rows["lesion_id"].fillna(rows["image_name"])
    chosen = []
    for target, wanted in ((1, malignant), (0, benign)):
        units = rows.loc[rows["target"] == target, "unit"].drop_duplicates()
        units = units.sample(frac=1.0, random_state=seed)
        taken = 0
        for unit in units:
            if taken >= wanted:
                break
            unit_rows = rows[rows["unit"] == unit]
            chosen.append(unit_rows)
            taken += len(unit_rows)
    return pd.concat(chosen).drop(columns="unit").sort_values("image_name")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("--out", type=Path, default=Path("data/sample"))
    parser.add_argument("--malignant", type=int, default=110)
    parser.add_argument("--benign", type=int, default=190)
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    metadata = pd.read_csv(arguments.source / "metadata.csv")
    sample = select_rows(metadata, arguments.malignant, arguments.benign, arguments.seed)
    images = arguments.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name in sample["image_name"]:
        shutil.copy2(arguments.source / "images" / f"{name}.jpg", images / f"{name}.jpg")
    sample.to_csv(arguments.out / "metadata.csv", index=False)
    shutil.copy2(arguments.source / "ATTRIBUTION.md", arguments.out / "ATTRIBUTION.md")
    print(f"{len(sample)} images ({int(sample['target'].sum())} malignant) in {arguments.out}")


if __name__ == "__main__":
    main()
