"""Training settings with their defaults and allowed values: importable without TensorFlow.

The command line, the Train page and the worker take their defaults and choices from here
(and the backbones and input sizes from `core.modelling.backbones`), so that they never drift.
"""

from dataclasses import dataclass

from core import config
from core.modelling.backbones import check_backbone, check_image_size

TARGETS = ("diagnosis", "binary")
# "imagenet", "none" (random initialisation) or the path of a weights file.
WEIGHTS = ("imagenet", "none")
IMBALANCES = ("class_weight", "none")
AUGMENTATION_STRENGTHS = {"none": 0.0, "light": 0.5, "medium": 1.0, "strong": 1.5}
THRESHOLD_RULES = ("sensitivity", "youden", "held_out_sources")
# The image and its two mirror images, or all eight flips and quarter turns.
TTA_VIEWS = ("flips", "dihedral")
# The sensitivity a "sensitivity" or "held_out_sources" threshold aims at.
TARGET_SENSITIVITY = 0.92
INPUT_PIPELINES = ("auto", "memory", "stream")
# multiworker: TensorFlow's MultiWorkerMirroredStrategy across machines (core.train.distributed).
STRATEGIES = ("default", "mirrored", "multiworker")
# Settings a preset changes; anything given explicitly on top still wins. PRESET_COSTS says
# what each costs, as measured on the reference data for the README.
PRESETS = {
    "default": {},
    # For a 2-core machine without a GPU: within about 15 minutes on the bundled data.
    "quick": {
        "image_size": 160,
        "fine_tune_epochs": 3,
        "tta_views": "flips",
        "threshold_rule": "sensitivity",
    },
}
PRESET_COSTS = {
    "default": "224 px, 12 fine-tune epochs, eight-view TTA, threshold from held-out sources: "
    "about an hour on the 10,634 reference images on a 2-core CPU without a GPU "
    "(test ROC AUC 0.917).",
    "quick": "160 px, 3 fine-tune epochs, flip TTA, validation threshold: about 8 minutes on "
    "the same images and CPU (test ROC AUC 0.886). For a machine without a GPU.",
}


@dataclass
class TrainConfig:
    data_dir: str
    csv: str | None = None
    sites: tuple[str, ...] = ("all",)
    backbone: str = config.DEFAULT_BACKBONE
    image_size: int = config.DEFAULT_IMAGE_SIZE
    weights: str = "imagenet"
    target: str = "diagnosis"
    head_epochs: int = 30
    fine_tune_epochs: int = 12
    fine_tune_layers: int = 100
    batch_size: int = 32
    head_learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    imbalance: str = "class_weight"
    augmentation: str = "medium"
    threshold_rule: str = "held_out_sources"
    target_sensitivity: float = TARGET_SENSITIVITY
    calibration: str = "platt"
    tta: bool = True
    tta_views: str = "dihedral"
    patience: int = 4
    seed: int = 42
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    strategy: str = "default"
    resample: str = "bilinear"
    # "memory" decodes every image into RAM, "stream" reads them from the decoded-image
    # cache through tf.data; "auto" picks by size (see `core.train.pipeline.choose_pipeline`).
    input_pipeline: str = "auto"

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config from its JSON form (a card's `config`, a job's config.json): lists back to
        tuples; keys this version does not know are refused by the constructor."""
        values = dict(values)
        for name in ("sites", "fractions"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def validate(self) -> None:
        check_backbone(self.backbone)
        check_image_size(self.image_size)
        if self.imbalance not in IMBALANCES:
            raise ValueError(f"imbalance must be one of {IMBALANCES}, got {self.imbalance!r}")
        if self.augmentation not in AUGMENTATION_STRENGTHS:
            raise ValueError(f"augmentation must be one of {sorted(AUGMENTATION_STRENGTHS)}")
        if self.head_epochs < 1 or self.fine_tune_epochs < 0:
            raise ValueError("head epochs must be at least 1 and fine-tune epochs at least 0")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.tta_views not in TTA_VIEWS:
            raise ValueError(f"tta_views must be one of {TTA_VIEWS}, got {self.tta_views!r}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {THRESHOLD_RULES}")
        if self.input_pipeline not in INPUT_PIPELINES:
            raise ValueError(f"input_pipeline must be one of {INPUT_PIPELINES}")


def preset_config(preset: str, **settings) -> TrainConfig:
    """A TrainConfig from a preset, with `settings` (say data_dir) on top."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[preset], **settings})
