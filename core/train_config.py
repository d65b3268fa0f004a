"""Training settings with their defaults: importable without TensorFlow.

The command line and the Train page take their defaults from here, so the two never drift.
"""

from dataclasses import dataclass

from core import config

AUGMENTATION_STRENGTHS = {"none": 0.0, "light": 0.5, "medium": 1.0, "strong": 1.5}


@dataclass
class TrainConfig:
    data_dir: str
    csv: str | None = None
    sites: tuple[str, ...] = ("all",)
    backbone: str = config.DEFAULT_BACKBONE
    image_size: int = config.DEFAULT_IMAGE_SIZE
    weights: str = "imagenet"
    head_epochs: int = 30
    fine_tune_epochs: int = 16
    fine_tune_layers: int = 50
    batch_size: int = 32
    head_learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    imbalance: str = "class_weight"
    augmentation: str = "medium"
    threshold_rule: str = "sensitivity"
    target_sensitivity: float = 0.92
    calibration: str = "platt"
    tta: bool = True
    patience: int = 4
    seed: int = 42
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    strategy: str = "default"
    resample: str = "bilinear"

    def validate(self) -> None:
        if self.imbalance not in ("class_weight", "none"):
            raise ValueError(f"imbalance must be 'class_weight' or 'none', got {self.imbalance!r}")
        if self.augmentation not in AUGMENTATION_STRENGTHS:
            raise ValueError(f"augmentation must be one of {sorted(AUGMENTATION_STRENGTHS)}")
        if self.head_epochs < 1 or self.fine_tune_epochs < 0:
            raise ValueError("head epochs must be at least 1 and fine-tune epochs at least 0")
        if self.strategy not in ("default", "mirrored"):
            raise ValueError(f"strategy must be 'default' or 'mirrored', got {self.strategy!r}")
