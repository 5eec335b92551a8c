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
  * ``NONE``: each slice holds activity at its own acquisition time: the dose is decayed per
    slice (:meth:`SuvConversion.factor_at`).

- ``CNTS`` (Philips): the private SUV scale factor (7053,1000) gives SUVbw directly; else the
  activity concentration scale factor (7053,1009) gives Bq/mL, then as ``BQML``.
- ``GML``: already SUV (g/mL) of the kind named by SUVType (BW when absent); another kind is
  converted back to SUVbw: SUVbw = SUVx x weight / x (LBM, LBMJAM, IBW in kg).
- ``CM2ML``: SUVbsa (cm2/mL): SUVbw = SUVbsa x weight_g / BSA_cm2 (Du Bois BSA).

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
    "parse_dicom_datetime",
    "scan_start_datetime",
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
    if s not in ("M", "F"):
        raise InputError(
            f"{what} needs PatientSex M or F, found {sex!r}; cannot back-compute SUVbw"
        )
    return s


def lean_body_mass_kg(
    weight_kg: float, height_m: float, sex: str | None, formula: str = "james"
) -> float:
    """Lean body mass: James (1976) or Janmahasatian (2005), in kg."""
    s = _sex(sex, "lean body mass")
    h_cm = 100.0 * height_m
    if formula == "james":
        if s == "M":
            return 1.10 * weight_kg - 128.0 * (weight_kg / h_cm) ** 2
        return 1.07 * weight_kg - 148.0 * (weight_kg / h_cm) ** 2
    if formula == "janmahasatian":
        bmi = weight_kg / height_m**2
        if s == "M":
            return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
        return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)
    raise ValueError(f"formula must be 'james' or 'janmahasatian', found {formula!r}")


def ideal_body_weight_kg(height_m: float, sex: str | None) -> float:
    """Ideal body weight (Devine 1974): 50 (M) or 45.5 (F) kg + 2.3 kg per inch over 5 ft."""
    s = _sex(sex, "ideal body weight")
    inches_over_5ft = 100.0 * height_m / 2.54 - 60.0
    return (50.0 if s == "M" else 45.5) + 2.3 * inches_over_5ft


def _frame_start(
    acquisition: datetime, frame_reference_ms: Any, frame_duration_ms: Any, half_life_s: float
) -> datetime:
    """The start of a frame from its acquisition time, as in QIBA's vendor-neutral code.

    ``acquisition - FrameReferenceTime + mean count-rate time within the frame``; with no
    frame timing, the acquisition time itself.
    """
    if _empty(frame_reference_ms) or _empty(frame_duration_ms):
        return acquisition
    duration_s = float(frame_duration_ms) / 1000.0
    lam = math.log(2.0) / half_life_s
    decay_in_frame = lam * duration_s
    if decay_in_frame <= 0:
        return acquisition
    mean_time_s = math.log(decay_in_frame / (1.0 - math.exp(-decay_in_frame))) / lam
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

    For decay correction ``NONE`` the factor depends on each slice's acquisition time:
    use :meth:`factor_at`. Everything else is recorded for reports (``to_json``).
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
    notes: tuple[str, ...] = field(default_factory=tuple)

    def factor_at(self, acquisition: datetime | None) -> float:
        """The factor for a slice acquired at ``acquisition`` (only differs for DC NONE)."""
        if (
            self.decay_correction != "NONE"
            or acquisition is None
            or self.injection_time is None
            or self.half_life_s is None
            or self.weight_kg is None
            or self.injected_dose_bq is None
        ):
            return self.factor
        elapsed = (acquisition - self.injection_time).total_seconds()
        decayed = self.injected_dose_bq * decay_factor(elapsed, self.half_life_s)
        return 1000.0 * self.weight_kg / decayed

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
                **{**base.__dict__, "factor": base.factor * float(activity), "notes": ()}
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
            weight = _weight_kg(tags, notes)
            why = f"to back-compute SUVbw from SUVType {suv_type}"
            if suv_type == "BSA":
                bsa_cm2 = 1.0e4 * body_surface_area_m2(weight, _height_m(tags, why, notes))
                normaliser = bsa_cm2 / 1000.0  # SUVbsa in g/mL is unusual; treat as cm2
            elif suv_type == "LBM":
                normaliser = lean_body_mass_kg(
                    weight, _height_m(tags, why, notes), _get(tags, "PatientSex"), "james"
                )
            elif suv_type == "LBMJAM":
                normaliser = lean_body_mass_kg(
                    weight, _height_m(tags, why, notes), _get(tags, "PatientSex"), "janmahasatian"
                )
            elif suv_type == "IBW":
                normaliser = ideal_body_weight_kg(
                    _height_m(tags, why, notes), _get(tags, "PatientSex")
                )
            else:
                raise InputError(
                    f"PET SUVType must be BW, BSA, LBM, LBMJAM or IBW, found {suv_type!r}; "
                    "cannot back-compute SUVbw"
                )
            conv = SuvConversion(
                units=units, factor=weight / normaliser, weight_kg=weight, suv_type=suv_type
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


def suv_scale_factor(tags: Mapping[str, Any], slices: Sequence[Mapping[str, Any]] = ()) -> float:
    """The multiplier from rescaled stored values to SUVbw (see :func:`suv_parameters`)."""
    return suv_parameters(tags, slices).factor
