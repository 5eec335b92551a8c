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
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mefn import __version__
from mefn.config import from_dict
from mefn.data.preprocess import PreprocessConfig, model_grid, normalise, resample_case
from mefn.errors import CheckpointError, InputError, OutputError
from mefn.fileutil import file_sha256
from mefn.io.case import Case
from mefn.io.volume import Geometry, Volume
from mefn.model.sliding_window import sliding_window_predict
from mefn.postprocess import HotSpot, HotSpotCheck, LesionTable, PetCheck, lesion_table

__all__ = [
    "sliding_window_predict",
    "Prediction",
    "Predictor",
    "WEIGHTS_DIR",
    "list_adapters",
    "list_models",
    "resolve_adapter",
    "output_paths",
    "resolve_weights",
    "save_prediction",
]

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "mefn_default"


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
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    #: PET hot spots the mask does not touch (:func:`mefn.postprocess.find_hot_spots`)
    hot_spots: tuple[HotSpot, ...] = ()

    def report(self, case: Case | None = None) -> dict[str, Any]:
        """The ``<case>_report.json`` content."""
        return {
            "software": f"mefn {__version__}",
            "case": self.case_id,
            "settings": self.settings,
            "input": (case.provenance if case is not None else {}),
            "output_geometry": self.geometry.to_json(),
            "seconds": round(self.seconds, 2),
            "uncertainty": {
                "mean_in_mask": float(self.uncertainty[self.mask > 0].mean())
                if (self.mask > 0).any()
                else None,
                "max": float(self.uncertainty.max()),
            },
            **self.lesions.to_json(),
            "n_hot_spots": len(self.hot_spots),
            "hot_spots": [spot.to_json() for spot in self.hot_spots],
        }


def list_models() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


#: bundled adapters: ``mefn/weights/adapters/<name>/`` (``mefn segment --adapter <name>``)
ADAPTERS_DIR = WEIGHTS_DIR / "adapters"
#: an adapter's card beside its files: data, figures and the post-processing chosen for it
ADAPTER_CARD = "card.json"


def list_adapters() -> list[str]:
    """Names of the bundled adapters (folders of ``mefn/weights/adapters`` with a config)."""
    if not ADAPTERS_DIR.is_dir():
        return []
    return sorted(p.name for p in ADAPTERS_DIR.iterdir() if (p / "adapter_config.json").is_file())


def resolve_adapter(adapter: str | Path) -> Path:
    """The folder of an adapter: a path (a `mefn finetune` output or its ``adapter/``
    folder) or the name of a bundled adapter (:func:`list_adapters`)."""
    path = Path(adapter)
    if path.exists():
        if (path / "adapter").is_dir() and not (path / "adapter_config.json").exists():
            return path / "adapter"  # a `mefn finetune` output folder
        return path
    bundled = ADAPTERS_DIR / str(adapter)
    if path.name == str(adapter) and (bundled / "adapter_config.json").is_file():
        return bundled
    known = ", ".join(list_adapters()) or "none bundled"
    raise InputError(
        f"adapter {str(adapter)!r} not found: expected an adapter folder (from `mefn finetune`) "
        f"or a bundled adapter name ({known})"
    )


def adapter_card(folder: Path) -> dict[str, Any]:
    """The adapter's ``card.json`` ({} when it has none); a malformed one is an error."""
    path = folder / ADAPTER_CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"adapter card {path} is not valid JSON ({exc}); fix it") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"adapter card {path} must be a JSON object; fix it")
    return card


def resolve_weights(model: str | Path) -> tuple[Path, Path]:
    """(weights.safetensors, card.json) for a bundled name, a file or a training run folder."""
    name = str(model)
    candidates: list[tuple[Path, Path]] = []
    if name in ("default", ""):
        name = DEFAULT_MODEL
    path = Path(name)
    if path.is_dir():
        candidates.append((path / "model.safetensors", path / "model.json"))
    elif path.suffix == ".safetensors" or path.is_file():
        candidates.append((path, path.with_suffix(".json")))
    candidates.append((WEIGHTS_DIR / f"{name}.safetensors", WEIGHTS_DIR / f"{name}.json"))
    for weights, card in candidates:
        if weights.is_file():
            if not card.is_file():
                raise CheckpointError(
                    f"weights {weights} have no model card {card.name} beside them; "
                    "keep the .json written by `mefn train` next to the .safetensors"
                )
            return weights, card
    known = ", ".join(list_models()) or "none bundled"
    raise InputError(
        f"model {model!r} not found: expected a bundled name ({known}), a .safetensors file "
        "with its .json card, or a training output folder"
    )


def output_paths(
    outdir: Path, case_id: str, extra: bool = False, dicom: bool = False
) -> dict[str, Path]:
    """The files :func:`save_prediction` writes for one case (``dicom``: also the DICOM SEG
    of the mask and the Parametric Map of the uncertainty)."""
    paths = {
        "mask": outdir / f"{case_id}_mask.nii.gz",
        "uncertainty": outdir / f"{case_id}_uncertainty.nii.gz",
        "report": outdir / f"{case_id}_report.json",
    }
    if extra:
        paths["probabilities"] = outdir / f"{case_id}_probabilities.nii.gz"
        paths["uncertainty_ct"] = outdir / f"{case_id}_uncertainty_ct.nii.gz"
        paths["uncertainty_pet"] = outdir / f"{case_id}_uncertainty_pet.nii.gz"
    if dicom:
        paths["seg"] = outdir / f"{case_id}_seg.dcm"
        paths["uncertainty_pm"] = outdir / f"{case_id}_uncertainty_pm.dcm"
    return paths


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
        Lesions whose mean uncertainty reaches this are flagged for review. Default: the
        threshold calibrated on validation cases and stored in the weights' card
        (``review_threshold``), else 0.3.
    min_lesion_ml:
        Predicted lesions smaller than this are dropped. Default: the value chosen on
        validation cases and stored in the card (``min_lesion_ml``), else 0 (keep all).
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
        min_lesion_ml: float | None = None,
        tta_axes: Sequence[int] | None = None,
        lesion_threshold: float | None = None,
        pet_check: PetCheck | dict[str, Any] | None = None,
        hot_spots: HotSpotCheck | dict[str, Any] | None = None,
    ) -> None:
        import torch

        from mefn.model import ModelConfig, build_model

        self.weights_path, self.card_path = resolve_weights(model)
        try:
            self.card = json.loads(self.card_path.read_text(encoding="utf-8"))
            model_cfg = from_dict(ModelConfig, self.card["model"], where="model card")
            self.preprocess = from_dict(
                PreprocessConfig, self.card.get("preprocess", {}), where="model card preprocess"
            )
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
            raise CheckpointError(
                f"model card {self.card_path} is not a mefn card ({type(exc).__name__}: {exc}); "
                "use the .json written by `mefn train`"
            ) from None
        self.model_cfg = model_cfg
        card_labels = self.card.get("labels")
        self.labels: dict[str, str] = (
            {str(k): str(v) for k, v in card_labels.items()}
            if isinstance(card_labels, dict)
            else _default_labels(model_cfg.num_classes)
        )
        if threads:  # process-wide, as for any torch or SimpleITK program
            import SimpleITK as sitk

            torch.set_num_threads(threads)
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        self.device = self._device(device)
        net = build_model(model_cfg)
        state = _load_state(self.weights_path)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise CheckpointError(
                f"weights {self.weights_path} do not fit the model in their card ({first}); "
                "the file is corrupt or belongs to another model"
            ) from None
        self.base_hash = file_sha256(self.weights_path)
        self.adapter_path = None
        new_heads = False
        tuned: dict[str, Any] = {}  # post-processing chosen for the adapter, in its card
        if adapter is not None:
            from mefn.adapters import load_adapter, merge_adapters

            adapter = resolve_adapter(adapter)
            tuned = adapter_card(adapter).get("postprocess") or {}
            handle = load_adapter(net, adapter, expected_base_hash=self.base_hash)
            if handle.num_classes is not None:  # new output heads: another label set
                new_heads = True
                model_cfg = replace(model_cfg, num_classes=handle.num_classes)
                self.model_cfg = model_cfg
                self.labels = handle.labels or _default_labels(handle.num_classes)
            merge_adapters(net)  # LAE adapters stay unmerged: both copies are run
            if handle.lae is not None:
                from mefn.adapters import LAEEnsembleModel

                net = LAEEnsembleModel(net, handle.lae)
            self.adapter_path = Path(adapter)
        self.net = net.to(self.device).eval()
        roi = [int(v) for v in self.card.get("patch_size_vox", (64, 64, 64))]
        self.roi: tuple[int, int, int] = (roi[0], roi[1], roi[2])
        self.overlap = float(overlap if overlap is not None else self.card.get("sw_overlap", 0.25))
        self.sw_batch_size = sw_batch_size
        # The card's post-processing was chosen for the base weights' own heads; an adapter
        # with new heads (another task) starts from the plain defaults instead.
        calibrated: dict[str, Any] = {} if new_heads else self.card
        if tuned:  # the adapter's card chose its own: those stand for the base card's
            calibrated = {**calibrated, **tuned}
        if review_threshold is None:
            from mefn.postprocess import DEFAULT_REVIEW_THRESHOLD

            review_threshold = float(calibrated.get("review_threshold", DEFAULT_REVIEW_THRESHOLD))
        self.review_threshold = review_threshold
        if min_lesion_ml is None:  # the card's calibrated value, else keep every lesion
            min_lesion_ml = float(calibrated.get("min_lesion_ml", 0.0))
        self.min_lesion_ml = min_lesion_ml
        from mefn.postprocess import check_lesion_threshold

        if lesion_threshold is None:  # the card's calibrated value, else the argmax
            lesion_threshold = calibrated.get("lesion_threshold")
        self.lesion_threshold = check_lesion_threshold(lesion_threshold)
        if tta_axes is None:  # the mirroring the card's post-processing was calibrated with
            tta_axes = calibrated.get("tta_axes", ())
        axes = tuple(sorted({int(a) for a in tta_axes}))
        if any(a not in (0, 1, 2) for a in axes):
            raise InputError(f"tta_axes must be among 0, 1, 2 (x, y, z), found {tuple(tta_axes)}")
        self.tta_axes = axes
        self.pet_check = resolve_pet_check(calibrated.get("pet_check"), pet_check)
        # what counts as an obvious PET hot spot does not depend on the heads: always the card's
        self.hot_spots = resolve_hot_spot_check(self.card.get("hot_spots"), hot_spots)

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
            "review_threshold": self.review_threshold,
            "min_lesion_ml": self.min_lesion_ml,
            "lesion_threshold": self.lesion_threshold,
            "tta_axes": list(self.tta_axes),
            "pet_check": self.pet_check.to_json(),
            "hot_spots": self.hot_spots.to_json(),
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

    def predict(self, case: Case, keep_extra: bool = False) -> Prediction:
        """Segment one case; outputs on ``case.target_geometry``."""
        t0 = time.monotonic()
        target = case.target_geometry
        grid = model_grid(target, self.preprocess.spacing_mm)
        ct, pet, _ = resample_case(case, grid, with_label=False)
        image = normalise(ct, pet, self.preprocess)
        del ct, pet
        # Without keep_extra only these two maps are blended and brought back (less memory).
        out = self.predict_model_space(image, keys=None if keep_extra else _MAIN_OUTPUTS)
        del image
        from mefn.data.preprocess import to_output_grid

        prob = to_output_grid(
            out["prob"], grid, target, default_values=(1.0,) + (0.0,) * (self.num_classes - 1)
        )
        from mefn.postprocess import mask_from_probabilities, remove_small_components

        mask = mask_from_probabilities(prob, 0, self.lesion_threshold)
        # 1 - p(background) for the hot-spot listing; float16 keeps it at a quarter of prob
        lesion_prob = (
            np.subtract(1.0, prob[0], dtype=np.float32).astype(np.float16)
            if self.hot_spots.enabled
            else None
        )
        kept_prob = prob if keep_extra else None
        del prob  # without keep_extra, freed before the SUV resampling and the lesion table
        unc = to_output_grid(out["uncertainty"], grid, target, (1.0,))[0]
        np.clip(unc, 0.0, 1.0, out=unc)
        extra: dict[str, np.ndarray | None] = {"uncertainty_ct": None, "uncertainty_pet": None}
        if keep_extra:
            for key in ("uncertainty_ct", "uncertainty_pet"):
                if key in out:
                    extra[key] = np.clip(to_output_grid(out[key], grid, target, (1.0,))[0], 0, 1)
        del out
        from mefn.io.geometry import resample_to

        suv = (
            case.pet.array
            if case.pet.geometry.same_grid(target)
            else resample_to(case.pet, target, interpolation="linear", default_value=0.0).array
        )
        suv = np.asarray(suv, dtype=np.float32)
        if self.pet_check.active:
            from mefn.postprocess import apply_pet_check

            mask = apply_pet_check(mask, suv, target.spacing_mm, self.pet_check)
        min_vox = int(np.ceil(self.min_lesion_ml / target.voxel_volume_ml))
        mask = remove_small_components(mask, min_vox)
        table = lesion_table(mask, suv, unc, target, review_threshold=self.review_threshold)
        from mefn.postprocess import find_hot_spots

        spots = find_hot_spots(mask, suv, target, self.hot_spots, lesion_prob)
        del lesion_prob
        return Prediction(
            case_id=case.case_id,
            geometry=target,
            mask=mask,
            uncertainty=unc.astype(np.float32, copy=False),
            suv=suv,
            lesions=table,
            probabilities=kept_prob,
            uncertainty_ct=extra["uncertainty_ct"],
            uncertainty_pet=extra["uncertainty_pet"],
            seconds=time.monotonic() - t0,
            settings=self.settings(),
            hot_spots=spots,
        )


_MAIN_OUTPUTS = ("prob", "uncertainty")


def resolve_pet_check(
    card_value: Any, override: PetCheck | dict[str, Any] | None = None
) -> PetCheck:
    """The PET check of a card's ``pet_check`` (absent: none), with ``override``: a
    :class:`PetCheck` replaces it, a dict replaces the fields it names.

    A malformed card entry (not a mapping, an unknown field, a value out of range) is a
    :class:`CheckpointError`; a malformed override is the caller's :class:`InputError`.
    """
    return _resolve_card_check(PetCheck, "pet_check", "PET check", card_value, override)


def resolve_hot_spot_check(
    card_value: Any, override: HotSpotCheck | dict[str, Any] | None = None
) -> HotSpotCheck:
    """The hot-spot listing of a card's ``hot_spots`` (absent: the defaults of
    :class:`HotSpotCheck`), with ``override`` as in :func:`resolve_pet_check`."""
    return _resolve_card_check(HotSpotCheck, "hot_spots", "hot-spot check", card_value, override)


_Check = TypeVar("_Check", PetCheck, HotSpotCheck)


def _resolve_card_check(
    cls: type[_Check], key: str, what: str, card_value: Any, override: Any
) -> _Check:
    if isinstance(override, cls):
        return override
    names = [f.name for f in fields(cls)]
    expected = f"the fields {', '.join(names)}"
    if card_value is not None and not isinstance(card_value, dict):
        raise CheckpointError(
            f"the model card's {key} {card_value!r} is not a {what}; expected a mapping "
            f"with {expected}; fix or retrain the card"
        )
    try:
        card = cls(**(card_value or {}))
    except (TypeError, InputError) as exc:
        raise CheckpointError(
            f"the model card's {key} {card_value} is not a valid {what} ({exc}); "
            f"expected {expected}; fix or retrain the card"
        ) from None
    if not override:
        return card
    unknown = sorted(set(override) - set(names))
    if unknown:
        raise InputError(
            f"{what[0].upper() + what[1:]} override names unknown fields {unknown}; "
            f"expected some of {expected}"
        )
    return replace(card, **override)


def _default_labels(num_classes: int) -> dict[str, str]:
    """Class names when neither the card nor the adapter gives them (as ``mefn train``)."""
    from mefn.model.config import label_names

    return label_names(num_classes)


def _load_state(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is not a valid safetensors weights file ({exc}); re-download or retrain it"
        ) from None


def save_prediction(
    prediction: Prediction,
    outdir: str | Path,
    case: Case | None = None,
    overwrite: bool = False,
    extra: bool = False,
    dicom: bool = False,
) -> dict[str, Path]:
    """Write mask, uncertainty (and extras) and the report, atomically; return the paths.

    ``dicom``: also the mask as a DICOM SEG and the uncertainty as a DICOM Parametric Map,
    both referencing the case's CT series (:mod:`mefn.io.dicom_export`); the case must have
    been loaded from DICOM (else :class:`InputError`).

    Every target is checked before anything is written, so an existing output without
    ``overwrite`` (or, with ``dicom``, a case that is not DICOM) leaves the folder untouched.
    """
    from mefn.fileutil import atomic_write_text, check_writable_dir
    from mefn.io.sitk_bridge import write_volume

    sources: list[Any] = []
    if dicom:  # before the output folder is made: the CT must be a DICOM series
        from mefn.io.dicom_export import read_source_ct

        if case is None:
            raise InputError(
                "DICOM outputs need the Case the prediction was made for (its CT series); "
                "pass case= to save_prediction"
            )
        sources = read_source_ct(case)
    outdir = check_writable_dir(outdir)
    paths = output_paths(outdir, prediction.case_id, extra=extra, dicom=dicom)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{existing[0]} already exists; pass --overwrite to replace it or choose another -o"
        )
    geo = prediction.geometry
    write_volume(Volume(prediction.mask.astype(np.uint8), geo), paths["mask"], dtype=np.uint8)
    write_volume(
        Volume(prediction.uncertainty.astype(np.float32), geo),
        paths["uncertainty"],
        dtype=np.float32,
    )
    if extra:
        if prediction.probabilities is not None:
            from mefn.io.writers import write_multichannel

            write_multichannel(prediction.probabilities, geo, paths["probabilities"])
        for key in ("uncertainty_ct", "uncertainty_pet"):
            arr = getattr(prediction, key)
            if arr is not None:
                write_volume(Volume(arr.astype(np.float32), geo), paths[key], dtype=np.float32)
    if dicom:
        from mefn.io.dicom_export import AlgorithmInfo, write_dicom_seg, write_parametric_map

        settings = prediction.settings
        algorithm = AlgorithmInfo(
            model_name=Path(str(settings.get("model") or "unknown")).stem,
            weights_sha256=str(settings.get("model_sha256") or ""),
            adapter=str(settings["adapter"]) if settings.get("adapter") else None,
        )
        labels = settings.get("labels") or _default_labels(max(2, int(prediction.mask.max()) + 1))
        write_dicom_seg(prediction.mask, geo, sources, paths["seg"], labels, algorithm)
        write_parametric_map(
            prediction.uncertainty, geo, sources, paths["uncertainty_pm"], algorithm
        )
    atomic_write_text(paths["report"], json.dumps(prediction.report(case), indent=1))
    return paths
