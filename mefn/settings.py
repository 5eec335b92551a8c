"""The post-processing settings of a segmentation, in one frozen object.

Weights come with the post-processing chosen for them on validation cases (their card); an
adapter's card may choose its own; the user overrides any of it (``mefn segment`` options,
``Predictor`` arguments). :class:`PostprocessSettings` is built from those layers in that
order and is what :class:`mefn.inference.Predictor` applies and reports.

A card holds the settings either as one ``"postprocess"`` mapping or, as the bundled card
does, as loose top-level keys (:data:`CARD_KEYS`); both read the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mefn.errors import CheckpointError, InputError
from mefn.postprocess import (
    DEFAULT_REVIEW_THRESHOLD,
    HotSpotCheck,
    PetCheck,
    check_lesion_shape,
    check_lesion_threshold,
)
from mefn.registry import resolve_hot_spot_check, resolve_pet_check

__all__ = ["CARD_KEYS", "PostprocessSettings", "check_tta_axes", "check_tta_scales"]

#: the card keys of the post-processing (in a ``"postprocess"`` mapping or at the top level)
CARD_KEYS = (
    "tta_axes",
    "tta_scales",
    "lesion_threshold",
    "min_lesion_ml",
    "lesion_shape",
    "small_lesion_ml",
    "small_lesion_threshold",
    "review_threshold",
    "review_below",
    "min_confidence",
    "pet_check",
    "hot_spots",
)


def check_tta_axes(tta_axes: Sequence[int]) -> tuple[int, ...]:
    """Mirroring axes, sorted and without repeats; each must be 0, 1 or 2 (x, y, z)."""
    axes = tuple(sorted({int(a) for a in tta_axes}))
    if any(a not in (0, 1, 2) for a in axes):
        raise InputError(f"tta_axes must be among 0, 1, 2 (x, y, z), found {tuple(tta_axes)}")
    return axes


#: the largest test-time scale: beyond it a lesion shrinks to a few voxels of the model grid
MAX_TTA_SCALE = 4.0


def check_tta_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """Test-time scales (multiples of the model's spacing), sorted, without repeats; 1 (the
    model's own grid, on which the scales are combined) must be among them."""
    try:
        values = tuple(sorted({float(s) for s in scales}))
    except (TypeError, ValueError):
        raise InputError(
            f"tta_scales expects numbers (multiples of the model's spacing), found {scales!r}"
        ) from None
    if 1.0 not in values or not all(math.isfinite(s) and 1.0 <= s <= MAX_TTA_SCALE for s in values):
        raise InputError(
            f"tta_scales expects multiples of the model's spacing from 1 to {MAX_TTA_SCALE:g}, "
            f"1 among them (e.g. 1,1.5,2), found {tuple(scales)}"
        )
    return values


@dataclass(frozen=True)
class PostprocessSettings:
    """What happens between the network's maps and the mask, lesion table and hot spots.

    tta_axes: test-time mirroring along these model-grid axes (every combination, averaged;
    ``()``: one pass). tta_scales: the case is also segmented on grids this many times coarser
    than the model's (``(1.0,)``: only the model's own), and each voxel of the model grid takes
    the maps of the scale that gives it the highest lesion probability (a large lesion that
    the model, trained on smaller ones, misses at its own scale is found at a coarser one).
    lesion_threshold: a voxel is lesion when its probability of not being
    background reaches it (None: the argmax). small_lesion_ml, small_lesion_threshold: after
    the PET check, lesions smaller than small_lesion_ml keep only the voxels whose lesion
    probability reaches small_lesion_threshold
    (:func:`~mefn.postprocess.keep_small_lesion_cores`; small_lesion_ml 0: off). min_lesion_ml: smaller
    lesions are dropped.
    lesion_shape: what is done to the lesions' outlines after that
    (:func:`~mefn.postprocess.reshape_lesions`: ``"none"``, ``"hull"``, ``"largest_hull"``).
    review_threshold: lesions whose mean uncertainty reaches it are flagged (weights without a
    lesion confidence model). review_below: with a lesion confidence model, lesions whose
    confidence is below it are flagged (None: the model's card's choice, else
    :data:`mefn.confidence.DEFAULT_REVIEW_BELOW`). min_confidence: with a lesion confidence
    model, lesions whose confidence is below it are removed from the mask (and listed in the
    report as dropped); 0: none are. pet_check: what a
    lesion must show on PET (:class:`~mefn.postprocess.PetCheck`). hot_spots: which PET hot
    spots outside the mask are listed (:class:`~mefn.postprocess.HotSpotCheck`).
    """

    tta_axes: tuple[int, ...] = ()
    tta_scales: tuple[float, ...] = (1.0,)
    lesion_threshold: float | None = None
    min_lesion_ml: float = 0.0
    lesion_shape: str = "none"
    small_lesion_ml: float = 0.0
    small_lesion_threshold: float = 0.8
    review_threshold: float = DEFAULT_REVIEW_THRESHOLD
    review_below: float | None = None
    min_confidence: float = 0.0
    pet_check: PetCheck = field(default_factory=PetCheck)
    hot_spots: HotSpotCheck = field(default_factory=HotSpotCheck)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tta_axes", check_tta_axes(self.tta_axes))
        object.__setattr__(self, "tta_scales", check_tta_scales(self.tta_scales))
        check_lesion_threshold(self.lesion_threshold)
        check_lesion_shape(self.lesion_shape)
        for name in ("min_lesion_ml", "small_lesion_ml", "review_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be a number >= 0, found {value!r}")
        small = self.small_lesion_threshold
        if not (isinstance(small, int | float) and 0.0 < small < 1.0):
            raise InputError(
                f"small_lesion_threshold must be a probability between 0 and 1 (exclusive), "
                f"found {small!r}; use e.g. 0.8"
            )
        below = self.review_below
        if below is not None and not (isinstance(below, int | float) and 0.0 < below <= 1.0):
            raise InputError(
                f"review_below must be a probability in (0, 1], found {below!r}; e.g. 0.5 flags "
                "lesions with less than an even chance of being true"
            )
        floor = self.min_confidence
        if not (isinstance(floor, int | float) and 0.0 <= floor < 1.0):
            raise InputError(
                f"min_confidence must be a probability in [0, 1), found {floor!r}; e.g. 0.2 "
                "removes lesions with less than a 20 % chance of being true, 0 keeps all"
            )
        object.__setattr__(self, "min_confidence", float(floor))

    @classmethod
    def from_card(
        cls, card: Mapping[str, Any], base: PostprocessSettings | None = None
    ) -> PostprocessSettings:
        """``base`` (default: the defaults) with the settings a card names; a malformed card
        value is a :class:`CheckpointError` (the card is at fault, not the user)."""
        values = card.get("postprocess")
        if values is None:
            values = {k: card[k] for k in CARD_KEYS if k in card}
        if not isinstance(values, Mapping):
            raise CheckpointError(
                f"the card's postprocess {values!r} is not a mapping of {', '.join(CARD_KEYS)}; "
                "fix or retrain the card"
            )
        unknown = sorted(set(values) - set(CARD_KEYS))
        if unknown:
            raise CheckpointError(
                f"the card's postprocess names unknown settings {unknown}; expected some of "
                f"{', '.join(CARD_KEYS)}; fix or retrain the card"
            )
        start = base or cls()
        try:
            return start._merged(values, card_check=True)
        except InputError as exc:
            raise CheckpointError(
                f"the card's post-processing is not valid ({exc}); fix or retrain the card"
            ) from None

    def with_overrides(self, **overrides: Any) -> PostprocessSettings:
        """These settings with the user's overrides; ``None`` leaves a setting as it is, a
        dict for ``pet_check`` or ``hot_spots`` replaces only the fields it names."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - set(CARD_KEYS))
        if unknown:
            raise InputError(
                f"unknown post-processing settings {unknown}; expected some of "
                f"{', '.join(CARD_KEYS)}"
            )
        merged = self._merged(given, card_check=False)
        if "small_lesion_threshold" in given and merged.small_lesion_ml <= 0:
            raise InputError(
                f"small_lesion_threshold {given['small_lesion_threshold']} acts on lesions "
                "smaller than small_lesion_ml, which is 0 (no card value); give small_lesion_ml "
                "too, e.g. 400 (mL)"
            )
        return merged

    def _merged(self, values: Mapping[str, Any], card_check: bool) -> PostprocessSettings:
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key == "pet_check":
                changes[key] = _checked_part(resolve_pet_check, self.pet_check, value, card_check)
            elif key == "hot_spots":
                changes[key] = _checked_part(
                    resolve_hot_spot_check, self.hot_spots, value, card_check
                )
            elif key == "tta_axes":
                changes[key] = tuple(value or ())
            elif key == "tta_scales":
                changes[key] = tuple(value) if isinstance(value, Sequence) else value
            elif key == "small_lesion_threshold":  # None in a card: the default
                changes[key] = type(self).small_lesion_threshold if value is None else value
            elif key in ("lesion_threshold", "review_below"):
                changes[key] = None if value is None else float(value)
            elif key == "min_confidence":  # None in a card: no floor
                changes[key] = 0.0 if value is None else value
            elif key == "lesion_shape":  # None in a card: as drawn
                changes[key] = "none" if value is None else value
            else:
                changes[key] = float(value)
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "tta_axes": list(self.tta_axes),
            "tta_scales": list(self.tta_scales),
            "lesion_threshold": self.lesion_threshold,
            "min_lesion_ml": self.min_lesion_ml,
            "lesion_shape": self.lesion_shape,
            "small_lesion_ml": self.small_lesion_ml,
            "small_lesion_threshold": self.small_lesion_threshold,
            "review_threshold": self.review_threshold,
            "review_below": self.review_below,
            "min_confidence": self.min_confidence,
            "pet_check": self.pet_check.to_json(),
            "hot_spots": self.hot_spots.to_json(),
        }


def _checked_part(resolve: Any, current: Any, value: Any, card_check: bool) -> Any:
    """A PET check or hot-spot check: ``current`` with ``value`` (a mapping of fields or a
    whole check) applied, through the card resolver's own checks."""
    if card_check:
        # a card's entry names fields of the check: the same validation as a card's own
        return resolve({**current.to_json(), **value} if isinstance(value, Mapping) else value)
    return resolve(current.to_json(), value)
