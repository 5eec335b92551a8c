"""DICOM PET to SUVbw: pure functions on tag values, no file access.

SUVbw = (stored x RescaleSlope + RescaleIntercept) x factor, with the rescale slope read per
slice by the caller (:mod:`mefn.io.dicom`) and ``factor`` from :func:`suv_parameters`:

- ``BQML``: factor = weight_g / decayed_dose_Bq. The dose is decayed from the injection
  (RadiopharmaceuticalStartDateTime, else the series date with RadiopharmaceuticalStartTime,
  the day before when that time is after the scan: injection before midnight, scan after) to
  the reference time given by DecayCorrection:

  * ``START``: the scan start, :func:`scan_start_datetime`: SeriesDate/Time unless it is
    after AcquisitionDate/Time (the series time was rewritten by post-processing); then the
    GE private scan datetime (0009,100D) when present, else the earliest acquisition,
    moved back from the frame's reference time to its start (QIBA:
    ``acquisition - FrameReferenceTime + mean count-rate time within the frame``).
  * ``ADMIN``: the image is already decay corrected to the injection: no decay.
  * ``NONE``: each slice holds the mean activity over its own frame, not decay corrected:
    each slice is scaled to its own AcquisitionTime t with the mean count-rate term of its
    frame of T seconds (ActualFrameDuration), :meth:`SuvConversion.factor_at`:
    factor = weight_g / dose_Bq x lambda T / (1 - exp(-lambda T)) x exp(lambda (t - t_inj)).

- ``CNTS`` (Philips): the private SUV scale factor (7053,1000) gives SUVbw directly; else the
  activity concentration scale factor (7053,1009) gives Bq/mL, then as ``BQML``.
- ``GML``: already SUV (g/mL) of the kind named by SUVType (BW when absent); another kind is
  converted back to SUVbw: SUVbw = SUVx x weight / N, with the normalising mass N in kg
  (:func:`normalising_mass_kg`): LBM (Morgan, male 120), LBMJAMES128 (male 128), LBMJANMA
  (Janmahasatian; the misspelling LBMJAM is accepted), IBW (48.0 / 45.5 kg + 1.06 / 0.91 kg
  per cm over 152 cm). PatientSex O (other) takes the mean of the male and female masses.
- ``CM2ML``: SUVbsa (cm2/mL): SUVbw = SUVbsa x weight_g / BSA_cm2 (Du Bois BSA).

The rules for GML, CM2ML, PatientSex O and DecayCorrection NONE follow the manual of
oncoray/suv_computation ("Standardizing SUV Computation", docs/suv.docx, CC BY 4.0).

Tag values are read from a mapping of DICOM keywords (a ``pydicom.Dataset`` flattened by
:func:`mefn.io.dicom.suv_tags`); the private tags use the keys :data:`GE_SCAN_DATETIME`,
:data:`PHILIPS_SUV_FACTOR` and :data:`PHILIPS_ACTIVITY_FACTOR`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mefn.errors import InputError

__all__ = [
    "GE_SCAN_DATETIME",
    "PHILIPS_ACTIVITY_FACTOR",
    "PHILIPS_SUV_FACTOR",
    "SuvConversion",
    "body_surface_area_m2",
    "decay_factor",
    "ideal_body_weight_kg",
    "lean_body_mass_kg",
    "normalising_mass_kg",
    "parse_dicom_datetime",
    "scan_start_datetime",
    "slice_factors",
    "suv_parameters",
    "suv_scale_factor",
]

logger = logging.getLogger(__name__)

GE_SCAN_DATETIME = "GEPrivateScanDateTime"  # (0009,100D), DT
PHILIPS_SUV_FACTOR = "PhilipsSUVScaleFactor"  # (7053,1000)
PHILIPS_ACTIVITY_FACTOR = "PhilipsActivityConcentrationScaleFactor"  # (7053,1009)

# A dose below this many "Bq" is taken to be written in MBq (the lowest clinical doses are
# tens of MBq, i.e. > 1e7 Bq; a dose in MBq is < 1e4).
_DOSE_MBQ_BELOW = 1.0e5
# A weight above this many "kg" is taken to be written in grams.
_WEIGHT_GRAMS_ABOVE = 1000.0


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def _get(tags: Mapping[str, Any], key: str) -> Any:
    value = tags.get(key)
    return None if _empty(value) else value


def _require(tags: Mapping[str, Any], key: str, why: str) -> Any:
    value = _get(tags, key)
    if value is None:
        raise InputError(
            f"PET series lacks the DICOM tag {key}, needed {why}; it cannot be converted to "
            "SUV: supply a PET already in SUV (NIfTI) or fix the DICOM header"
        )
    return value


def _float(tags: Mapping[str, Any], key: str, why: str) -> float:
    raw = _require(tags, key, why)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"PET DICOM tag {key} should be a number, found {raw!r}") from None
    if not math.isfinite(value):
        raise InputError(f"PET DICOM tag {key} should be a finite number, found {raw!r}")
    return value


def parse_dicom_datetime(date: Any = None, time: Any = None, dt: Any = None) -> datetime | None:
    """A datetime from DICOM DA + TM strings, or from one DT string; None when absent.

    Fractions of a second and UTC offsets are accepted; the offset is dropped (all times of
    one series share it).
    """
    if not _empty(dt):
        text = str(dt).strip()
        for sign in ("+", "-"):
            if sign in text[8:]:
                text = text[: 8 + text[8:].index(sign)]
        date, time = text[:8], text[8:] or "000000"
    if _empty(date) or _empty(time):
        return None
    d = str(date).strip().replace(".", "")  # old ACR-NEMA style 2000.09.07
    t = str(time).strip().replace(":", "")
    try:
        whole, _, frac = t.partition(".")
        whole = whole.ljust(6, "0")
        base = datetime.strptime(d[:8] + whole[:6], "%Y%m%d%H%M%S")
    except ValueError:
        raise InputError(
            f"cannot read DICOM date {date!r} / time {time!r}; expected YYYYMMDD and HHMMSS.ffffff"
        ) from None
    micro = int((frac + "000000")[:6]) if frac.isdigit() else 0
    return base + timedelta(microseconds=micro)


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """Fraction of activity left after ``elapsed_s``: 2^(-t / T½)."""
    if half_life_s <= 0:
        raise InputError(f"radionuclide half-life must be positive, found {half_life_s} s")
    return float(2.0 ** (-elapsed_s / half_life_s))


def body_surface_area_m2(weight_kg: float, height_m: float) -> float:
    """Body surface area (Du Bois & Du Bois 1916): 0.007184 W^0.425 H_cm^0.725, in m²."""
    return 0.007184 * weight_kg**0.425 * (100.0 * height_m) ** 0.725


def _sex(sex: str | None, what: str) -> str:
    s = (sex or "").strip().upper()
    if s not in ("M", "F", "O"):
        raise InputError(
            f"{what} needs PatientSex M, F or O, found {sex!r}; cannot back-compute SUVbw: "
            "fix the DICOM header"
        )
    return s


def _by_sex(sex: str, male: float, female: float) -> float:
    """The male or the female value; for O (other) their mean, as the manual prescribes."""
    if sex == "M":
        return male
    if sex == "F":
        return female
    return 0.5 * (male + female)


_LBM_FORMULAS = ("morgan", "james128", "janmahasatian")


def lean_body_mass_kg(
    weight_kg: float, height_m: float, sex: str | None, formula: str = "james128"
) -> float:
    """Lean body mass in kg, W the weight in kg and H the height in cm.

    ``morgan`` (SUVType LBM): male 1.10 W - 120 (W/H)^2, female 1.07 W - 148 (W/H)^2;
    ``james128`` (LBMJAMES128): male 1.10 W - 128 (W/H)^2, female as Morgan;
    ``janmahasatian`` (LBMJANMA): male 9270 W / (6680 + 216 BMI), female
    9270 W / (8780 + 244 BMI). PatientSex O: the mean of the male and female masses.
    """
    s = _sex(sex, "lean body mass")
    h_cm = 100.0 * height_m
    if formula in ("morgan", "james128"):
        ratio2 = (weight_kg / h_cm) ** 2
        male_k = 120.0 if formula == "morgan" else 128.0
        return _by_sex(s, 1.10 * weight_kg - male_k * ratio2, 1.07 * weight_kg - 148.0 * ratio2)
    if formula == "janmahasatian":
        bmi = weight_kg / height_m**2
        return _by_sex(
            s,
            9270.0 * weight_kg / (6680.0 + 216.0 * bmi),
            9270.0 * weight_kg / (8780.0 + 244.0 * bmi),
        )
    raise ValueError(f"formula must be one of {_LBM_FORMULAS}, found {formula!r}")


def ideal_body_weight_kg(height_m: float, sex: str | None) -> float:
    """Ideal body weight in kg: male 48.0 + 1.06 (H - 152), female 45.5 + 0.91 (H - 152).

    H is the height in cm; PatientSex O takes the mean of the two.
    """
    s = _sex(sex, "ideal body weight")
    over_152_cm = 100.0 * height_m - 152.0
    return _by_sex(s, 48.0 + 1.06 * over_152_cm, 45.5 + 0.91 * over_152_cm)


# SUVType (0054,1006) -> the lean-body-mass formula; LBMJAM is a misspelling of LBMJANMA.
_LBM_SUV_TYPES = {
    "LBM": "morgan",
    "LBMJAMES128": "james128",
    "LBMJANMA": "janmahasatian",
    "LBMJAM": "janmahasatian",
}
_SUV_TYPES = ("BW", "BSA", "IBW", *_LBM_SUV_TYPES)


def normalising_mass_kg(suv_type: str, weight_kg: float, height_m: float, sex: str | None) -> float:
    """The mass N (kg) that an SUV of ``suv_type`` was normalised by: SUVbw = SUVx x W / N.

    BSA gives the body surface area in cm2 over 1000 (SUVbsa in cm2/mL counts as g/mL).
    """
    t = suv_type.strip().upper()
    if t == "BW":
        return weight_kg
    if t == "BSA":
        return 1.0e4 * body_surface_area_m2(weight_kg, height_m) / 1000.0
    if t == "IBW":
        return ideal_body_weight_kg(height_m, sex)
    if t in _LBM_SUV_TYPES:
        return lean_body_mass_kg(weight_kg, height_m, sex, _LBM_SUV_TYPES[t])
    raise _unknown_suv_type(suv_type)


def _unknown_suv_type(suv_type: str) -> InputError:
    return InputError(
        f"PET SUVType must be one of {', '.join(_SUV_TYPES)}, found {suv_type!r}; "
        "cannot back-compute SUVbw"
    )


def _mean_count_rate_time_s(duration_s: float, half_life_s: float) -> float:
    """When, within a frame of ``duration_s``, the count rate equals its frame mean."""
    lam = math.log(2.0) / half_life_s
    decay_in_frame = lam * duration_s
    if decay_in_frame <= 0:
        return 0.0
    return math.log(decay_in_frame / (1.0 - math.exp(-decay_in_frame))) / lam


def _frame_decay_term(duration_s: float, half_life_s: float) -> float:
    """lambda T / (1 - exp(-lambda T)): the frame's mean activity back to its start (1 at T=0)."""
    decay_in_frame = math.log(2.0) / half_life_s * duration_s
    if decay_in_frame <= 0:
        return 1.0
    return decay_in_frame / -math.expm1(-decay_in_frame)


def _frame_start(
    acquisition: datetime, frame_reference_ms: Any, frame_duration_ms: Any, half_life_s: float
) -> datetime:
    """The start of a frame from its acquisition time, as in QIBA's vendor-neutral code.

    ``acquisition - FrameReferenceTime + mean count-rate time within the frame``; with no
    frame timing, the acquisition time itself.
    """
    if _empty(frame_reference_ms) or _empty(frame_duration_ms):
        return acquisition
    mean_time_s = _mean_count_rate_time_s(float(frame_duration_ms) / 1000.0, half_life_s)
    return acquisition - timedelta(seconds=float(frame_reference_ms) / 1000.0 - mean_time_s)


def scan_start_datetime(
    tags: Mapping[str, Any], slices: Sequence[Mapping[str, Any]] = ()
) -> tuple[datetime, str]:
    """The time a START decay correction refers to, and which tag gave it.

    ``slices`` holds per-slice AcquisitionDate/Time (or AcquisitionDateTime),
    FrameReferenceTime and ActualFrameDuration; without them ``tags`` is the only slice.
    """
    series = parse_dicom_datetime(
        _get(tags, "SeriesDate"), _require(tags, "SeriesTime", "for the decay time")
    )
    rows = list(slices) or [tags]
    acquisitions = [
        a
        for a in (
            parse_dicom_datetime(
                _get(r, "AcquisitionDate") or _get(tags, "SeriesDate"),
                _get(r, "AcquisitionTime"),
                _get(r, "AcquisitionDateTime"),
            )
            for r in rows
        )
        if a is not None
    ]
    if series is None:
        raise InputError(
            "PET series lacks the DICOM tag SeriesDate, needed for the decay time; "
            "fix the DICOM header"
        )
    earliest = min(acquisitions) if acquisitions else None
    if earliest is None or series <= earliest:
        return series, "SeriesDateTime"
    ge = parse_dicom_datetime(dt=_get(tags, GE_SCAN_DATETIME))
    if ge is not None:
        return ge, "GE private scan datetime (0009,100D)"
    half_life = _float(tags, "RadionuclideHalfLife", "for the decay time")
    starts = []
    for r in rows:
        acq = parse_dicom_datetime(
            _get(r, "AcquisitionDate") or _get(tags, "SeriesDate"),
            _get(r, "AcquisitionTime"),
            _get(r, "AcquisitionDateTime"),
        )
        if acq is not None:
            starts.append(
                _frame_start(
                    acq,
                    _get(r, "FrameReferenceTime"),
                    _get(r, "ActualFrameDuration"),
                    half_life,
                )
            )
    return min(starts), "earliest AcquisitionDateTime (frame start)"


def _injection_datetime(tags: Mapping[str, Any], scan: datetime) -> tuple[datetime, str]:
    full = parse_dicom_datetime(dt=_get(tags, "RadiopharmaceuticalStartDateTime"))
    if full is not None:
        return full, "RadiopharmaceuticalStartDateTime"
    time = _get(tags, "RadiopharmaceuticalStartTime")
    if time is None:
        raise InputError(
            "PET series lacks the DICOM tags RadiopharmaceuticalStartDateTime and "
            "RadiopharmaceuticalStartTime, needed for the decay time; it cannot be converted "
            "to SUV: fix the DICOM header"
        )
    same_day = parse_dicom_datetime(scan.strftime("%Y%m%d"), time) or scan
    if same_day > scan:  # injected before midnight, scanned after
        return same_day - timedelta(days=1), "RadiopharmaceuticalStartTime (previous day)"
    return same_day, "RadiopharmaceuticalStartTime"


@dataclass(frozen=True)
class SuvConversion:
    """How stored PET values become SUVbw: ``suv = (stored x slope + intercept) x factor``.

    For decay correction ``NONE`` the factor depends on each slice's acquisition time and
    frame duration: use :meth:`factor_at` (``factor`` is then the value at the scan start for
    an instantaneous frame, for reports only). ``activity_scale`` turns stored units into
    Bq/mL (the Philips activity concentration factor for CNTS, else 1). Everything else is
    recorded for reports (``to_json``).
    """

    units: str
    factor: float
    decay_correction: str | None = None
    weight_kg: float | None = None
    height_m: float | None = None
    injected_dose_bq: float | None = None
    half_life_s: float | None = None
    injection_time: datetime | None = None
    reference_time: datetime | None = None
    reference_source: str | None = None
    decay: float = 1.0
    suv_type: str | None = None
    activity_scale: float = 1.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def factor_at(self, acquisition: datetime, frame_duration_s: float) -> float:
        """The factor of a slice acquired at ``acquisition`` over ``frame_duration_s``.

        Only decay correction ``NONE`` depends on them: activity_scale x weight_g / dose_Bq
        x lambda T / (1 - exp(-lambda T)) x exp(lambda (t_acq - t_inj)); otherwise ``factor``.
        """
        if (
            self.decay_correction != "NONE"
            or self.injection_time is None
            or self.half_life_s is None
            or self.weight_kg is None
            or self.injected_dose_bq is None
        ):
            return self.factor
        elapsed = (acquisition - self.injection_time).total_seconds()
        if elapsed < 0:
            raise InputError(
                f"PET slice acquired at {acquisition.isoformat()} is before the injection "
                f"{self.injection_time.isoformat()}; check AcquisitionTime and "
                "RadiopharmaceuticalStartDateTime"
            )
        if frame_duration_s < 0:
            raise InputError(
                f"PET ActualFrameDuration must not be negative, found {frame_duration_s} s"
            )
        decayed = self.injected_dose_bq * decay_factor(elapsed, self.half_life_s)
        frame = _frame_decay_term(frame_duration_s, self.half_life_s)
        return self.activity_scale * 1000.0 * self.weight_kg * frame / decayed

    def to_json(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t is not None else None

        return {
            "units": self.units,
            "suv_factor": self.factor,
            "decay_correction": self.decay_correction,
            "weight_kg": self.weight_kg,
            "height_m": self.height_m,
            "injected_dose_bq": self.injected_dose_bq,
            "half_life_s": self.half_life_s,
            "injection_time": iso(self.injection_time),
            "reference_time": iso(self.reference_time),
            "reference_source": self.reference_source,
            "decay": self.decay,
            "suv_type": self.suv_type,
            "activity_scale": self.activity_scale,
            "notes": list(self.notes),
        }


def _weight_kg(tags: Mapping[str, Any], notes: list[str]) -> float:
    weight = _float(tags, "PatientWeight", "for SUVbw (body weight)")
    if weight <= 0:
        raise InputError(
            f"PET DICOM PatientWeight must be positive, found {weight}; "
            "cannot compute SUVbw without the body weight"
        )
    if weight > _WEIGHT_GRAMS_ABOVE:
        notes.append(f"PatientWeight {weight} read as grams")
        logger.warning("PatientWeight %s looks like grams; read as %s kg", weight, weight / 1000)
        weight /= 1000.0
    return weight


def _height_m(tags: Mapping[str, Any], why: str, notes: list[str]) -> float:
    height = _float(tags, "PatientSize", why)
    if height <= 0:
        raise InputError(f"PET DICOM PatientSize must be positive, found {height}; needed {why}")
    if height > 3.0:
        notes.append(f"PatientSize {height} read as cm")
        height /= 100.0
    return height


def _bqml_factor(
    tags: Mapping[str, Any],
    slices: Sequence[Mapping[str, Any]],
    units: str,
    notes: list[str],
) -> SuvConversion:
    weight = _weight_kg(tags, notes)
    dose = _float(tags, "RadionuclideTotalDose", "for SUVbw (injected dose)")
    if dose <= 0:
        raise InputError(f"PET DICOM RadionuclideTotalDose must be positive, found {dose}")
    if dose < _DOSE_MBQ_BELOW:
        notes.append(f"RadionuclideTotalDose {dose} read as MBq")
        logger.info("RadionuclideTotalDose %s looks like MBq; read as %s Bq", dose, dose * 1e6)
        dose *= 1.0e6
    half_life = _float(tags, "RadionuclideHalfLife", "for the decay correction")
    dc = str(_require(tags, "DecayCorrection", "to know the decay reference")).strip().upper()
    scan, source = scan_start_datetime(tags, slices)
    injection, inj_source = _injection_datetime(tags, scan)
    notes.append(f"injection from {inj_source}")
    if dc == "ADMIN":
        decay, reference, source = 1.0, injection, "ADMIN (already decay corrected)"
    elif dc in ("START", "NONE"):
        elapsed = (scan - injection).total_seconds()
        if elapsed < 0:
            raise InputError(
                f"PET scan start {scan.isoformat()} is before the injection "
                f"{injection.isoformat()}; check RadiopharmaceuticalStartDateTime"
            )
        decay, reference = decay_factor(elapsed, half_life), scan
    else:
        raise InputError(
            f"PET DecayCorrection must be START, ADMIN or NONE, found {dc!r}; cannot convert"
        )
    factor = 1000.0 * weight / (dose * decay)
    return SuvConversion(
        units=units,
        factor=factor,
        decay_correction=dc,
        weight_kg=weight,
        injected_dose_bq=dose,
        half_life_s=half_life,
        injection_time=injection,
        reference_time=reference,
        reference_source=source,
        decay=decay,
        suv_type="BW",
    )


def suv_parameters(
    tags: Mapping[str, Any], slices: Sequence[Mapping[str, Any]] = ()
) -> SuvConversion:
    """Everything needed to turn a PET series' rescaled values into SUVbw.

    ``tags``: series-level DICOM keywords (first slice); ``slices``: per-slice acquisition
    timing (see :func:`scan_start_datetime`). Raises :class:`InputError` naming the missing
    or invalid tag when the series cannot be converted.
    """
    units = str(_require(tags, "Units", "to know what the pixel values are")).strip().upper()
    notes: list[str] = []
    if units == "BQML":
        conv = _bqml_factor(tags, slices, units, notes)
    elif units == "CNTS":
        suv_factor = _get(tags, PHILIPS_SUV_FACTOR)
        activity = _get(tags, PHILIPS_ACTIVITY_FACTOR)
        if suv_factor is not None and float(suv_factor) > 0:
            notes.append("Philips SUV scale factor (7053,1000)")
            conv = SuvConversion(units=units, factor=float(suv_factor), suv_type="BW")
        elif activity is not None and float(activity) > 0:
            notes.append("Philips activity concentration scale factor (7053,1009)")
            base = _bqml_factor(tags, slices, units, notes)
            conv = SuvConversion(
                **{
                    **base.__dict__,
                    "factor": base.factor * float(activity),
                    "activity_scale": float(activity),
                    "notes": (),
                }
            )
        else:
            raise InputError(
                "PET series in Units CNTS lacks the Philips private tags (7053,1000) SUV scale "
                "factor and (7053,1009) activity concentration scale factor; cannot convert "
                "counts to SUV"
            )
    elif units == "GML":
        suv_type = str(_get(tags, "SUVType") or "BW").strip().upper()
        if suv_type == "BW":
            conv = SuvConversion(units=units, factor=1.0, suv_type=suv_type)
        else:
            if suv_type not in _SUV_TYPES:
                raise _unknown_suv_type(suv_type)
            weight = _weight_kg(tags, notes)
            why = f"to back-compute SUVbw from SUVType {suv_type}"
            height = _height_m(tags, why, notes)
            normaliser = normalising_mass_kg(suv_type, weight, height, _get(tags, "PatientSex"))
            if normaliser <= 0:
                raise InputError(
                    f"the {suv_type} normalising mass of a {weight} kg, {height} m patient is "
                    f"{normaliser:.3f} kg, not positive; cannot back-compute SUVbw: check "
                    "PatientWeight and PatientSize"
                )
            if str(_get(tags, "PatientSex") or "").strip().upper() == "O":
                notes.append(f"PatientSex O: mean of the male and female {suv_type} masses")
            conv = SuvConversion(
                units=units,
                factor=weight / normaliser,
                weight_kg=weight,
                height_m=height,
                suv_type=suv_type,
            )
    elif units == "CM2ML":
        weight = _weight_kg(tags, notes)
        height = _height_m(tags, "to back-compute SUVbw from SUVbsa (CM2ML)", notes)
        bsa_cm2 = 1.0e4 * body_surface_area_m2(weight, height)
        conv = SuvConversion(
            units=units,
            factor=1000.0 * weight / bsa_cm2,
            weight_kg=weight,
            height_m=height,
            suv_type="BSA",
        )
    else:
        raise InputError(
            f"PET Units must be BQML, CNTS, GML or CM2ML to convert to SUV, found {units!r}; "
            "supply a PET already in SUV"
        )
    return SuvConversion(**{**conv.__dict__, "notes": tuple(notes) + conv.notes})


def slice_factors(
    conversion: SuvConversion,
    slices: Sequence[Mapping[str, Any]],
    tags: Mapping[str, Any],
) -> list[float]:
    """The factor of every slice, in the order of ``slices``.

    One value for the series, except for DecayCorrection NONE: each slice is scaled to its
    own AcquisitionDate/Time (the series date when the slice has none) over its own
    ActualFrameDuration (:meth:`SuvConversion.factor_at`); a slice lacking either is refused.
    """
    if conversion.decay_correction != "NONE":
        return [conversion.factor] * len(slices)
    out = []
    for k, s in enumerate(slices):
        where = f"slice {k + 1} of {len(slices)} (sorted along the slice normal)"
        acq = parse_dicom_datetime(
            _get(s, "AcquisitionDate") or _get(tags, "SeriesDate"),
            _get(s, "AcquisitionTime"),
            _get(s, "AcquisitionDateTime"),
        )
        if acq is None:
            raise InputError(
                f"PET DecayCorrection NONE needs each slice's AcquisitionTime; {where} has "
                "none: fix the DICOM header"
            )
        duration_ms = _float(s, "ActualFrameDuration", f"for DecayCorrection NONE ({where})")
        out.append(conversion.factor_at(acq, duration_ms / 1000.0))
    return out


def suv_scale_factor(tags: Mapping[str, Any], slices: Sequence[Mapping[str, Any]] = ()) -> float:
    """The multiplier from rescaled stored values to SUVbw (see :func:`suv_parameters`)."""
    return suv_parameters(tags, slices).factor
