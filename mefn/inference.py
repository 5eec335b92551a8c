"""``Predictor``: load weights (and an adapter) once, segment many cases.

>>> from mefn import Predictor
>>> from mefn.io.discovery import load_case
>>> predictor = Predictor()                       # the bundled default weights
>>> prediction = predictor.predict(load_case("case_0000.nii.gz"))
>>> prediction.mask.shape == prediction.geometry.shape
True

A case is resampled into model space (:mod:`mefn.data.preprocess`), segmented with MONAI's
sliding-window inference (Gaussian blending, bounded memory: tiles run on the chosen device,
the full-size outputs stay on the CPU), and the class probabilities and uncertainty maps are
resampled back onto the case's output grid, where the mask is their argmax (or, with a
lesion threshold, where the probability of not being background reaches it), then checked
against the PET (:class:`mefn.postprocess.PetCheck`) and cleared of lesions under the floor.
``Prediction.timings`` holds the seconds each of these stages took.

Where the weights, adapters and their cards come from is :mod:`mefn.registry`; writing a
prediction's files is :mod:`mefn.outputs`. Their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mefn import __version__
from mefn.confidence import CT_FEATURES, DEFAULT_REVIEW_BELOW, EvidenceMaps, trust_from_card
from mefn.data.preprocess import model_grid, normalise, resample_case
from mefn.errors import CheckpointError, InputError
from mefn.fileutil import file_sha256
from mefn.io.case import Case
from mefn.io.volume import Geometry
from mefn.model.sliding_window import sliding_window_predict
from mefn.outputs import output_paths, save_prediction
from mefn.postprocess import (
    DroppedLesion,
    HotSpot,
    HotSpotCheck,
    LesionTable,
    PetCheck,
    apply_pet_check,
    drop_unconfident,
    find_hot_spots,
    keep_small_lesion_cores,
    lesion_table,
    mask_from_probabilities,
    remove_small_components,
    reshape_lesions,
)
from mefn.registry import (
    ADAPTER_CARD,
    ADAPTERS_DIR,
    DEFAULT_MODEL,
    WEIGHTS_DIR,
    adapter_card,
    card_labels,
    default_labels,
    list_adapters,
    list_models,
    load_state,
    read_model_card,
    resolve_adapter,
    resolve_hot_spot_check,
    resolve_pet_check,
    resolve_weights,
)
from mefn.settings import PostprocessSettings

__all__ = [
    "ADAPTERS_DIR",
    "ADAPTER_CARD",
    "DEFAULT_MODEL",
    "WEIGHTS_DIR",
    "Prediction",
    "Predictor",
    "adapter_card",
    "list_adapters",
    "list_models",
    "output_paths",
    "parse_tta_axes",
    "parse_tta_scales",
    "resolve_adapter",
    "resolve_hot_spot_check",
    "resolve_pet_check",
    "resolve_weights",
    "save_prediction",
    "sliding_window_predict",
]

#: what ``<case>_uncertainty.nii.gz`` holds, as the report says it
UNCERTAINTY_CALIBRATED = (
    "probability that the voxel's label is wrong, calibrated on validation cases "
    "(mefn.confidence.VoxelErrorMap)"
)
UNCERTAINTY_EVIDENTIAL = (
    "evidential uncertainty u = K / S of the fused opinion (uncalibrated: ranks errors, "
    "its scale is not a probability)"
)
#: the maps blended and brought back without ``keep_extra`` (less memory)
_MAIN_OUTPUTS = ("prob", "uncertainty")


@dataclass(frozen=True, eq=False)
class Prediction:
    """Results for one case, all on ``geometry`` (the case's output grid)."""

    case_id: str
    geometry: Geometry
    mask: np.ndarray
    uncertainty: np.ndarray
    suv: np.ndarray
    lesions: LesionTable
    probabilities: np.ndarray | None = None
    uncertainty_ct: np.ndarray | None = None
    uncertainty_pet: np.ndarray | None = None
    #: the fused evidential u = K / S, when ``uncertainty`` is the calibrated error map
    evidential_u: np.ndarray | None = None
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    #: PET hot spots the mask does not touch (:func:`mefn.postprocess.find_hot_spots`)
    hot_spots: tuple[HotSpot, ...] = ()
    #: lesions removed for a confidence below ``min_confidence``
    #: (:func:`mefn.postprocess.drop_unconfident`)
    dropped: tuple[DroppedLesion, ...] = ()
    #: seconds spent in each stage of :meth:`Predictor.predict` (``resample``, ``network``,
    #: ``tta_scales`` (bringing coarser scales' maps onto the model grid), ``to_output_grid``,
    #: ``mask``, ``suv``, ``pet_check``, ``lesion_floor``; with a trust calibration ``ct``,
    #: ``min_confidence``, ``voxel_error``; ``lesion_table``, ``hot_spots``), measured with
    #: :func:`time.perf_counter`
    timings: dict[str, float] = field(default_factory=dict)

    def report(self, case: Case | None = None) -> dict[str, Any]:
        """The ``<case>_report.json`` content."""
        return {
            "software": f"mefn {__version__}",
            "case": self.case_id,
            "settings": self.settings,
            "input": (case.provenance if case is not None else {}),
            "output_geometry": self.geometry.to_json(),
            "seconds": round(self.seconds, 2),
            "timings": {stage: round(s, 3) for stage, s in self.timings.items()},
            "uncertainty": {
                "map": UNCERTAINTY_CALIBRATED
                if self.evidential_u is not None
                else UNCERTAINTY_EVIDENTIAL,
                "mean_in_mask": float(self.uncertainty[self.mask > 0].mean())
                if (self.mask > 0).any()
                else None,
                "max": float(self.uncertainty.max()),
            },
            **self.lesions.to_json(),
            "n_dropped": len(self.dropped),
            "dropped_lesions": [lesion.to_json() for lesion in self.dropped],
            "n_hot_spots": len(self.hot_spots),
            "hot_spots": [spot.to_json() for spot in self.hot_spots],
        }


def parse_tta_axes(text: str) -> tuple[int, ...]:
    """Test-time mirroring axes from letters: ``"xyz"`` -> ``(0, 1, 2)``; ``""`` or
    ``"none"`` -> ``()`` (one plain pass)."""
    letters = text.strip().lower()
    if letters == "none":
        return ()
    if any(c not in "xyz" for c in letters) or len(set(letters)) != len(letters):
        raise InputError(
            f"test-time mirroring expects axis letters among x, y and z (e.g. xyz) or none, "
            f"found {text!r}"
        )
    return tuple("xyz".index(c) for c in letters)


def parse_tta_scales(text: str) -> tuple[float, ...]:
    """Test-time scales from a comma-separated list: ``"1,1.5,2"`` -> ``(1.0, 1.5, 2.0)``."""
    from mefn.settings import check_tta_scales

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(
            f"test-time scales expect comma-separated numbers such as 1,1.5,2 (multiples of "
            f"the model's spacing), found {text!r}"
        ) from None
    return check_tta_scales(values)


class _StageClock:
    """Seconds per stage of a prediction, summed over the stage's ``with`` blocks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class _OutputMaps(NamedTuple):
    """The network's maps on the output grid, and the mask first drawn from them."""

    mask: np.ndarray
    uncertainty: np.ndarray
    lesion_probability: np.ndarray | None  # 1 - p(background), float16, for the hot spots
    probabilities: np.ndarray | None  # with keep_extra
    uncertainty_ct: np.ndarray | None
    uncertainty_pet: np.ndarray | None


class Predictor:
    """Segment PET/CT cases with a trained MEFN (or baseline) and report its uncertainty.

    Parameters
    ----------
    model:
        ``"default"``, a bundled weights name, a ``.safetensors`` file with its ``.json``
        card, or a ``mefn train`` output folder.
    adapter:
        Folder of a fine-tuned adapter (``mefn finetune``) for these base weights. An adapter
        with new output heads (another label set, e.g. GTVp/GTVn) sets ``num_classes`` and
        ``labels``: the base weights load in full, then the adapter replaces the heads.
        Mergeable adapters are folded into the weights; an LAE adapter runs its online and
        offline (EMA) copies on every tile and combines their maps (LAE's ensemble).
        The card's post-processing (below) applies with an adapter for the base's own heads;
        with new heads it does not (it was chosen for another task): the plain defaults do.
    device:
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    sw_batch_size, overlap:
        Sliding-window tiles per forward pass and their overlap (default from the card).
    review_threshold:
        Without a lesion confidence model: lesions whose mean uncertainty reaches this are
        flagged for review. Default: the threshold calibrated on validation cases and stored
        in the weights' card (``review_threshold``), else 0.3.
    review_below:
        With a lesion confidence model in the card (of the adapter, when one is given;
        :mod:`mefn.confidence`): lesions whose confidence is below this are flagged. Default:
        the card's ``review_below``, else 0.5.
    min_confidence:
        With a lesion confidence model: lesions whose confidence is below this are removed
        from the mask and listed in the report as dropped (after the lesion floor, before the
        voxel error map and the lesion table). Default: the card's ``min_confidence`` (chosen
        on validation cases by ``mefn calibrate``), else 0 (keep all).
    min_lesion_ml:
        Predicted lesions smaller than this are dropped. Default: the value chosen on
        validation cases and stored in the card (``min_lesion_ml``), else 0 (keep all).
    lesion_shape:
        What is done to the lesions' outlines after the lesion floor
        (:func:`mefn.postprocess.reshape_lesions`): ``"hull"`` fills each lesion's convex
        hull, ``"largest_hull"`` keeps the largest lesion and fills its hull, ``"none"``
        leaves them as drawn. Default: the card's ``lesion_shape``, else ``"none"``.
    small_lesion_ml, small_lesion_threshold:
        After the PET check, lesions smaller than ``small_lesion_ml`` (mL) keep only their
        core, the voxels whose lesion probability reaches ``small_lesion_threshold``
        (:func:`mefn.postprocess.keep_small_lesion_cores`): a low ``lesion_threshold`` then
        outlines large tumours' cold parts without drawing small ones too wide. Default: the
        card's, else 0 mL (off) and 0.8. No bundled card cuts: on the sarcoma folds the cut
        cost the lesion confidence its calibration (``docs/history.md``).
    tta_axes:
        Test-time mirroring, as nnU-Net's: model-space axes (0 = x, 1 = y, 2 = z) along which
        the image is also segmented mirrored; every subset of them is run (``(0, 1, 2)``:
        8 passes) and the maps are averaged; ``()``: one pass. Default: the card's
        ``tta_axes`` (the setting its ``lesion_threshold``, ``min_lesion_ml`` and
        ``review_threshold`` were calibrated with), else one pass.
    lesion_threshold:
        A voxel is lesion when its probability of not being background reaches this
        (then the most probable lesion class). Default: the threshold chosen on validation
        cases and stored in the card (``lesion_threshold``), else the argmax.
    pet_check:
        What a predicted lesion must show on PET, and whether its outline is redrawn on the
        PET (:class:`mefn.postprocess.PetCheck`), applied after the lesion threshold and
        before the lesion floor. Default: the card's ``pet_check``, else none. A dict
        overrides only the fields it names (``{"refine_fraction": None}``: the card's check
        without the redrawing).
    fine_stage:
        The coarse-to-fine cascade (:mod:`mefn.cascade`): ``None`` runs the fine stage the
        card names (``fine_stage``), if any; ``False`` runs the coarse weights alone; a dict
        gives or overrides the stage's settings (``{"weights": "run/model.safetensors"}``).
        Not run with an adapter, which was trained for the coarse weights alone.
    hot_spots:
        Which PET hot spots outside the mask the report lists
        (:class:`mefn.postprocess.HotSpotCheck`): default the card's ``hot_spots``, else
        SUV >= 2.5 reaching twice its surroundings; a dict overrides the fields it names.
    threads:
        CPU threads for the network (torch) and for resampling (SimpleITK); process-wide
        settings. Default: theirs (all cores).
    """

    def __init__(
        self,
        model: str | Path = "default",
        adapter: str | Path | None = None,
        device: str = "auto",
        sw_batch_size: int = 1,
        overlap: float | None = None,
        threads: int | None = None,
        review_threshold: float | None = None,
        review_below: float | None = None,
        min_confidence: float | None = None,
        min_lesion_ml: float | None = None,
        lesion_shape: str | None = None,
        small_lesion_ml: float | None = None,
        small_lesion_threshold: float | None = None,
        tta_axes: Sequence[int] | None = None,
        tta_scales: Sequence[float] | None = None,
        lesion_threshold: float | None = None,
        pet_check: PetCheck | dict[str, Any] | None = None,
        hot_spots: HotSpotCheck | dict[str, Any] | None = None,
        fine_stage: bool | dict[str, Any] | None = None,
    ) -> None:
        self.weights_path, self.card_path = resolve_weights(model)
        self.card, self.model_cfg, self.preprocess = read_model_card(self.card_path)
        self.labels: dict[str, str] = card_labels(self.card, self.model_cfg.num_classes)
        if threads:  # process-wide, as for any torch or SimpleITK program
            _set_threads(threads)
        self.device = self._device(device)
        net = _load_network(self.model_cfg, self.weights_path)
        self.base_hash = file_sha256(self.weights_path)
        self.adapter_path: Path | None = None
        new_heads = False
        tuned: dict[str, Any] = {}  # post-processing chosen for the adapter, in its card
        trust_card: dict[str, Any] = self.card
        if adapter is not None:
            net, new_heads, tuned = self._apply_adapter(net, adapter)
            trust_card = adapter_card(self.adapter_path or Path(adapter))
        # calibrated for these weights (or this adapter) only: an adapter without its own is
        # not given the base's
        self.lesion_confidence, self.voxel_error, _ = trust_from_card(trust_card)
        self.net = net.to(self.device).eval()
        self.fine = self._fine_stage(fine_stage) if adapter is None else None
        roi = [int(v) for v in self.card.get("patch_size_vox", (64, 64, 64))]
        self.roi: tuple[int, int, int] = (roi[0], roi[1], roi[2])
        self.overlap = float(overlap if overlap is not None else self.card.get("sw_overlap", 0.25))
        self.sw_batch_size = sw_batch_size
        self.postprocess = _postprocess_settings(
            self.card,
            new_heads,
            tuned,
            with_adapter=adapter is not None,
            tta_axes=None if tta_axes is None else tuple(tta_axes),
            tta_scales=None if tta_scales is None else tuple(tta_scales),
            lesion_threshold=lesion_threshold,
            min_lesion_ml=min_lesion_ml,
            lesion_shape=lesion_shape,
            small_lesion_ml=small_lesion_ml,
            small_lesion_threshold=small_lesion_threshold,
            review_threshold=review_threshold,
            review_below=review_below,
            min_confidence=min_confidence,
            pet_check=pet_check,
            hot_spots=hot_spots,
        )

    # the settings in use, one attribute each (read-only: build another Predictor to change)
    @property
    def tta_axes(self) -> tuple[int, ...]:
        return self.postprocess.tta_axes

    @property
    def tta_scales(self) -> tuple[float, ...]:
        return self.postprocess.tta_scales

    @property
    def lesion_threshold(self) -> float | None:
        return self.postprocess.lesion_threshold

    @property
    def min_lesion_ml(self) -> float:
        return self.postprocess.min_lesion_ml

    @property
    def lesion_shape(self) -> str:
        return self.postprocess.lesion_shape

    @property
    def small_lesion_ml(self) -> float:
        return self.postprocess.small_lesion_ml

    @property
    def small_lesion_threshold(self) -> float:
        return self.postprocess.small_lesion_threshold

    @property
    def review_threshold(self) -> float:
        return self.postprocess.review_threshold

    @property
    def review_below(self) -> float:
        below = self.postprocess.review_below
        return DEFAULT_REVIEW_BELOW if below is None else below

    @property
    def min_confidence(self) -> float:
        """The confidence floor in use: 0 (none) without a lesion confidence model."""
        return self.postprocess.min_confidence if self.lesion_confidence is not None else 0.0

    @property
    def calibrated(self) -> bool:
        """Whether the delivered uncertainty map is the calibrated voxel error probability."""
        return self.voxel_error is not None

    @property
    def pet_check(self) -> PetCheck:
        return self.postprocess.pet_check

    @property
    def hot_spots(self) -> HotSpotCheck:
        return self.postprocess.hot_spots

    def _fine_stage(self, choice: bool | dict[str, Any] | None) -> Any:
        """The fine stage of the cascade (:class:`mefn.cascade.FineStage`), or None."""
        from mefn.cascade import FineStage, FineStageSettings

        entry = self.card.get("fine_stage")
        if choice is False or (choice in (None, True) and not entry):
            if choice is True:
                raise InputError(
                    f"the card {self.card_path} names no fine stage; give its weights "
                    "(fine_stage={'weights': ...}) or leave the cascade off"
                )
            return None
        merged = {**(entry or {}), **(choice if isinstance(choice, dict) else {})}
        settings = FineStageSettings.from_card(merged, str(self.card_path))
        fine = FineStage(settings, self.card_path.parent, self.device)
        if fine.model_cfg.num_classes != self.num_classes:
            raise CheckpointError(
                f"the fine stage {fine.weights_path} has {fine.model_cfg.num_classes} classes, "
                f"the coarse weights {self.weights_path} {self.num_classes}; a cascade needs "
                "one label set: train the fine stage for the coarse weights' labels"
            )
        return fine

    def _apply_adapter(self, net: Any, adapter: str | Path) -> tuple[Any, bool, dict[str, Any]]:
        """Load ``adapter`` into ``net``: (the network to run, whether the adapter brings new
        output heads, the post-processing its card chose)."""
        from mefn.adapters import load_adapter, merge_adapters

        folder = resolve_adapter(adapter)
        tuned = adapter_card(folder).get("postprocess") or {}
        handle = load_adapter(net, folder, expected_base_hash=self.base_hash)
        new_heads = handle.num_classes is not None
        if handle.num_classes is not None:  # new output heads: another label set
            self.model_cfg = replace(self.model_cfg, num_classes=handle.num_classes)
            self.labels = handle.labels or default_labels(handle.num_classes)
        merge_adapters(net)  # LAE adapters stay unmerged: both copies are run
        if handle.lae is not None:
            from mefn.adapters import LAEEnsembleModel

            net = LAEEnsembleModel(net, handle.lae)
        self.adapter_path = Path(folder)
        return net, new_heads, tuned

    @staticmethod
    def _device(name: str) -> Any:
        import torch

        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"--device {name} requested but no CUDA GPU is available; use cpu")
        try:
            return torch.device(name)
        except RuntimeError:
            raise InputError(
                f"--device expects auto, cpu, cuda or cuda:N, found {name!r}"
            ) from None

    @property
    def num_classes(self) -> int:
        return int(self.model_cfg.num_classes)

    def settings(self) -> dict[str, Any]:
        return {
            "model": str(self.weights_path),
            "model_sha256": self.base_hash,
            "architecture": self.model_cfg.architecture,
            "adapter": str(self.adapter_path) if self.adapter_path else None,
            "labels": self.labels,
            "device": str(self.device),
            "spacing_mm": list(self.preprocess.spacing_mm),
            "roi_size_vox": list(self.roi),
            "overlap": self.overlap,
            **self.postprocess.to_json(),
            # the flag in use: the confidence rule when there is a confidence model
            "review_below": self.review_below if self.lesion_confidence is not None else None,
            "min_confidence": self.min_confidence,
            "calibrated_uncertainty": self.calibrated,
            "fine_stage": self.fine.describe() if self.fine is not None else None,
        }

    def predict_model_space(
        self, image: np.ndarray, keys: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Network outputs for a model-space image ``(2, X, Y, Z)`` (only ``keys``, if given).

        With ``tta_axes``, the mean of the outputs over all mirrorings (each mapped back).
        """
        import torch

        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        total: dict[str, Any] = {}
        mirrorings = [
            combo
            for n in range(len(self.tta_axes) + 1)
            for combo in itertools.combinations(self.tta_axes, n)
        ]
        for axes in mirrorings:  # () first: without tta_axes, the one plain pass
            dims = [a + 2 for a in axes]
            xi = torch.flip(x, dims) if dims else x
            out = sliding_window_predict(
                self.net, xi, self.roi, self.overlap, self.sw_batch_size, self.device, keys=keys
            )
            for k, v in out.items():
                v = torch.flip(v, dims) if dims else v
                total[k] = v if k not in total else total[k].add_(v)
        if len(mirrorings) > 1:
            for v in total.values():
                v.div_(len(mirrorings))
        return {k: v[0].numpy() for k, v in total.items()}

    def _model_input(self, case: Case, grid: Geometry) -> np.ndarray:
        """The case resampled onto ``grid`` and normalised: the network's input (through this
        module's ``resample_case``, which pipelines/benchmark.py times)."""
        ct, pet, _ = resample_case(case, grid, with_label=False)
        return normalise(ct, pet, self.preprocess)

    def _add_scale(
        self,
        out: dict[str, np.ndarray],
        case: Case,
        grid: Geometry,
        scale: float,
        keys: Sequence[str] | None,
        clock: _StageClock,
    ) -> None:
        """Segment ``case`` on a grid ``scale`` times coarser than ``grid`` (the model grid),
        bring its maps onto ``grid`` and, in ``out``, give each voxel where its lesion
        probability is the higher one all of its maps (one opinion per voxel)."""
        from mefn.data.preprocess import to_output_grid

        sx, sy, sz = self.preprocess.spacing_mm
        coarse = model_grid(case.target_geometry, (sx * scale, sy * scale, sz * scale))
        with clock("resample"):
            image = self._model_input(case, coarse)
        with clock("network"):
            maps = self.predict_model_space(image, keys=keys)
        del image
        with clock("tta_scales"):
            background = (1.0,) + (0.0,) * (self.num_classes - 1)
            prob = to_output_grid(maps.pop("prob"), coarse, grid, default_values=background)
            take = prob[0] < out["prob"][0]  # lower p(background): higher lesion probability
            out["prob"][:, take] = prob[:, take]
            del prob
            for key, value in maps.items():
                defaults = (1.0,) * value.shape[0] if key.startswith("uncertainty") else None
                value = to_output_grid(value, coarse, grid, default_values=defaults)
                out[key][:, take] = value[:, take]

    def predict(self, case: Case, keep_extra: bool = False) -> Prediction:
        """Segment one case; outputs on ``case.target_geometry``, the seconds of each stage
        in ``Prediction.timings``."""
        t0 = time.monotonic()
        clock = _StageClock()
        target = case.target_geometry
        grid = model_grid(target, self.preprocess.spacing_mm)
        with clock("resample"):
            image = self._model_input(case, grid)
        trust = self.voxel_error is not None or self.lesion_confidence is not None
        # Without keep_extra only these two maps are blended and brought back (less memory).
        keys = None if (keep_extra or trust) else _MAIN_OUTPUTS
        with clock("network"):
            out = self.predict_model_space(image, keys=keys)
        del image
        for scale in self.tta_scales[1:]:
            self._add_scale(out, case, grid, scale, keys, clock)
        fine: list[tuple[Geometry, dict[str, np.ndarray]]] = []
        if self.fine is not None:
            with clock("fine_stage"):
                for box in self.fine.boxes(1.0 - out["prob"][0], grid):
                    fine.append(self.fine.segment_box(case, box))
        maps = self._to_output_grid(out, grid, target, keep_extra, trust, clock, fine)
        del out
        mask, unc = maps.mask, maps.uncertainty
        with clock("suv"):
            suv = _suv_on_grid(case, target)
        mask = self._shape_lesions(mask, suv, maps.lesion_probability, target, clock)
        delivered, evidence = unc, None
        if trust:
            assert maps.lesion_probability is not None  # kept for the trust models
            evidence = EvidenceMaps(
                lesion_probability=maps.lesion_probability,
                uncertainty=unc,
                suv=suv,
                spacing_mm=target.spacing_mm,
                uncertainty_ct=maps.uncertainty_ct,
                uncertainty_pet=maps.uncertainty_pet,
            )
        dropped: tuple[DroppedLesion, ...] = ()
        scored: list[float] | None = None  # the kept lesions' confidences, once computed
        drawn = mask
        if self.lesion_confidence is not None and evidence is not None:
            if any(f in CT_FEATURES for f in self.lesion_confidence.model.features):
                with clock("ct"):
                    evidence = replace(evidence, ct=ct_on_grid(case, target))
            with clock("min_confidence"):
                mask, dropped, scored = drop_unconfident(
                    mask, self.lesion_confidence, evidence, target, self.min_confidence
                )
        if self.voxel_error is not None and evidence is not None:
            with clock("voxel_error"):
                delivered = self.voxel_error.after_removal(drawn, mask, evidence)
        with clock("lesion_table"):
            table = lesion_table(
                mask,
                suv,
                delivered,
                target,
                review_threshold=self.review_threshold,
                confidence=(self.lesion_confidence, evidence)
                if self.lesion_confidence is not None and evidence is not None
                else None,
                review_below=self.review_below,
                confidences=scored,
            )
        with clock("hot_spots"):
            spots = find_hot_spots(mask, suv, target, self.hot_spots, maps.lesion_probability)
        return Prediction(
            case_id=case.case_id,
            geometry=target,
            mask=mask,
            uncertainty=delivered.astype(np.float32, copy=False),
            suv=suv,
            lesions=table,
            probabilities=maps.probabilities,
            uncertainty_ct=maps.uncertainty_ct if keep_extra else None,
            uncertainty_pet=maps.uncertainty_pet if keep_extra else None,
            evidential_u=unc.astype(np.float32, copy=False) if delivered is not unc else None,
            seconds=time.monotonic() - t0,
            settings=self.settings(),
            hot_spots=spots,
            dropped=dropped,
            timings=clock.seconds,
        )

    def _shape_lesions(
        self,
        mask: np.ndarray,
        suv: np.ndarray,
        lesion_probability: np.ndarray | None,
        target: Geometry,
        clock: _StageClock,
    ) -> np.ndarray:
        """The drawn mask after the PET check, the small lesions' cores, the lesion floor and
        the lesion shape, in that order."""
        with clock("pet_check"):
            if self.pet_check.active:
                mask = apply_pet_check(mask, suv, target.spacing_mm, self.pet_check)
        if self.small_lesion_ml > 0:
            assert lesion_probability is not None  # kept for the small lesions' cores
            with clock("small_lesions"):
                mask = keep_small_lesion_cores(
                    mask,
                    lesion_probability,
                    target.voxel_volume_ml,
                    self.small_lesion_ml,
                    self.small_lesion_threshold,
                )
        with clock("lesion_floor"):
            min_vox = int(np.ceil(self.min_lesion_ml / target.voxel_volume_ml))
            mask = remove_small_components(mask, min_vox)
        if self.lesion_shape != "none":
            with clock("lesion_shape"):
                mask = reshape_lesions(mask, self.lesion_shape)
        return mask

    def _to_output_grid(
        self,
        out: dict[str, np.ndarray],
        grid: Geometry,
        target: Geometry,
        keep_extra: bool,
        trust: bool,
        clock: _StageClock,
        fine: Sequence[tuple[Geometry, dict[str, np.ndarray]]] = (),
    ) -> _OutputMaps:
        """The model-space maps ``out`` brought back onto ``target`` and the mask drawn from
        the probabilities, which (without ``keep_extra``) are freed before the uncertainty
        is resampled. With ``trust`` (trust models to apply) the lesion probability is kept
        in float32 and the CT and PET opinions' maps are brought back too. ``fine`` (the fine
        stage's grids and maps, NaN outside each box's gate) replaces the coarse maps."""
        from mefn.cascade import paste_maps
        from mefn.data.preprocess import to_output_grid

        def bring(key: str, defaults: tuple[float, ...]) -> np.ndarray:
            maps = to_output_grid(out[key], grid, target, default_values=defaults)
            for fine_grid, fine_maps in fine:
                paste_maps(maps, target, fine_maps[key], fine_grid)
            return maps

        with clock("to_output_grid"):
            background = (1.0,) + (0.0,) * (self.num_classes - 1)
            prob = bring("prob", background)
        with clock("mask"):
            mask = mask_from_probabilities(prob, 0, self.lesion_threshold)
            # 1 - p(background) for the hot spots (float16 keeps it at a quarter of prob) and
            # the trust models (float32: they read small error probabilities)
            lesion_prob: np.ndarray | None = None
            if self.hot_spots.enabled or trust or self.small_lesion_ml > 0:
                lesion_prob = np.subtract(1.0, prob[0], dtype=np.float32)
                if not trust:
                    lesion_prob = lesion_prob.astype(np.float16)
        kept_prob = prob if keep_extra else None
        del prob  # without keep_extra, freed before the SUV resampling and the lesion table
        with clock("to_output_grid"):
            unc = bring("uncertainty", (1.0,))[0]
            np.clip(unc, 0.0, 1.0, out=unc)
            extra: dict[str, np.ndarray | None] = {"uncertainty_ct": None, "uncertainty_pet": None}
            if keep_extra or trust:
                for key in ("uncertainty_ct", "uncertainty_pet"):
                    if key in out:
                        extra[key] = np.clip(bring(key, (1.0,))[0], 0, 1)
        return _OutputMaps(
            mask, unc, lesion_prob, kept_prob, extra["uncertainty_ct"], extra["uncertainty_pet"]
        )


def _set_threads(threads: int) -> None:
    """CPU threads of torch and SimpleITK (process-wide settings)."""
    import torch

    from mefn.io.sitk_bridge import set_threads

    torch.set_num_threads(threads)
    set_threads(threads)


def _load_network(model_cfg: Any, weights: Path) -> Any:
    """The network of ``model_cfg`` with the tensors of ``weights`` (strictly: every one)."""
    from mefn.model import build_model

    net = build_model(model_cfg)
    state = load_state(weights)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(
            f"weights {weights} do not fit the model in their card ({first}); "
            "the file is corrupt or belongs to another model"
        ) from None
    return net


def _postprocess_settings(
    card: dict[str, Any],
    new_heads: bool,
    tuned: dict[str, Any],
    with_adapter: bool = False,
    **overrides: Any,
) -> PostprocessSettings:
    """The card's post-processing, then the adapter's card's, then the caller's overrides.

    The card's choices were made for the base weights' own heads: an adapter with new heads
    (another task) starts from the defaults, but keeps the card's hot-spot listing, which
    does not depend on the heads. The review flag's and the floor's confidence levels
    (``review_below``, ``min_confidence``) belong to the card's own lesion confidence model:
    an adapter brings its own model (or none), so with an adapter only its card or the
    caller sets them."""
    settings = PostprocessSettings.from_card(card)
    if new_heads:
        settings = PostprocessSettings(hot_spots=settings.hot_spots)
    if with_adapter:
        settings = replace(settings, review_below=None, min_confidence=0.0)
    if tuned:
        settings = PostprocessSettings.from_card({"postprocess": tuned}, base=settings)
    return settings.with_overrides(**overrides)


def ct_on_grid(case: Case, target: Geometry) -> np.ndarray:
    """The case's CT (HU, float32) on ``target`` (air outside the CT), the evidence of what
    tissue a lesion lies in (:data:`mefn.confidence.CT_FEATURES`)."""
    return _on_grid(case.ct, target, -1000.0)


def _suv_on_grid(case: Case, target: Geometry) -> np.ndarray:
    """The case's PET (SUV, float32) on ``target`` (0 outside the PET)."""
    return _on_grid(case.pet, target, 0.0)


def _on_grid(volume: Any, target: Geometry, outside: float) -> np.ndarray:
    """``volume`` as float32 on ``target``, linearly resampled only when on another grid."""
    from mefn.io.geometry import resample_to

    array = (
        volume.array
        if volume.geometry.same_grid(target)
        else resample_to(volume, target, interpolation="linear", default_value=outside).array
    )
    return np.asarray(array, dtype=np.float32)
