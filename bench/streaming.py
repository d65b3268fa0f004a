"""Peak memory and speed of one fine-tune epoch as the dataset grows, streamed or in memory.

Each size runs in its own process (`bench.epoch_probe`), so one size's memory never counts
towards another's. The images are real ones decoded at a small size and repeated under new
names to reach each count, written to a decoded-image cache as `core.train.pipeline` writes it.
"""

from bench.common import Settings, image_files, run_probe
from bench.report import Figure, Goal
from core.train import image_cache, pipeline

IMAGE_SIZE = 64
BATCH_SIZE = 32
UNIQUE_IMAGES = 500


def stored_files(settings: Settings, count: int) -> list[str]:
    """`count` cache files holding the first few hundred real images over and over."""
    sources = [str(path) for path in image_files(settings)[:UNIQUE_IMAGES]]
    if not sources:
        raise ValueError(f"no .jpg images in {settings.images_dir}")
    arrays = pipeline.decode_all(sources, IMAGE_SIZE, "bilinear")
    folder = image_cache.cache_folder(IMAGE_SIZE, "bilinear", settings.work_dir / "scale-cache")
    paths = [image_cache.image_path(folder, f"{index:064x}") for index in range(count)]
    for index, path in enumerate(paths):
        if not path.is_file():
            image_cache.write_image(path, arrays[index % len(arrays)])
    return [str(path) for path in paths]


def one_epoch(settings: Settings, mode: str, count: int) -> dict:
    file_list = settings.work_dir / f"scale-{count}.txt"
    file_list.write_text("\n".join(stored_files(settings, count)))
    return run_probe("bench.epoch_probe", mode, str(file_list), str(IMAGE_SIZE), str(BATCH_SIZE))


def stream_scale(settings: Settings) -> list[Figure]:
    """Peak RSS and images/s of streaming epochs of growing size, against 2,000 in memory."""
    sizes = [settings.size(count, count // 100) for count in (2_000, 10_000, 40_000)]
    memory = one_epoch(settings, "memory", sizes[0])
    streamed = {count: one_epoch(settings, "stream", count) for count in sizes}
    smallest = streamed[sizes[0]]
    details = {"image_size": IMAGE_SIZE, "batch_size": BATCH_SIZE, "backbone": "mobilenet_v2"}
    figures = [
        Figure(
            group="stream_scale",
            name=f"peak RSS, one streamed epoch of {count:,} images",
            value=result["peak_rss"] / 1024**2,
            baseline=smallest["peak_rss"] / 1024**2,
            unit="MiB",
            baseline_name=f"streamed epoch of {sizes[0]:,}",
            goal=Goal("ratio", "<=", 1.2),
            details={**details, **result},
        )
        for count, result in streamed.items()
        if count != sizes[0]
    ]
    figures += [
        Figure(
            group="stream_scale",
            name=f"images/s, one streamed epoch of {count:,} images",
            value=result["images_per_second"],
            baseline=memory["images_per_second"],
            unit="img/s",
            baseline_name=f"in-memory epoch of {sizes[0]:,}",
            goal=Goal("ratio", ">=", 0.9),
            details={**details, **result},
        )
        for count, result in streamed.items()
    ]
    figures.append(
        Figure(
            group="stream_scale",
            name=f"peak RSS, one in-memory epoch of {sizes[0]:,} images",
            value=memory["peak_rss"] / 1024**2,
            baseline=smallest["peak_rss"] / 1024**2,
            unit="MiB",
            baseline_name=f"streamed epoch of {sizes[0]:,}",
            details={**details, **memory},
        )
    )
    return figures
