"""SUVbw conversion: pure functions on tag dictionaries, checked against hand-computed values."""

from __future__ import annotations

from datetime import datetime

import pytest

from mefn.errors import InputError
from mefn.io.suv import (
    GE_SCAN_DATETIME,
    PHILIPS_ACTIVITY_FACTOR,
    PHILIPS_SUV_FACTOR,
    body_surface_area_m2,
    decay_factor,
    ideal_body_weight_kg,
    lean_body_mass_kg,
    parse_dicom_datetime,
    scan_start_datetime,
    suv_parameters,
    suv_scale_factor,
)

# 70 kg, 368.08 MBq of F-18 (T½ 6586.2 s) at 10:00, scan at 11:00.
BASE = {
    "Units": "BQML",
    "DecayCorrection": "START",
    "PatientWeight": "70",
    "PatientSize": "1.75",
    "PatientSex": "M",
    "SeriesDate": "20250101",
    "SeriesTime": "110000.000000",
    "AcquisitionDate": "20250101",
    "AcquisitionTime": "110000",
    "RadiopharmaceuticalStartDateTime": "20250101100000.000000",
    "RadionuclideTotalDose": "368080000.0",
    "RadionuclideHalfLife": "6586.2",
}
# 70000 g / (368.08e6 Bq x 2^(-3600 / 6586.2)): 3600 Bq/mL is SUV 1.0000.
FACTOR_1H = 2.7777812496068244e-4


def tags(**changes: object) -> dict[str, object]:
    out = dict(BASE)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def test_decay_factor_halves_after_one_half_life() -> None:
    assert decay_factor(6588.0, 6588.0) == pytest.approx(0.5)
    assert decay_factor(0.0, 6588.0) == 1.0
    assert decay_factor(2 * 4057.7, 4057.7) == pytest.approx(0.25)


def test_body_size_formulas_on_hand_values() -> None:
    # Du Bois: 0.007184 x 70^0.425 x 175^0.725
    assert body_surface_area_m2(70.0, 1.75) == pytest.approx(1.848143, abs=1e-6)
    # James: 1.10 x 70 - 128 (70/175)^2 = 77 - 20.48; female 74.9 - 23.68
    assert lean_body_mass_kg(70.0, 1.75, "M") == pytest.approx(56.52)
    assert lean_body_mass_kg(70.0, 1.75, "F") == pytest.approx(51.22)
    # Janmahasatian: 9270 x 70 / (6680 + 216 x 22.857)
    assert lean_body_mass_kg(70.0, 1.75, "M", "janmahasatian") == pytest.approx(55.8571, abs=1e-4)
    # Devine: 50 + 2.3 x (175 / 2.54 - 60)
    assert ideal_body_weight_kg(1.75, "M") == pytest.approx(70.4646, abs=1e-4)


def test_ideal_body_weight_needs_a_sex() -> None:
    with pytest.raises(InputError, match="PatientSex M or F, found 'O'"):
        ideal_body_weight_kg(1.75, "O")


def test_parse_datetime_forms() -> None:
    assert parse_dicom_datetime("20250101", "110230.5") == datetime(2025, 1, 1, 11, 2, 30, 500000)
    assert parse_dicom_datetime(dt="20250101100000.000000+0100") == datetime(2025, 1, 1, 10)
    assert parse_dicom_datetime("20250101", "1100") == datetime(2025, 1, 1, 11)
    assert parse_dicom_datetime(None, "110000") is None
    with pytest.raises(InputError, match="cannot read DICOM date"):
        parse_dicom_datetime("2025-01-01", "110000")


def test_bqml_start_one_hour_after_injection() -> None:
    conv = suv_parameters(tags())
    assert conv.factor == pytest.approx(FACTOR_1H, rel=1e-9)
    assert 3600.0 * conv.factor == pytest.approx(1.0, abs=1e-4)
    assert conv.reference_time == datetime(2025, 1, 1, 11)
    assert conv.reference_source == "SeriesDateTime"
    assert conv.to_json()["injected_dose_bq"] == 368.08e6


def test_dose_in_mbq_and_weight_in_grams_give_the_same_factor() -> None:
    assert suv_scale_factor(tags(RadionuclideTotalDose="368.08")) == pytest.approx(FACTOR_1H)
    assert suv_scale_factor(tags(PatientWeight="70000")) == pytest.approx(FACTOR_1H)
    notes = suv_parameters(tags(RadionuclideTotalDose="368.08")).notes
    assert any("MBq" in n for n in notes)


def test_admin_decay_correction_does_not_decay_the_dose() -> None:
    # 70000 / 368.08e6
    assert suv_scale_factor(tags(DecayCorrection="ADMIN")) == pytest.approx(1.9017605e-4)


def test_other_half_life_is_used() -> None:
    # Ga-68: 70000 / (368.08e6 x 2^(-3600 / 4057.7))
    expected = 70000.0 / (368.08e6 * 2 ** (-3600.0 / 4057.7))
    assert suv_scale_factor(tags(RadionuclideHalfLife="4057.7")) == pytest.approx(expected)
    assert expected == pytest.approx(FACTOR_1H * 1.26628, rel=1e-4)  # 2^(3600/4057.7 - 3600/6586.2)


def test_injection_before_midnight_scan_after() -> None:
    t = tags(
        RadiopharmaceuticalStartDateTime=None,
        RadiopharmaceuticalStartTime="233000",
        SeriesDate="20250102",
        SeriesTime="003000",
        AcquisitionDate="20250102",
        AcquisitionTime="003000",
    )
    conv = suv_parameters(t)
    assert conv.injection_time == datetime(2025, 1, 1, 23, 30)
    assert conv.factor == pytest.approx(FACTOR_1H)


def test_only_start_time_same_day() -> None:
    t = tags(RadiopharmaceuticalStartDateTime=None, RadiopharmaceuticalStartTime="100000")
    assert suv_scale_factor(t) == pytest.approx(FACTOR_1H)


def test_series_time_after_acquisition_uses_ge_private_datetime() -> None:
    t = tags(SeriesTime="113000", **{GE_SCAN_DATETIME: "20250101110000"})
    start, source = scan_start_datetime(t)
    assert start == datetime(2025, 1, 1, 11)
    assert "0009,100D" in source
    assert suv_scale_factor(t) == pytest.approx(FACTOR_1H)


def test_series_time_after_acquisition_uses_frame_start_of_earliest_slice() -> None:
    # acquisitions at 11:02:30 (frame reference 450 s) and 11:05:00 (600 s), 603 s frames:
    # start = acquisition - reference + mean count-rate time (299.906 s) = 10:59:59.906
    slices = [
        {
            "AcquisitionTime": "110500",
            "FrameReferenceTime": "600000",
            "ActualFrameDuration": 603000,
        },
        {
            "AcquisitionTime": "110230",
            "FrameReferenceTime": "450000",
            "ActualFrameDuration": 603000,
        },
    ]
    t = tags(SeriesTime="113000", AcquisitionTime="110230")
    start, source = scan_start_datetime(t, slices)
    assert (datetime(2025, 1, 1, 11) - start).total_seconds() == pytest.approx(0.0944, abs=1e-3)
    assert "earliest" in source
    assert suv_scale_factor(t, slices) == pytest.approx(FACTOR_1H, rel=1e-4)


def test_decay_correction_none_decays_to_each_slice_time() -> None:
    conv = suv_parameters(tags(DecayCorrection="NONE"))
    # a slice acquired at 11:50: 6600 s after the injection
    later = conv.factor_at(datetime(2025, 1, 1, 11, 50))
    assert conv.factor_at(datetime(2025, 1, 1, 11)) == pytest.approx(FACTOR_1H)
    assert later == pytest.approx(70000.0 / (368.08e6 * 2 ** (-6600.0 / 6586.2)))


def test_philips_counts_with_suv_factor_and_activity_factor() -> None:
    t = tags(Units="CNTS", **{PHILIPS_SUV_FACTOR: "0.0005"})
    assert suv_scale_factor(t) == pytest.approx(0.0005)
    t = tags(Units="CNTS", **{PHILIPS_ACTIVITY_FACTOR: "2.0"})
    assert suv_scale_factor(t) == pytest.approx(2.0 * FACTOR_1H)


def test_gml_is_suvbw_unless_suvtype_says_otherwise() -> None:
    assert suv_scale_factor(tags(Units="GML")) == 1.0
    assert suv_scale_factor(tags(Units="GML", SUVType="BW")) == 1.0
    # SUVlbm (James, male 56.52 kg) -> SUVbw = SUVlbm x 70 / 56.52
    assert suv_scale_factor(tags(Units="GML", SUVType="LBM")) == pytest.approx(70.0 / 56.52)
    assert suv_scale_factor(tags(Units="GML", SUVType="IBW")) == pytest.approx(70.0 / 70.46457)


def test_cm2ml_is_back_computed_with_body_surface_area() -> None:
    # SUVbw = SUVbsa x 70000 g / 18481.43 cm2
    assert suv_scale_factor(tags(Units="CM2ML", SUVType="BSA")) == pytest.approx(3.787585, rel=1e-6)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"PatientWeight": None}, "lacks the DICOM tag PatientWeight"),
        ({"PatientWeight": "0"}, "PatientWeight must be positive"),
        ({"RadionuclideTotalDose": None}, "lacks the DICOM tag RadionuclideTotalDose"),
        ({"RadionuclideTotalDose": "-5"}, "RadionuclideTotalDose must be positive"),
        ({"RadionuclideHalfLife": None}, "lacks the DICOM tag RadionuclideHalfLife"),
        ({"Units": None}, "lacks the DICOM tag Units"),
        ({"Units": "PROPCNTS"}, "Units must be BQML, CNTS, GML or CM2ML"),
        ({"DecayCorrection": None}, "lacks the DICOM tag DecayCorrection"),
        ({"DecayCorrection": "WEIRD"}, "DecayCorrection must be START, ADMIN or NONE"),
        ({"SeriesTime": None}, "lacks the DICOM tag SeriesTime"),
        ({"RadiopharmaceuticalStartDateTime": None}, "RadiopharmaceuticalStartTime"),
        ({"Units": "CNTS"}, r"\(7053,1000\) SUV scale factor"),
        ({"Units": "GML", "SUVType": "IBW", "PatientSex": "O"}, "PatientSex M or F"),
        ({"Units": "CM2ML", "PatientSize": None}, "lacks the DICOM tag PatientSize"),
        ({"PatientWeight": "seventy"}, "PatientWeight should be a number"),
        ({"RadiopharmaceuticalStartDateTime": "20250101120000"}, "before the injection"),
    ],
)
def test_unconvertible_series_name_the_problem(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        suv_parameters(tags(**changes))
