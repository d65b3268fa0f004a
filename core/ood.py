"""Out-of-distribution score: how unlike the training images an image's features are.

The score is the Mahalanobis distance of the pooled backbone features to the training
split's, in a PCA subspace (the full 1,280 dimensions would need far more images than a
dermoscopy set has to estimate a covariance). The flagging threshold is a high quantile of
the scores of held-out real dermoscopy images, so nearly all of them pass.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

OOD_FILE = "ood.npz"


@dataclass(frozen=True)
class OodModel:
    mean: np.ndarray
    components: np.ndarray
    precision: np.ndarray
    threshold: float

    def score(self, features: np.ndarray) -> np.ndarray:
        projected = (np.asarray(features, dtype=np.float64) - self.mean) @ self.components.T
        return np.sqrt(np.einsum("ij,jk,ik->i", projected, self.precision, projected))

    def save(self, folder: Path) -> None:
        np.savez(
            Path(folder) / OOD_FILE,
            mean=self.mean,
            components=self.components,
            precision=self.precision,
            threshold=np.float64(self.threshold),
        )


def load_ood(folder: Path) -> OodModel | None:
    path = Path(folder) / OOD_FILE
    if not path.is_file():
        return None
    with np.load(path) as stored:
        return OodModel(
            stored["mean"], stored["components"], stored["precision"], float(stored["threshold"])
        )


def fit_ood(
    train_features: np.ndarray,
    heldout_features: np.ndarray,
    dimensions: int = 32,
    quantile: float = 0.995,
    shrinkage: float = 0.05,
) -> OodModel:
    """Fit on the training split, set the threshold on held-out images."""
    if len(train_features) <= dimensions:
        raise ValueError(f"need more than {dimensions} training images for the OOD model")
    train = np.asarray(train_features, dtype=np.float64)
    mean = train.mean(axis=0)
    _, _, right_vectors = np.linalg.svd(train - mean, full_matrices=False)
    components = right_vectors[:dimensions]
    projected = (train - mean) @ components.T
    covariance = np.cov(projected, rowvar=False)
    # Shrinking towards the diagonal keeps the inverse stable on a few hundred images.
    covariance = (1 - shrinkage) * covariance + shrinkage * np.diag(np.diag(covariance))
    model = OodModel(mean, components, np.linalg.inv(covariance), threshold=np.inf)
    threshold = float(np.quantile(model.score(heldout_features), quantile))
    return OodModel(mean, components, model.precision, threshold)
