"""Out-of-distribution score: how unlike the training images an image's features are.

Pooled backbone features are first raised to the power 1/4 and scaled to unit length. Pooled
ReLU features are sparse and heavy-tailed; the fourth root lets the many small activations
count next to the few large ones (which channels fire at all says much about what kind of
picture it is), and unit length removes the overall activation level, which varies more
between dermoscopy images than between dermoscopy and other pictures. On the shared data the
fourth root flagged more non-dermoscopy images than the square root, and about as many real
ones.

The score is then the Mahalanobis distance under a probabilistic PCA Gaussian fitted on the
training split: the whitened distance in the top principal components plus the residual
outside them, divided by the average variance there.

The residual is what makes the flag fire. A landscape, a screenshot or a black image differs
from dermoscopy mostly in directions the top components do not span, so a distance inside the
principal subspace alone (the first version of this module) scored them like dermoscopy.

Features alone miss smooth pictures once the backbone is fine-tuned: a white or grey image, a
colour gradient or a skin-coloured blob lands among real dermoscopy. So the detector also keeps
the range of an image's pixel detail (the log mean difference between neighbouring grey
values) over held-out dermoscopy: every dermoscopy photograph has skin texture and sensor
noise, a blank or a gradient has almost none, and an image outside that range is flagged
whatever its features.

The flagging threshold is a high quantile of the scores of held-out real dermoscopy images, so
nearly all of them pass. Files written by the first version (keys mean, components, precision,
threshold) still load and score exactly as before: they are the special case with no
transform and no residual term.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from core.storage.runs import OOD_FILE

DEFAULT_COMPONENTS = 32
DEFAULT_POWER = 0.25
DEFAULT_QUANTILE = 0.995
# The pixel-detail range keeps all but this share of held-out dermoscopy at each end.
DEFAULT_DETAIL_TAIL = 0.001


@dataclass(frozen=True)
class OodModel:
    """mean, components (k x D) and precision (k x k) live in the transformed feature space."""

    mean: np.ndarray
    components: np.ndarray
    precision: np.ndarray
    threshold: float
    # 1 / the average variance outside the principal subspace; 0 ignores the residual.
    residual_precision: float = 0.0
    # Features are raised to this power (sign kept), then scaled to unit length if asked.
    power: float = 1.0
    unit_length: bool = False
    method: str = ""
    # (low, high) `core.serving.inference.pixel_detail` of held-out dermoscopy; None where it was never fitted.
    detail_range: tuple[float, float] | None = None

    def transform(self, features: np.ndarray) -> np.ndarray:
        values = np.asarray(features, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"expected features of shape (N, {self.mean.shape[0]}), got {values.shape}"
            )
        return transform(values, self.power, self.unit_length)

    def score(self, features: np.ndarray, details: np.ndarray | None = None) -> np.ndarray:
        """One float per row; higher is more unusual. Flag when score > threshold.

        With `details` (`core.serving.inference.pixel_detail` of the same images) an image outside the detail range
        scores at least threshold * (1 + its distance outside), so it is flagged.
        """
        centred = self.transform(features) - self.mean
        projected = centred @ self.components.T
        inside = np.einsum("ij,jk,ik->i", projected, self.precision, projected)
        # Rounding can make the residual a tiny negative number for points in the subspace.
        residual = np.maximum(np.sum(centred**2, axis=1) - np.sum(projected**2, axis=1), 0.0)
        scores = np.sqrt(inside + self.residual_precision * residual)
        if details is None or self.detail_range is None:
            return scores
        low, high = self.detail_range
        values = np.asarray(details, dtype=np.float64)
        outside = np.maximum(np.maximum(low - values, values - high), 0.0)
        return np.where(outside > 0, np.maximum(scores, self.threshold * (1 + outside)), scores)

    def save(self, folder: Path) -> None:
        np.savez(
            Path(folder) / OOD_FILE,
            mean=self.mean,
            components=self.components,
            precision=self.precision,
            threshold=np.float64(self.threshold),
            residual_precision=np.float64(self.residual_precision),
            power=np.float64(self.power),
            unit_length=np.bool_(self.unit_length),
            method=np.str_(self.method),
            detail_range=np.asarray(self.detail_range or (np.nan, np.nan), dtype=np.float64),
        )


def legacy_method(components: int) -> str:
    return f"Mahalanobis distance, PCA-{components}"


def load_ood(folder: Path) -> OodModel | None:
    path = Path(folder) / OOD_FILE
    if not path.is_file():
        return None
    with np.load(path) as stored:
        mean, components = stored["mean"], stored["components"]
        if "residual_precision" not in stored:
            return OodModel(
                mean,
                components,
                stored["precision"],
                float(stored["threshold"]),
                method=legacy_method(len(components)),
            )
        return OodModel(
            mean,
            components,
            stored["precision"],
            float(stored["threshold"]),
            residual_precision=float(stored["residual_precision"]),
            power=float(stored["power"]),
            unit_length=bool(stored["unit_length"]),
            method=str(stored["method"]),
            detail_range=_detail_range(stored),
        )


def _detail_range(stored) -> tuple[float, float] | None:
    if "detail_range" not in stored or np.isnan(stored["detail_range"]).any():
        return None
    low, high = stored["detail_range"]
    return float(low), float(high)


def describe(components: int, power: float, quantile: float) -> str:
    transform = {0.5: "square-root", 0.25: "fourth-root"}.get(power, f"power-{power:g}")
    return (
        f"Mahalanobis distance under probabilistic PCA ({components} components + residual) "
        f"of {transform}, unit-length features; threshold at the {quantile:.1%} quantile "
        "of held-out dermoscopy"
    )


def transform(features: np.ndarray, power: float, unit_length: bool) -> np.ndarray:
    """Signed power, then unit length if asked (an all-zero row stays zero, far from the mean)."""
    values = features if power == 1.0 else np.sign(features) * np.abs(features) ** power
    if not unit_length:
        return values
    return values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)


def checked_features(features: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(features, dtype=np.float64)
    if values.ndim != 2 or not len(values) or not np.all(np.isfinite(values)):
        raise ValueError(f"{what} must be a non-empty, finite 2-D array (images x features)")
    return values


def check_settings(train: np.ndarray, heldout: np.ndarray, components: int) -> None:
    # Twice the components is the least that leaves a residual and a usable covariance.
    if len(train) <= 2 * components:
        raise ValueError(
            f"need more than {2 * components} training images for the OOD model "
            f"({components} components), got {len(train)}"
        )
    if heldout.shape[1] != train.shape[1]:
        raise ValueError(
            f"heldout_features have {heldout.shape[1]} columns, train_features {train.shape[1]}"
        )
    if not 0 < components < train.shape[1]:
        raise ValueError(f"components must be between 1 and {train.shape[1] - 1}")


def principal_model(values: np.ndarray, components: int, power: float) -> OodModel:
    """The probabilistic PCA Gaussian of transformed training features (no threshold yet)."""
    mean = values.mean(axis=0)
    centred = values - mean
    variances, vectors = np.linalg.eigh(centred.T @ centred / (len(values) - 1))
    variances, vectors = variances[::-1], vectors[:, ::-1]
    residual_variance = float(variances[components:].mean())
    if residual_variance <= 1e-12 * max(float(variances[0]), 1e-300):
        raise ValueError("training features have (almost) no variance outside the top components")
    return OodModel(
        mean,
        vectors[:, :components].T.copy(),
        np.diag(1.0 / variances[:components]),
        threshold=np.inf,
        residual_precision=1.0 / residual_variance,
        power=power,
        unit_length=True,
    )


def fit_ood(
    train_features: np.ndarray,
    heldout_features: np.ndarray,
    components: int = DEFAULT_COMPONENTS,
    power: float = DEFAULT_POWER,
    quantile: float = DEFAULT_QUANTILE,
    heldout_details: np.ndarray | None = None,
    detail_tail: float = DEFAULT_DETAIL_TAIL,
) -> OodModel:
    """Fit on the training split, set the threshold on held-out images.

    `components` principal components are whitened; the rest is the residual. `power` is
    applied to the features before scaling them to unit length (0.25: fourth root). The
    threshold is the `quantile` of the held-out images' scores. With `heldout_details`
    (`core.serving.inference.pixel_detail` of the held-out images) the detail range keeps all but `detail_tail` of
    them at each end.
    """
    train = checked_features(train_features, "train_features")
    heldout = checked_features(heldout_features, "heldout_features")
    check_settings(train, heldout, components)
    if not 0 < power <= 1 or not 0 < quantile < 1:
        raise ValueError(
            f"power must be in (0, 1] and quantile in (0, 1), got {power}, {quantile}"
        )
    model = principal_model(transform(train, power, unit_length=True), components, power)
    method = describe(components, power, quantile)
    detail_range = None
    if heldout_details is not None:
        low, high = np.quantile(heldout_details, [detail_tail, 1 - detail_tail])
        detail_range = (float(low), float(high))
        method += f"; or pixel detail outside its {1 - 2 * detail_tail:.1%} range there"
    return dataclasses.replace(
        model,
        threshold=float(np.quantile(model.score(heldout), quantile)),
        method=method,
        detail_range=detail_range,
    )


def evaluate_detector(
    model: OodModel,
    dermoscopy_features: np.ndarray,
    other_features: np.ndarray,
    dermoscopy_details: np.ndarray | None = None,
    other_details: np.ndarray | None = None,
) -> dict[str, float]:
    """Shares flagged of real dermoscopy and of other images, and the score's AUROC.

    AUROC treats non-dermoscopy as the positive class: 1.0 means every other image scores
    above every dermoscopy image, whatever the threshold.
    """
    dermoscopy = model.score(
        checked_features(dermoscopy_features, "dermoscopy_features"), dermoscopy_details
    )
    other = model.score(checked_features(other_features, "other_features"), other_details)
    truth = np.concatenate([np.zeros(len(dermoscopy)), np.ones(len(other))])
    return {
        "dermoscopy_flagged": float(np.mean(dermoscopy > model.threshold)),
        "non_dermoscopy_flagged": float(np.mean(other > model.threshold)),
        "auroc": float(roc_auc_score(truth, np.concatenate([dermoscopy, other]))),
        "n_dermoscopy": len(dermoscopy),
        "n_non_dermoscopy": len(other),
    }
