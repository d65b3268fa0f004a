"""Progress reports and cancellation, shared by training, cross-validation and the worker.

Kept free of TensorFlow so that the worker and the app can report and cancel without
loading it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Progress:
    """One progress report; `stage` is a short word, `message` a sentence for people."""

    stage: str
    message: str
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    logs: dict = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]


class Cancelled(Exception):
    """Raised inside training when the caller asked it to stop."""
