"""Trust a reader can use: a calibrated confidence per lesion and a voxel map of error probability.

The evidential outputs of MEFN rank errors, but their scale means nothing to a reader (the fused
u of three combined opinions is about the product of their masses). Two small models, fitted on
validation predictions and stored in the card of the weights or adapter, turn them into
probabilities:

- **Lesion confidence** (:class:`LesionConfidence`): the probability that a predicted lesion (an
  18-connected component of the mask) is a true lesion, i.e. touches a reference lesion. A
  logistic regression on the lesion's evidence (:data:`LESION_FEATURES`: mean and maximum u,
  mean and maximum lesion probability, the disagreement of the CT and PET opinions, SUVmax, its
  contrast over the surroundings, volume), its L2 penalty chosen by cross-validated log-loss.
- **Voxel error map** (:class:`VoxelErrorMap`): the probability that a voxel's delivered label is
  wrong. For the voxels inside the mask (where an error is a false positive) and, apart, those
  outside it (a missed lesion): a logistic regression on the voxel's evidence
  (:data:`VOXEL_FEATURES`: the network's own error probability, u, the distance to the mask's
  edge, the uptake) followed by an isotonic regression of its output, fitted on the voxels
  near lesions (within :data:`NEAR_MM` of a reference or predicted lesion) and a weighted
  sample of the rest.

Both are plain numpy (Newton's method and pool-adjacent-violators); :func:`fit_trust` fits them
from validation cases, :func:`trust_record` stores them as JSON in a card.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cc3d
import numpy as np
from scipy import ndimage

from mefn.errors import CheckpointError, InputError

__all__ = [
    "CT_FEATURES",
    "DEFAULT_REVIEW_BELOW",
    "LESION_FEATURES",
    "NEAR_MM",
    "VOXEL_FEATURES",
    "EvidenceMaps",
    "IsotonicMap",
    "LesionConfidence",
    "LesionOutcomes",
    "LogisticModel",
    "TrustCase",
    "Calibrator",
    "VoxelErrorMap",
    "fit_calibrator",
    "fit_isotonic",
    "fit_logistic",
    "fit_trust",
    "iter_lesions",
    "lesion_evidence",
    "lesion_outcomes",
    "lesion_truth",
    "near_lesions",
    "out_of_fold_confidence",
    "trust_from_card",
    "trust_record",
]

#: A lesion is flagged for review when its confidence is below this (unless the card says).
DEFAULT_REVIEW_BELOW = 0.5
#: Voxels within this distance (mm) of a reference or predicted lesion are "near lesions".
NEAR_MM = 10.0
#: Distances to the mask's edge are clipped here (mm): farther voxels are all alike.
EDGE_MM = 20.0
_U_FLOOR = 1e-6
_P_CLIP = 1e-6
CONNECTIVITY: Literal[18] = 18

LESION_FEATURES = (
    "log_u_mean",
    "log_u_max",
    "p_mean",
    "p_max",
    "log_modality_disagreement",
    "log_suv_max",
    "log_contrast",
    "log_volume_ml",
    "ct_fat_fraction",
    "ct_air_fraction",
    "ct_bone_fraction",
)
#: CT tissue classes of a lesion's voxels (HU): fat (brown fat's uptake is a classic false
#: positive), lung or air, bone (marrow uptake is another); soft tissue is the rest
FAT_HU = (-200.0, -30.0)
BONE_HU = 150.0
#: the lesion features read from the CT (present when the evidence maps hold a CT)
CT_FEATURES = ("ct_fat_fraction", "ct_air_fraction", "ct_bone_fraction")
VOXEL_FEATURES = ("logit_network_error", "log_u", "edge_in", "edge_out", "log_suv")
#: the evidence of the voxels inside the mask (where an error is a false positive) and outside
#: (a missed lesion): each has its own calibrator
INSIDE_FEATURES = ("logit_network_error", "log_u", "edge_in", "log_suv")
OUTSIDE_FEATURES = ("logit_network_error", "log_u", "edge_out", "log_suv")


@dataclass(frozen=True)
class EvidenceMaps:
    """The maps a lesion's and a voxel's evidence is read from, on the mask's grid.

    ``lesion_probability`` is ``1 - p(background)``; ``uncertainty`` the fused evidential u;
    ``uncertainty_ct`` and ``uncertainty_pet`` the CT and PET opinions' u (None for models
    without them); ``suv`` the PET in SUV; ``ct`` the CT in HU (None: no CT evidence)."""

    lesion_probability: np.ndarray
    uncertainty: np.ndarray
    suv: np.ndarray
    spacing_mm: tuple[float, float, float]
    uncertainty_ct: np.ndarray | None = None
    uncertainty_pet: np.ndarray | None = None
    ct: np.ndarray | None = None


def iter_lesions(mask: np.ndarray) -> Iterator[tuple[int, tuple[slice, ...], np.ndarray]]:
    """Each lesion of a label map as ``(label, bounding box, component mask in the box)``: the
    18-connected components of each foreground label, in label then component order (the
    order :func:`mefn.postprocess.lesion_table` reads them in before sorting)."""
    for label in (int(v) for v in np.unique(mask) if v != 0):
        components = cc3d.connected_components(mask == label, connectivity=CONNECTIVITY)
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            if box is not None:
                yield label, box, components[box] == index


def _log(value: float) -> float:
    return math.log(max(value, 0.0) + _U_FLOOR)


def lesion_evidence(
    box: tuple[slice, ...], lesion: np.ndarray, maps: EvidenceMaps
) -> dict[str, float]:
    """The evidence of one lesion (``lesion``: its voxels inside ``box``), by the names of
    :data:`LESION_FEATURES` (without the modality feature when ``maps`` has no CT and PET
    opinions, without :data:`CT_FEATURES` when it has no CT)."""
    from mefn.postprocess import BACKGROUND_GAP_MM, BACKGROUND_SHELL_MM, _background

    spacing = np.asarray(maps.spacing_mm, dtype=np.float64)
    u = maps.uncertainty[box][lesion].astype(np.float64)
    p = maps.lesion_probability[box][lesion].astype(np.float64)
    suv_max = float(maps.suv[box][lesion].max())
    # contrast: SUVmax over its background, read as the PET check reads it
    margin = np.ceil((BACKGROUND_GAP_MM + BACKGROUND_SHELL_MM) / spacing).astype(int) + 1
    padded = tuple(
        slice(max(s.start - m, 0), min(s.stop + m, n))
        for s, m, n in zip(box, margin, maps.suv.shape)
    )
    inner = np.zeros([s.stop - s.start for s in padded], dtype=bool)
    inner[tuple(slice(b.start - q.start, b.stop - q.start) for b, q in zip(box, padded))] = lesion
    distance = ndimage.distance_transform_edt(~inner, sampling=spacing)
    background = _background(maps.suv[padded], distance, BACKGROUND_GAP_MM)
    volume_ml = float(lesion.sum()) * float(np.prod(spacing)) / 1000.0
    out = {
        "log_u_mean": _log(float(u.mean())),
        "log_u_max": _log(float(u.max())),
        "p_mean": float(p.mean()),
        "p_max": float(p.max()),
        "log_suv_max": math.log(max(suv_max, 0.0) + 1.0),
        "log_contrast": math.log((max(suv_max, 0.0) + 0.1) / (max(background, 0.0) + 0.1)),
        "log_volume_ml": math.log(volume_ml),
    }
    if maps.ct is not None:  # what tissue the lesion lies in, as the CT shows it
        hu = maps.ct[box][lesion].astype(np.float64)
        out["ct_fat_fraction"] = float(np.mean((hu > FAT_HU[0]) & (hu < FAT_HU[1])))
        out["ct_air_fraction"] = float(np.mean(hu <= FAT_HU[0]))
        out["ct_bone_fraction"] = float(np.mean(hu >= BONE_HU))
    if maps.uncertainty_ct is not None and maps.uncertainty_pet is not None:
        diff = maps.uncertainty_ct[box][lesion].astype(np.float64) - maps.uncertainty_pet[box][
            lesion
        ].astype(np.float64)
        out["log_modality_disagreement"] = _log(float(np.abs(diff).mean()))
    return out


def lesion_truth(box: tuple[slice, ...], lesion: np.ndarray, reference: np.ndarray) -> bool:
    """Whether a predicted lesion is true: it touches a reference lesion (AutoPET's rule for a
    detection; a lesion touching none is a false positive)."""
    return bool((reference[box][lesion] != 0).any())


# --- models ----------------------------------------------------------------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


@dataclass(frozen=True)
class LogisticModel:
    """``P(y = 1 | x) = sigmoid(intercept + sum_k coef_k (x_k - mean_k) / scale_k)``."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    l2: float = 0.0

    def probability(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return _sigmoid(self.intercept + z @ self.coef)

    def folded(self, names: Sequence[str]) -> tuple[np.ndarray, float]:
        """The weights over the columns ``names`` (a superset of the features; 0 for the
        others) and the intercept of the same linear score with the standardisation folded
        in: ``x @ w + b`` equals the score :meth:`probability` takes the sigmoid of."""
        w = np.zeros(len(names), dtype=np.float64)
        for k, name in enumerate(self.features):
            w[list(names).index(name)] = self.coef[k] / self.scale[k]
        return w, float(self.intercept - np.dot(self.mean / self.scale, self.coef))

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
            "l2": float(self.l2),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogisticModel:
        try:
            features = tuple(str(f) for f in data["features"])
            arrays = [np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "coef")]
            intercept = float(data["intercept"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"a card's logistic model lacks or mangles {exc}; expected features, mean, "
                "scale, coef and intercept as written by mefn calibrate"
            ) from None
        if any(a.shape != (len(features),) for a in arrays) or not np.all(arrays[1] > 0):
            raise CheckpointError(
                f"a card's logistic model has {len(features)} features but mean, scale and coef "
                f"of lengths {[a.size for a in arrays]} (scale must be > 0); run mefn calibrate "
                "again"
            )
        mean, scale, coef = arrays
        return cls(features, mean, scale, coef, intercept, float(data.get("l2", 0.0)))


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    features: Sequence[str],
    l2: float = 1.0,
    weights: np.ndarray | None = None,
    iterations: int = 50,
) -> LogisticModel:
    """An L2-penalised logistic regression of ``y`` (0/1) on ``x`` (rows: samples) by Newton's
    method, on standardised features (the intercept is not penalised). ``weights``: each
    sample's weight (default 1)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[0] != y.size or x.shape[1] != len(features) or w.size != y.size:
        raise ValueError(
            f"x {x.shape}, y {y.shape}, weights {w.shape} and {len(features)} features disagree"
        )
    mean = np.average(x, axis=0, weights=w)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = np.hstack([np.ones((y.size, 1)), (x - mean) / scale])
    beta = np.zeros(z.shape[1])
    prior = float(np.clip(np.average(y, weights=w), 1e-6, 1 - 1e-6))
    beta[0] = math.log(prior / (1 - prior))
    penalty = np.full(z.shape[1], l2 / max(float(w.sum()), 1e-12))
    penalty[0] = 0.0
    n = float(w.sum())

    def objective(b: np.ndarray) -> float:
        m = z @ b  # log(1 + e^m) - y m, computed without overflow
        return float(w @ (np.logaddexp(0.0, m) - y * m)) / n + 0.5 * float(penalty @ (b * b))

    current = objective(beta)
    for _ in range(iterations):
        p = _sigmoid(z @ beta)
        grad = z.T @ (w * (p - y)) / n + penalty * beta
        hess = (z * (w * p * (1 - p))[:, None]).T @ z / n + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        size = 1.0  # backtracking: Newton's full step can overshoot on near-separable data
        while size > 1e-6 and objective(beta - size * step) > current:
            size *= 0.5
        beta = beta - size * step
        new = objective(beta)
        if current - new < 1e-10 or float(np.abs(size * step).max()) < 1e-8:
            break
        current = new
    return LogisticModel(tuple(features), mean, scale, beta[1:], float(beta[0]), float(l2))


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def choose_l2(
    x: np.ndarray,
    y: np.ndarray,
    features: Sequence[str],
    candidates: Sequence[float] = (0.1, 1.0, 3.0, 10.0, 30.0, 100.0),
    folds: int = 5,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The L2 penalty with the smallest log-loss over ``folds``-fold cross-validation (folds
    stratified by class, in a seeded order): the penalty and every candidate's loss."""
    y = np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype=int)
    for cls in (0.0, 1.0):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        fold[idx] = np.arange(idx.size) % folds
    losses: dict[float, float] = {}
    for l2 in candidates:
        pred = np.empty(y.size)
        for k in range(folds):
            test = fold == k
            if not test.any():
                continue
            model = fit_logistic(x[~test], y[~test], features, l2)
            pred[test] = model.probability(x[test])
        losses[float(l2)] = _log_loss(pred, y)
    best = min(losses, key=lambda k: (round(losses[k], 6), -k))
    return best, losses


@dataclass(frozen=True)
class IsotonicMap:
    """A non-decreasing map from a score to a probability: linear between the knots."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, score: np.ndarray) -> np.ndarray:
        return np.interp(score, self.x, self.y)

    def to_json(self) -> dict[str, list[float]]:
        return {"x": [float(v) for v in self.x], "y": [float(v) for v in self.y]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IsotonicMap:
        try:
            x = np.asarray(data["x"], dtype=np.float64)
            y = np.asarray(data["y"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                "a card's isotonic map needs x and y (lists of numbers); run mefn calibrate again"
            ) from None
        if x.ndim != 1 or x.shape != y.shape or x.size == 0 or np.any(np.diff(x) < 0):
            raise CheckpointError(
                f"a card's isotonic map needs increasing x and y of one length, found {x.size} "
                f"and {y.size}; run mefn calibrate again"
            )
        return cls(x, y)


def fit_isotonic(
    score: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None, bins: int = 200
) -> IsotonicMap:
    """The weighted isotonic (non-decreasing) regression of ``target`` on ``score`` by
    pool-adjacent-violators, on ``bins`` quantile bins of the score (enough for a smooth map
    of millions of samples): flat over each pooled block's scores, linear between blocks."""
    s = np.asarray(score, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    edges = np.unique(np.quantile(s, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, max(edges.size - 2, 0))
    n = max(edges.size - 1, 1)
    sw = np.bincount(idx, weights=w, minlength=n)
    keep = sw > 0
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    np.minimum.at(lo, idx, s)
    np.maximum.at(hi, idx, s)
    ys = np.bincount(idx, weights=w * t, minlength=n)[keep] / sw[keep]
    # pool adjacent violators over the bins: blocks of (value, weight, lowest, highest score)
    blocks: list[list[float]] = []
    for yv, wv, lv, hv in zip(ys, sw[keep], lo[keep], hi[keep]):
        blocks.append([float(yv), float(wv), float(lv), float(hv)])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (y1, w1, l1, _h1), (y2, w2, _l2, h2) = blocks[-2], blocks[-1]
            blocks[-2] = [(y1 * w1 + y2 * w2) / (w1 + w2), w1 + w2, l1, h2]
            del blocks[-1]
    # flat over each block's scores, linear between blocks (as scikit-learn's isotonic map)
    knots_x = np.asarray([v for blk in blocks for v in (blk[2], blk[3])])
    knots_y = np.asarray([blk[0] for blk in blocks for _ in range(2)])
    return IsotonicMap(knots_x, np.clip(knots_y, 0.0, 1.0))


# --- lesion confidence -----------------------------------------------------------------------


@dataclass(frozen=True)
class LesionConfidence:
    """The calibrated probability that a predicted lesion is true, from its evidence."""

    model: LogisticModel

    def __call__(self, evidence: dict[str, float]) -> float:
        missing = [f for f in self.model.features if f not in evidence]
        if missing:
            raise InputError(
                f"the lesion confidence needs {', '.join(missing)}, which this model's outputs "
                "do not give; calibrate these weights again (mefn calibrate)"
            )
        row = np.asarray([[evidence[f] for f in self.model.features]])
        return float(self.model.probability(row)[0])

    def to_json(self) -> dict[str, Any]:
        return {"kind": "logistic", **self.model.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LesionConfidence:
        return cls(LogisticModel.from_json(data))


# --- voxel error map -------------------------------------------------------------------------


def _edges(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm, clipped to EDGE_MM) inside the mask to its outside, and outside the mask
    to it; computed in the mask's bounding box grown by EDGE_MM (the rest is EDGE_MM away)."""
    inside = mask != 0
    d_in = np.zeros(mask.shape, dtype=np.float32)
    d_out = np.full(mask.shape, EDGE_MM, dtype=np.float32)
    found = ndimage.find_objects(inside.astype(np.uint8))
    if not found or found[0] is None:
        return d_in, d_out
    margin = [int(np.ceil(EDGE_MM / s)) + 1 for s in spacing]
    box = tuple(
        slice(max(b.start - m, 0), min(b.stop + m, n))
        for b, m, n in zip(found[0], margin, mask.shape)
    )
    sub = inside[box]
    d_out[box] = np.minimum(ndimage.distance_transform_edt(~sub, sampling=spacing), EDGE_MM)
    d_in[box] = np.minimum(ndimage.distance_transform_edt(sub, sampling=spacing), EDGE_MM)
    return d_in, d_out


def voxel_features(
    mask: np.ndarray,
    maps: EvidenceMaps,
    part: slice = slice(None),
    edges: tuple[np.ndarray, np.ndarray] | None = None,
    names: Sequence[str] = VOXEL_FEATURES,
) -> np.ndarray:
    """The evidence ``names`` (of :data:`VOXEL_FEATURES`) of the voxels ``part`` (of the grid's
    C-order flat indices, default all), (N, len(names)) float32: the logit of the network's
    own probability that the delivered label is wrong, log u, the distances to the mask's edge
    inside and outside it (in cm, clipped at EDGE_MM) and log(1 + SUV) (uptake the mask leaves
    out is where lesions are missed). ``edges``: the mask's :func:`_edges`, when known."""
    unknown = [n for n in names if n not in VOXEL_FEATURES]
    if unknown:
        raise CheckpointError(
            f"the voxel error map names unknown features {unknown}; expected some of "
            f"{', '.join(VOXEL_FEATURES)}: calibrate these weights again (mefn calibrate)"
        )
    d_in, d_out = edges if edges is not None else _edges(mask, maps.spacing_mm)
    inside = mask.reshape(-1)[part] != 0

    def network_error() -> np.ndarray:
        p = maps.lesion_probability.reshape(-1)[part].astype(np.float32)
        err = np.clip(np.where(inside, 1.0 - p, p), _P_CLIP, 1.0 - _P_CLIP)
        return np.asarray(np.log(err / (1.0 - err)))

    def log_suv() -> np.ndarray:
        return np.asarray(np.log1p(np.maximum(maps.suv.reshape(-1)[part].astype(np.float32), 0)))

    compute = {
        "logit_network_error": network_error,
        "log_u": lambda: np.log(maps.uncertainty.reshape(-1)[part].astype(np.float32) + _U_FLOOR),
        "edge_in": lambda: d_in.reshape(-1)[part] / 10.0,
        "edge_out": lambda: d_out.reshape(-1)[part] / 10.0,
        "log_suv": log_suv,
    }
    out = np.empty((inside.size, len(names)), dtype=np.float32)
    for k, name in enumerate(names):
        out[:, k] = compute[name]()
    return out


@dataclass(frozen=True)
class Calibrator:
    """A logistic regression whose output an isotonic map recalibrates."""

    model: LogisticModel
    isotonic: IsotonicMap

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.isotonic(self.model.probability(x))

    def to_json(self) -> dict[str, Any]:
        return {"logistic": self.model.to_json(), "isotonic": self.isotonic.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibrator:
        try:
            return cls(
                LogisticModel.from_json(data["logistic"]), IsotonicMap.from_json(data["isotonic"])
            )
        except (KeyError, TypeError) as exc:
            raise CheckpointError(
                f"a card's voxel error map lacks {exc}; run mefn calibrate again"
            ) from None


def fit_calibrator(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, features: Sequence[str]
) -> Calibrator:
    """A weighted logistic regression of ``y`` on ``x`` (L2 penalty 1 over the total weight:
    next to none for the millions of voxels it stands for), then the isotonic regression of
    ``y`` on its output."""
    model = fit_logistic(x, y, features, l2=1.0, weights=w)
    return Calibrator(model, fit_isotonic(model.probability(x), y, w))


@dataclass(frozen=True)
class VoxelErrorMap:
    """The calibrated probability that a voxel's delivered label is wrong: one calibrator for
    the voxels inside the mask, one for those outside."""

    inside: Calibrator
    outside: Calibrator

    def __call__(self, mask: np.ndarray, maps: EvidenceMaps, chunk: int = 1 << 21) -> np.ndarray:
        """The error-probability map of ``mask`` (float32 in [0, 1], the grid of ``mask``)."""
        edges = _edges(mask, maps.spacing_mm)
        features = {n for c in (self.inside, self.outside) for n in c.model.features}
        names = sorted(features, key=VOXEL_FEATURES.index)
        # each stratum's linear score over the shared columns, in float32: a whole-body grid
        # holds 50 M voxels, almost all outside the mask
        (w_in, b_in), (w_out, b_out) = (
            (w.astype(np.float32), np.float32(b))
            for w, b in (self.inside.model.folded(names), self.outside.model.folded(names))
        )
        flat_mask = mask.reshape(-1)
        out = np.empty(mask.size, dtype=np.float32)
        for start in range(0, mask.size, chunk):  # bounded temporaries on large grids
            part = slice(start, start + chunk)
            inside = flat_mask[part] != 0
            feats = voxel_features(mask, maps, part, edges, names)  # once for both strata
            values = self.outside.isotonic(_sigmoid(feats @ w_out + b_out))
            if inside.any():
                values[inside] = self.inside.isotonic(_sigmoid(feats[inside] @ w_in + b_in))
            out[part] = values
        return out.reshape(mask.shape)

    def after_removal(
        self, drawn: np.ndarray, delivered: np.ndarray, maps: EvidenceMaps
    ) -> np.ndarray:
        """The error-probability map of ``delivered``, the mask ``drawn`` less some lesions
        (a confidence floor): the map of ``drawn``, on which the calibrators were fitted,
        with its complement on the removed voxels, whose label flipped to background (the
        probability that a voxel called lesion is wrong is that of its being background)."""
        out = self(drawn, maps)
        if delivered is not drawn:
            removed = (drawn != 0) & (delivered == 0)
            out[removed] = 1.0 - out[removed]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "logistic+isotonic, inside and outside the mask",
            "inside": self.inside.to_json(),
            "outside": self.outside.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VoxelErrorMap:
        try:
            return cls(Calibrator.from_json(data["inside"]), Calibrator.from_json(data["outside"]))
        except (KeyError, TypeError) as exc:
            raise CheckpointError(
                f"a card's voxel error map lacks {exc}; run mefn calibrate again"
            ) from None


def near_lesions(
    mask: np.ndarray, reference: np.ndarray, spacing: tuple[float, float, float]
) -> np.ndarray:
    """Voxels within NEAR_MM of a reference or predicted lesion (the lesions included)."""
    union = (mask != 0) | (reference != 0)
    if not union.any():
        return union
    d = _edges(union.astype(np.uint8), spacing)[1]
    return np.asarray(union | (d <= NEAR_MM))


# --- fitting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustCase:
    """One validation case's delivered mask, reference and evidence maps."""

    mask: np.ndarray
    reference: np.ndarray
    maps: EvidenceMaps


@dataclass(frozen=True)
class LesionOutcomes:
    """One validation case's predicted lesions, as the AutoPET 2022 metrics count them: enough
    to score the case again with any subset of its lesions removed
    (:meth:`metrics_without`), without its arrays.

    Per predicted lesion (the order of :func:`iter_lesions`): its evidence, whether it is true,
    its voxels, those inside the reference, and the reference components (18-connected) it
    touches; per reference component, its voxels."""

    evidence: tuple[dict[str, float], ...]
    true: np.ndarray
    voxels: np.ndarray
    overlap: np.ndarray
    touches: tuple[np.ndarray, ...]
    reference_voxels: np.ndarray
    voxel_ml: float

    def metrics_without(self, drop: np.ndarray, case: str = "") -> Any:
        """The case's AutoPET 2022 metrics (:class:`mefn.metrics.autopet.AutopetCaseMetrics`)
        when the lesions where ``drop`` is true are removed from the mask."""
        from mefn.metrics.autopet import AutopetCaseMetrics

        keep = ~np.asarray(drop, dtype=bool)
        reference = int(self.reference_voxels.sum())
        predicted = int(self.voxels[keep].sum())
        overlap = int(self.overlap[keep].sum())
        fp = int(self.voxels[keep & (self.overlap == 0)].sum())
        touched = np.zeros(self.reference_voxels.size, dtype=bool)
        for lesion in np.flatnonzero(keep):
            touched[self.touches[lesion]] = True
        fn = int(self.reference_voxels[~touched].sum())
        total = reference + predicted
        return AutopetCaseMetrics(
            case=case,
            year=2022,
            dice=2 * overlap / total if total else math.nan,
            fpv_ml=fp * self.voxel_ml,
            fnv_ml=fn * self.voxel_ml,
            fp_voxels=fp,
            fn_voxels=fn,
            reference_voxels=reference,
            predicted_voxels=predicted,
            voxel_volume_ml=self.voxel_ml,
        )


def lesion_outcomes(case: TrustCase) -> LesionOutcomes:
    """The evidence and the AutoPET 2022 bookkeeping of each predicted lesion of ``case``."""
    ref_labels = cc3d.connected_components(case.reference != 0, connectivity=CONNECTIVITY)
    reference_voxels = np.bincount(ref_labels.ravel())[1:]
    evidence, true, voxels, overlap, touches = [], [], [], [], []
    for _label, box, lesion in iter_lesions(case.mask):
        hit = ref_labels[box][lesion]
        evidence.append(lesion_evidence(box, lesion, case.maps))
        true.append(bool((hit != 0).any()))
        voxels.append(int(lesion.sum()))
        overlap.append(int(np.count_nonzero(hit)))
        touches.append(np.unique(hit[hit != 0]) - 1)
    return LesionOutcomes(
        evidence=tuple(evidence),
        true=np.asarray(true, dtype=bool),
        voxels=np.asarray(voxels, dtype=np.int64),
        overlap=np.asarray(overlap, dtype=np.int64),
        touches=tuple(touches),
        reference_voxels=reference_voxels.astype(np.int64),
        voxel_ml=float(np.prod(case.maps.spacing_mm)) / 1000.0,
    )


def out_of_fold_confidence(
    cases: Sequence[LesionOutcomes],
    features: Sequence[str],
    l2: float,
    folds: int = 5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Each case's lesion confidences from a model that never saw the case: the cases are
    split into ``folds`` folds (in a seeded order) and each fold's lesions are scored by the
    logistic model (penalty ``l2``) fitted on the other folds' lesions. A fold whose other
    folds hold only true or only false lesions is scored by the model fitted on all cases
    (in-sample for that fold: with so few lesions nothing better can be fitted)."""
    rows = [
        np.asarray([[e[f] for f in features] for e in c.evidence]).reshape(-1, len(features))
        for c in cases
    ]
    truth = [c.true.astype(np.float64) for c in cases]
    n = len(cases)
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=int)
    fold[order] = np.arange(n) % max(1, min(folds, n))
    x_all, y_all = np.vstack(rows), np.concatenate(truth)
    everything = fit_logistic(x_all, y_all, features, l2)
    out: list[np.ndarray] = [np.empty(0)] * n
    for k in np.unique(fold):
        train = [i for i in range(n) if fold[i] != k]
        y = np.concatenate([truth[i] for i in train]) if train else np.empty(0)
        model = everything
        if y.size and y.min() != y.max():
            model = fit_logistic(np.vstack([rows[i] for i in train]), y, features, l2)
        for i in np.flatnonzero(fold == k):
            out[i] = model.probability(rows[i]) if rows[i].size else np.empty(0)
    return out


@dataclass
class _Samples:
    lesion_rows: list[dict[str, float]] = field(default_factory=list)
    lesion_true: list[bool] = field(default_factory=list)
    voxel_x: list[np.ndarray] = field(default_factory=list)
    voxel_y: list[np.ndarray] = field(default_factory=list)
    voxel_w: list[np.ndarray] = field(default_factory=list)
    voxel_in: list[np.ndarray] = field(default_factory=list)


def _sample_voxels(
    case: TrustCase, rng: np.random.Generator, n_near: int, n_far: int, far_weight: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``n_near`` voxels near lesions and ``n_far`` of the rest, each weighted by how
    many voxels it stands for: (features of VOXEL_FEATURES, error 0/1, weight, inside)."""
    feats = voxel_features(case.mask, case.maps)
    error = ((case.mask != 0) != (case.reference != 0)).ravel()
    near = near_lesions(case.mask, case.reference, case.maps.spacing_mm).ravel()
    inside = (case.mask != 0).ravel()
    xs, ys, ws, ins = [], [], [], []
    for region, cap, scale in ((near, n_near, 1.0), (~near, n_far, far_weight)):
        idx = np.flatnonzero(region)
        if idx.size == 0:
            continue
        take = idx if idx.size <= cap else rng.choice(idx, cap, replace=False)
        xs.append(feats[take])
        ys.append(error[take])
        ws.append(np.full(take.size, scale * idx.size / take.size))
        ins.append(inside[take])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws), np.concatenate(ins)


def fit_trust(
    cases: Iterable[TrustCase],
    seed: int = 0,
    n_near: int = 100_000,
    n_far: int = 20_000,
    far_weight: float = 1.0,
    outcomes: list[LesionOutcomes] | None = None,
) -> tuple[LesionConfidence, VoxelErrorMap, dict[str, Any]]:
    """The lesion confidence and the voxel error map fitted on validation ``cases`` (read one at
    a time), with a summary of what they were fitted on (lesion counts, the chosen penalty).
    ``far_weight`` scales the weight of the voxels farther than NEAR_MM from any lesion (1:
    each voxel counts once, a map calibrated over whole volumes; docs/trust.md measures
    lower values). ``outcomes``, when given, receives each case's :class:`LesionOutcomes`
    (to choose a confidence floor on: :func:`mefn.calibration.choose_min_confidence`)."""
    rng = np.random.default_rng(seed)
    s = _Samples()
    n_cases = 0
    for case in cases:
        n_cases += 1
        found = lesion_outcomes(case)
        s.lesion_rows.extend(found.evidence)
        s.lesion_true.extend(bool(t) for t in found.true)
        if outcomes is not None:
            outcomes.append(found)
        x, y, w, inside = _sample_voxels(case, rng, n_near, n_far, far_weight)
        s.voxel_x.append(x)
        s.voxel_y.append(y)
        s.voxel_w.append(w)
        s.voxel_in.append(inside)
    y_les = np.asarray(s.lesion_true, dtype=np.float64)
    if n_cases == 0 or y_les.size == 0 or y_les.min() == y_les.max():
        raise InputError(
            f"lesion confidence needs predicted lesions both true and false on the validation "
            f"cases, found {int(y_les.sum())} true and {int((1 - y_les).sum())} false in "
            f"{n_cases} case(s); calibrate on more (or more varied) labelled cases"
        )
    features, l2, losses, set_losses = _choose_lesion_features(s.lesion_rows, y_les)
    x_les = np.asarray([[row[f] for f in features] for row in s.lesion_rows])
    lesion_model = LesionConfidence(fit_logistic(x_les, y_les, features, l2))
    vx, vy, vw, vin = (np.concatenate(v) for v in (s.voxel_x, s.voxel_y, s.voxel_w, s.voxel_in))
    strata = []
    for where, names in ((vin, INSIDE_FEATURES), (~vin, OUTSIDE_FEATURES)):
        cols = [VOXEL_FEATURES.index(n) for n in names]
        strata.append(fit_calibrator(vx[where][:, cols], vy[where], vw[where], names))
    summary = {
        "cases": n_cases,
        "lesions_true": int(y_les.sum()),
        "lesions_false": int((1 - y_les).sum()),
        "lesion_l2": l2,
        "lesion_cv_log_loss": {str(k): round(v, 4) for k, v in losses.items()},
        "lesion_features": list(features),
        "lesion_feature_sets_cv_log_loss": set_losses,
        "voxels_sampled": int(vy.size),
        "voxel_error_rate": float(np.average(vy, weights=vw)),
    }
    return lesion_model, VoxelErrorMap(strata[0], strata[1]), summary


def _choose_lesion_features(
    rows: Sequence[dict[str, float]], y: np.ndarray
) -> tuple[list[str], float, dict[float, float], dict[str, float]]:
    """The lesion features (every one the rows all hold, or those without the CT's) and the
    L2 penalty with the smallest cross-validated log-loss (:func:`choose_l2`): what the CT
    adds is kept only where it predicts better on these lesions. Returns the features, the
    penalty, that set's loss per penalty and each set's best loss."""
    present = [f for f in LESION_FEATURES if all(f in row for row in rows)]
    sets = {"all": present}
    if any(f in CT_FEATURES for f in present):
        sets["without_ct"] = [f for f in present if f not in CT_FEATURES]
    best: tuple[float, list[str], float, dict[float, float]] | None = None
    set_losses: dict[str, float] = {}
    for name, features in sets.items():
        x = np.asarray([[row[f] for f in features] for row in rows])
        l2, losses = choose_l2(x, y, features)
        set_losses[name] = round(losses[l2], 4)
        if best is None or round(losses[l2], 6) < round(best[0], 6):
            best = (losses[l2], features, l2, losses)
    assert best is not None  # sets always holds "all"
    return best[1], best[2], best[3], set_losses


def trust_record(
    lesion: LesionConfidence,
    voxel: VoxelErrorMap,
    summary: dict[str, Any],
    review_below: float = DEFAULT_REVIEW_BELOW,
    min_confidence: float = 0.0,
) -> dict[str, Any]:
    """The card entries of a fitted trust calibration (``lesion_confidence``, ``voxel_error``,
    ``review_below``, ``min_confidence``)."""
    return {
        "lesion_confidence": {**lesion.to_json(), "fitted_on": summary},
        "voxel_error": voxel.to_json(),
        "review_below": float(review_below),
        "min_confidence": float(min_confidence),
    }


def trust_from_card(
    card: dict[str, Any],
) -> tuple[LesionConfidence | None, VoxelErrorMap | None, float | None]:
    """The lesion confidence, voxel error map and ``review_below`` of a card (None where the
    card has none)."""
    les = card.get("lesion_confidence")
    vox = card.get("voxel_error")
    below = card.get("review_below")
    return (
        LesionConfidence.from_json(les) if isinstance(les, dict) else None,
        VoxelErrorMap.from_json(vox) if isinstance(vox, dict) else None,
        None if below is None else float(below),
    )
