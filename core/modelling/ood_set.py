"""A test set of images that are not dermoscopy, for measuring the out-of-distribution flag.

Everything is built at call time from what installed packages ship (scikit-learn's sample
photos and digits) and from Pillow/numpy drawing, plus screenshots of local web pages that
`scripts/make_ood_screenshots.py` rendered with headless Chromium into `data/ood/`. Names are
"<kind>/<detail>", so results can be broken down by kind. The set is deterministic: every
generator draws from its own seeded random generator.

The "hard" kind is deliberately close to dermoscopy: smooth skin-coloured gradients, some with
a darker blob, and blurred photo crops.
"""

from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from sklearn.datasets import load_digits, load_sample_images

from core import config

SCREENSHOT_FOLDER = config.REPO_ROOT / "data" / "ood"
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
)
# Words for lines of text; what they say does not matter, only that they look like words.
WORDS_TEXT = (
    "the patient report summary clinic visit follow up results normal range value table "
    "page section order account settings profile search submit number date total price "
    "weather news today market update version release notes install guide error warning"
)
SKIN_TONES = ((233, 196, 170), (214, 160, 130), (186, 130, 100), (150, 100, 75), (240, 210, 195))
Named = Iterator[tuple[str, Image.Image]]


def font(size: int, index: int = 0) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A system DejaVu font found by file name, else Pillow's own font (slim images lack fonts)."""
    try:
        return ImageFont.truetype(FONT_FILES[index % len(FONT_FILES)], size)
    except OSError:
        return ImageFont.load_default(size)


def sentence(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(WORDS_TEXT.split(), size=words))


def from_array(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")


def sample_photos() -> list[np.ndarray]:
    return [np.asarray(photo) for photo in load_sample_images().images]


def photos() -> Named:
    """The two sample photos, and their tiles on 2x2 and 3x3 grids as more natural photos."""
    for index, photo in enumerate(sample_photos()):
        yield f"photo/full-{index}", from_array(photo)
        for grid in (2, 3):
            height, width = photo.shape[0] // grid, photo.shape[1] // grid
            for row in range(grid):
                for column in range(grid):
                    tile = photo[
                        row * height : (row + 1) * height, column * width : (column + 1) * width
                    ]
                    yield f"photo/tile{grid}-{index}-{row}{column}", from_array(tile)


def digits() -> Named:
    """Mosaics of scikit-learn's 8x8 handwritten digits, scaled up (dark ink on white)."""
    pixels = load_digits().images
    for index, side in enumerate((4, 6, 8, 12)):
        chosen = pixels[index * 144 : index * 144 + side * side].reshape(side, side, 8, 8)
        mosaic = chosen.transpose(0, 2, 1, 3).reshape(side * 8, side * 8)
        ink = 255 - mosaic * (255 / 16)
        image = from_array(np.repeat(ink[..., None], 3, axis=2))
        yield f"digits/mosaic-{side}", image.resize((320, 320), Image.Resampling.NEAREST)


def paper(rng: np.random.Generator, size: tuple[int, int], colour: tuple[int, ...]) -> np.ndarray:
    """A page lit unevenly with fine grain, as in a phone photo of a printed sheet."""
    height, width = size
    light = np.linspace(0.85, 1.05, width)[None, :] * np.linspace(1.0, 0.9, height)[:, None]
    grain = rng.normal(0, 4, size=(height, width, 1))
    return np.asarray(colour, dtype=np.float64) * light[..., None] + grain


def text_page(rng: np.random.Generator, index: int) -> Image.Image:
    backgrounds = (
        (255, 255, 255),
        (246, 240, 222),
        (30, 30, 36),
        (235, 238, 245),
        (250, 246, 170),
    )
    inks = ((0, 0, 0), (20, 30, 110), (230, 230, 230), (60, 60, 60), (120, 20, 20))
    height, width = int(rng.integers(300, 640)), int(rng.integers(300, 640))
    background = backgrounds[index % len(backgrounds)]
    image = from_array(paper(rng, (height, width), background))
    draw = ImageDraw.Draw(image)
    size = (12, 18, 28, 44)[index % 4]
    lettering = font(size, index)
    for line in range(0, height - size, int(size * 1.5)):
        words = max(1, width // (size * 4))
        draw.text(
            (12, line + 8), sentence(rng, words), fill=inks[index % len(inks)], font=lettering
        )
    # A photo of a page is rarely square to the camera or perfectly sharp.
    angle = float(rng.uniform(-6, 6))
    return image.rotate(angle, fillcolor=background).filter(
        ImageFilter.GaussianBlur(index % 3 * 0.6)
    )


def texts() -> Named:
    rng = np.random.default_rng(1)
    for index in range(30):
        yield f"text/page-{index}", text_page(rng, index)


def random_point(rng: np.random.Generator, size: int) -> tuple[int, int]:
    return int(rng.integers(0, size)), int(rng.integers(0, size))


def drawing(rng: np.random.Generator, index: int) -> Image.Image:
    """Outlined and filled shapes on white or light paper, as in a sketch or clip art."""
    size = 400
    image = Image.new("RGB", (size, size), ((255, 255, 255), (250, 250, 240))[index % 2])
    draw = ImageDraw.Draw(image)
    filled = index % 3 == 0
    for _ in range(int(rng.integers(4, 14))):
        colour = tuple(int(value) for value in rng.integers(0, 200, size=3))
        box = sorted(random_point(rng, size)), sorted(random_point(rng, size))
        corners = (box[0][0], box[1][0], box[0][1], box[1][1])
        shape = int(rng.integers(0, 4))
        fill = colour if filled else None
        if shape == 0:
            draw.line([random_point(rng, size) for _ in range(5)], fill=colour, width=3)
        elif shape == 1:
            draw.ellipse(corners, outline=colour, fill=fill, width=3)
        elif shape == 2:
            draw.rectangle(corners, outline=colour, fill=fill, width=3)
        else:
            draw.polygon([random_point(rng, size) for _ in range(3)], outline=colour, fill=fill)
    return image


def spiral(turns: int) -> Image.Image:
    image = Image.new("RGB", (400, 400), "white")
    angle = np.linspace(0, turns * 2 * np.pi, 800)
    radius = angle / angle.max() * 180
    points = list(zip(200 + radius * np.cos(angle), 200 + radius * np.sin(angle), strict=True))
    ImageDraw.Draw(image).line(points, fill="black", width=2)
    return image


def drawings() -> Named:
    rng = np.random.default_rng(2)
    for index in range(18):
        yield f"drawing/shapes-{index}", drawing(rng, index)
    for turns in (3, 8):
        yield f"drawing/spiral-{turns}", spiral(turns)


def chart_axes(draw: ImageDraw.ImageDraw, size: tuple[int, int], title: str) -> None:
    width, height = size
    draw.line([(50, 30), (50, height - 40), (width - 20, height - 40)], fill="black", width=2)
    for tick in range(50, width - 20, 60):
        draw.text((tick, height - 32), str(tick // 6), fill="black", font=font(12))
    draw.text((60, 6), title, fill="black", font=font(16, 3))


def bar_chart(rng: np.random.Generator, image: Image.Image) -> None:
    draw = ImageDraw.Draw(image)
    width, height = image.size
    bars = int(rng.integers(3, 12))
    step = (width - 90) // bars
    for bar in range(bars):
        top = int(rng.integers(40, height - 60))
        colour = tuple(int(value) for value in rng.integers(30, 220, size=3))
        draw.rectangle(
            (60 + bar * step, top, 60 + bar * step + step * 2 // 3, height - 41), fill=colour
        )


def line_chart(rng: np.random.Generator, image: Image.Image) -> None:
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for series in range(int(rng.integers(1, 4))):
        values = np.cumsum(rng.normal(size=40))
        values = (values - values.min()) / (np.ptp(values) + 1e-9)
        xs = np.linspace(55, width - 25, 40)
        ys = height - 50 - values * (height - 100)
        colour = ((31, 119, 180), (255, 127, 14), (44, 160, 44))[series]
        draw.line(list(zip(xs, ys, strict=True)), fill=colour, width=2)


def scatter_chart(rng: np.random.Generator, image: Image.Image) -> None:
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for x, y in zip(
        rng.uniform(60, width - 30, 120), rng.uniform(40, height - 50, 120), strict=True
    ):
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(31, 119, 180))


def pie_chart(rng: np.random.Generator, image: Image.Image) -> None:
    draw = ImageDraw.Draw(image)
    shares = rng.dirichlet(np.ones(int(rng.integers(3, 7)))) * 360
    start = 0.0
    for share in shares:
        colour = tuple(int(value) for value in rng.integers(40, 240, size=3))
        draw.pieslice((80, 60, 320, 300), start, start + share, fill=colour, outline="white")
        start += share


def charts() -> Named:
    rng = np.random.default_rng(3)
    kinds: dict[str, Callable[[np.random.Generator, Image.Image], None]] = {
        "bar": bar_chart,
        "line": line_chart,
        "scatter": scatter_chart,
        "pie": pie_chart,
    }
    for index in range(16):
        name = list(kinds)[index % len(kinds)]
        image = Image.new("RGB", (400 + index * 10, 320), ("white", (245, 245, 245))[index % 2])
        if name != "pie":
            chart_axes(ImageDraw.Draw(image), image.size, f"{name} chart {index}")
        kinds[name](rng, image)
        yield f"chart/{name}-{index}", image


def blanks() -> Named:
    """Black, white, greys and uniform colours: a lens cap, a blank upload, a solid fill."""
    colours = {
        "black": (0, 0, 0),
        "white": (255, 255, 255),
        "grey-64": (64, 64, 64),
        "grey-128": (128, 128, 128),
        "grey-192": (192, 192, 192),
        "red": (220, 30, 30),
        "green": (30, 180, 60),
        "blue": (30, 60, 220),
        "yellow": (250, 220, 40),
        "cyan": (40, 210, 220),
        "magenta": (210, 40, 200),
        "orange": (250, 140, 20),
        "purple": (110, 40, 150),
        "navy": (10, 20, 70),
    }
    for name, colour in colours.items():
        yield f"blank/{name}", Image.new("RGB", (256, 256), colour)


def smooth_noise(rng: np.random.Generator, cells: int, size: int = 256) -> np.ndarray:
    coarse = Image.fromarray(rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)


def noises() -> Named:
    """Uniform, Gaussian, salt-and-pepper and smooth noise at several scales."""
    rng = np.random.default_rng(4)
    size = (256, 256)
    yield "noise/uniform-rgb", from_array(rng.integers(0, 256, size=(*size, 3)))
    yield "noise/uniform-grey", from_array(np.repeat(rng.integers(0, 256, size=(*size, 1)), 3, 2))
    for sigma in (10, 40, 80):
        yield f"noise/gaussian-{sigma}", from_array(rng.normal(128, sigma, size=(*size, 3)))
    for share in (0.05, 0.3):
        salt = rng.choice([0.0, 255.0, 128.0], p=[share / 2, share / 2, 1 - share], size=size)
        yield f"noise/salt-pepper-{share}", from_array(np.repeat(salt[..., None], 3, 2))
    for cells in (4, 8, 16, 32, 64, 128):
        yield f"noise/smooth-{cells}", from_array(smooth_noise(rng, cells))
    layered = np.mean([smooth_noise(rng, cells) for cells in (4, 16, 64)], axis=0)
    yield "noise/layered", from_array(layered)
    yield "noise/speckle", from_array(128 + (rng.random(size=(*size, 3)) < 0.5) * 100 - 50)


def linear_gradient(start: np.ndarray, end: np.ndarray, angle: float, size: int) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
    position = xs * np.cos(angle) + ys * np.sin(angle)
    position = (position - position.min()) / np.ptp(position)
    return start + (end - start) * position[..., None]


def radial_gradient(inner: np.ndarray, outer: np.ndarray, size: int) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    position = np.clip(np.hypot(xs, ys) / 0.5, 0, 1)
    return inner + (outer - inner) * position[..., None]


def gradients() -> Named:
    rng = np.random.default_rng(5)
    for index in range(10):
        start, end = rng.integers(0, 256, size=(2, 3)).astype(np.float64)
        angle = float(index * np.pi / 5)
        yield f"gradient/linear-{index}", from_array(linear_gradient(start, end, angle, 256))
    for index in range(8):
        inner, outer = rng.integers(0, 256, size=(2, 3)).astype(np.float64)
        yield f"gradient/radial-{index}", from_array(radial_gradient(inner, outer, 256))
    hue = np.linspace(0, 1, 256)[None, :].repeat(256, axis=0)
    rainbow = Image.fromarray(
        np.stack([hue * 255, np.full_like(hue, 220), np.full_like(hue, 230)], 2).astype(np.uint8),
        "HSV",
    )
    yield "gradient/rainbow", rainbow.convert("RGB")


def checkerboards() -> Named:
    colour_pairs = (
        ((0, 0, 0), (255, 255, 255)),
        ((200, 30, 30), (250, 240, 230)),
        ((20, 90, 160), (250, 210, 60)),
    )
    for cells in (2, 8, 32):
        for index, (dark, light) in enumerate(colour_pairs):
            ys, xs = np.mgrid[0:256, 0:256] * cells // 256
            board = np.where(((xs + ys) % 2 == 0)[..., None], dark, light)
            yield f"checkerboard/cells{cells}-{index}", from_array(board)
    stripes = np.where((np.arange(256) // 16 % 2 == 0)[None, :, None], (0, 0, 0), (255, 255, 255))
    yield "checkerboard/stripes", from_array(np.broadcast_to(stripes, (256, 256, 3)))


def fake_screen(rng: np.random.Generator, index: int) -> Image.Image:
    """A window with a title bar, sidebar, buttons, lines of text and picture placeholders."""
    dark = index % 3 == 1
    background, ink, panel = ((250, 250, 252), (30, 30, 30), (232, 236, 242))
    if dark:
        background, ink, panel = ((32, 34, 40), (220, 220, 220), (48, 52, 60))
    width, height = (800, 500) if index % 2 else (390, 700)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    accent = tuple(int(value) for value in rng.integers(30, 220, size=3))
    draw.rectangle((0, 0, width, 40), fill=accent)
    draw.text((12, 10), sentence(rng, 3).title(), fill="white", font=font(18, 3))
    left = 0 if width < 500 else 180
    if left:
        draw.rectangle((0, 40, left, height), fill=panel)
        for row in range(8):
            draw.text((14, 60 + row * 32), sentence(rng, 2), fill=ink, font=font(14))
    for row, top in enumerate(range(60, height - 40, 44)):
        if row % 4 == 3:
            draw.rounded_rectangle((left + 20, top, left + 140, top + 32), 8, fill=accent)
            draw.text((left + 32, top + 8), "Submit", fill="white", font=font(14, 3))
        elif row % 5 == 2:
            draw.rectangle((left + 20, top, width - 20, top + 36), fill=panel)
        else:
            draw.text((left + 20, top + 6), sentence(rng, 6), fill=ink, font=font(15))
    return image


def screens() -> Named:
    rng = np.random.default_rng(6)
    for index in range(12):
        yield f"ui/screen-{index}", fake_screen(rng, index)


def skin_blob(rng: np.random.Generator, tone: np.ndarray, size: int = 256) -> np.ndarray:
    """A skin-coloured field with a soft darker blob: the nearest a drawing gets to a lesion."""
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    centre = rng.uniform(-0.15, 0.15, size=2)
    distance = np.hypot(xs - centre[0], ys - centre[1]) / rng.uniform(0.12, 0.3)
    darkness = np.exp(-(distance**2))[..., None] * rng.uniform(0.3, 0.6)
    return tone * (1 - darkness) + rng.normal(0, 3, size=(size, size, 1))


def hard_cases() -> Named:
    """Close to dermoscopy in colour and texture; expected to be the most often missed."""
    rng = np.random.default_rng(7)
    tones = np.asarray(SKIN_TONES, dtype=np.float64)
    for index, tone in enumerate(tones):
        yield (
            f"hard/skin-linear-{index}",
            from_array(linear_gradient(tone, tones[index - 1], index, 256)),
        )
        yield f"hard/skin-radial-{index}", from_array(radial_gradient(tones[index - 2], tone, 256))
        yield f"hard/skin-blob-{index}", from_array(skin_blob(rng, tone))
    for index, photo in enumerate(sample_photos()):
        crop = from_array(photo[100:356, 150:406])
        for radius in (4, 12):
            yield (
                f"hard/blurred-photo-{index}-{radius}",
                crop.filter(ImageFilter.GaussianBlur(radius)),
            )


def screenshots() -> Named:
    """Chromium screenshots of local pages (see scripts/make_ood_screenshots.py)."""
    for path in sorted(SCREENSHOT_FOLDER.glob("*.jpg")) + sorted(SCREENSHOT_FOLDER.glob("*.png")):
        with Image.open(path) as image:
            yield f"screenshot/{path.stem}", image.convert("RGB")


GENERATORS = (
    photos,
    digits,
    texts,
    drawings,
    charts,
    blanks,
    noises,
    gradients,
    checkerboards,
    screens,
    hard_cases,
    screenshots,
)


def non_dermoscopy_images() -> list[tuple[str, Image.Image]]:
    """(name, RGB image) for every image of the set, in a fixed order."""
    return [item for generator in GENERATORS for item in generator()]


def kind_of(name: str) -> str:
    """The kind part of a name from `non_dermoscopy_images` ("text/page-3" -> "text")."""
    return name.split("/", 1)[0]
