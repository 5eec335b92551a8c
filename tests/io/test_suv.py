"""SUVbw conversion: pure functions on tag dictionaries, checked against hand-computed values."""

from __future__ import annotations

import math
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
    normalising_mass_kg,
    parse_dicom_datetime,
    scan_start_datetime,
    slice_factors,
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
    # James 128 (LBMJAMES128): 1.10 x 70 - 128 (70/175)^2 = 77 - 20.48; female 74.9 - 23.68
    assert lean_body_mass_kg(70.0, 1.75, "M") == pytest.approx(56.52)
    assert lean_body_mass_kg(70.0, 1.75, "M", "james128") == pytest.approx(56.52)
    assert lean_body_mass_kg(70.0, 1.75, "F") == pytest.approx(51.22)
    # Morgan (LBM): male 77 - 120 x 0.16 = 57.8; female as James 128
    assert lean_body_mass_kg(70.0, 1.75, "M", "morgan") == pytest.approx(57.8)
    assert lean_body_mass_kg(70.0, 1.75, "F", "morgan") == pytest.approx(51.22)
    # Janmahasatian: BMI 70 / 1.75^2 = 22.857; 9270 x 70 / (6680 + 216 BMI), female 8780, 244
    bmi = 70.0 / 1.75**2
    male_janma = 9270.0 * 70.0 / (6680.0 + 216.0 * bmi)
    female_janma = 9270.0 * 70.0 / (8780.0 + 244.0 * bmi)
    assert male_janma == pytest.approx(55.8571, abs=1e-4)
    assert female_janma == pytest.approx(45.1970, abs=1e-4)
    assert lean_body_mass_kg(70.0, 1.75, "M", "janmahasatian") == pytest.approx(male_janma)
    assert lean_body_mass_kg(70.0, 1.75, "F", "janmahasatian") == pytest.approx(female_janma)
    # IBW (manual): male 48.0 + 1.06 x (175 - 152) = 72.38; female 45.5 + 0.91 x 23 = 66.43
    assert ideal_body_weight_kg(1.75, "M") == pytest.approx(72.38)
    assert ideal_body_weight_kg(1.75, "F") == pytest.approx(66.43)
    assert ideal_body_weight_kg(1.52, "M") == pytest.approx(48.0)  # the constant at 152 cm


def test_patient_sex_other_takes_the_mean_of_male_and_female() -> None:
    # IBW: (72.38 + 66.43) / 2; James 128: (56.52 + 51.22) / 2; Morgan: (57.8 + 51.22) / 2
    assert ideal_body_weight_kg(1.75, "O") == pytest.approx(69.405)
    assert lean_body_mass_kg(70.0, 1.75, "O") == pytest.approx(53.87)
    assert lean_body_mass_kg(70.0, 1.75, "o", "morgan") == pytest.approx(54.51)
    # Janmahasatian: (55.8571 + 45.1970) / 2
    assert lean_body_mass_kg(70.0, 1.75, "O", "janmahasatian") == pytest.approx(50.52706, abs=1e-4)


@pytest.mark.parametrize("sex", [None, "", "U", "X"])
def test_body_size_needs_a_sex_m_f_or_o(sex: str | None) -> None:
    with pytest.raises(InputError, match="needs PatientSex M, F or O, found"):
        ideal_body_weight_kg(1.75, sex)
    with pytest.raises(InputError, match="lean body mass needs PatientSex M, F or O"):
        lean_body_mass_kg(70.0, 1.75, sex, "janmahasatian")


def test_normalising_mass_by_suv_type() -> None:
    assert normalising_mass_kg("BW", 70.0, 1.75, None) == 70.0
    assert normalising_mass_kg("LBM", 70.0, 1.75, "M") == pytest.approx(57.8)
    assert normalising_mass_kg("LBMJAMES128", 70.0, 1.75, "M") == pytest.approx(56.52)
    assert normalising_mass_kg("lbmjanma", 70.0, 1.75, "M") == pytest.approx(55.8571, abs=1e-4)
    assert normalising_mass_kg("LBMJAM", 70.0, 1.75, "M") == pytest.approx(55.8571, abs=1e-4)
    assert normalising_mass_kg("IBW", 70.0, 1.75, "F") == pytest.approx(66.43)
    with pytest.raises(InputError, match="SUVType must be one of BW, BSA, IBW, LBM, LBMJAMES128"):
        normalising_mass_kg("LEAN", 70.0, 1.75, "M")


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


# F-18 over a 300 s frame: lambda T / (1 - exp(-lambda T)), lambda = ln 2 / 6586.2 s
_LAMBDA = math.log(2.0) / 6586.2
FRAME_300S = _LAMBDA * 300.0 / (1.0 - math.exp(-_LAMBDA * 300.0))


def test_decay_correction_none_decays_to_each_slice_time_over_its_frame() -> None:
    frame = FRAME_300S  # 1 + lambda T / 2 + (lambda T)^2 / 12 with lambda T = 0.0315724
    assert frame == pytest.approx(1.0158694, abs=1e-7)
    conv = suv_parameters(tags(DecayCorrection="NONE"))
    # a slice acquired at 11:50, 6600 s after the injection, over 300 s:
    # 70000 / 368.08e6 x 1.015914 x exp(lambda 6600)
    expected = 70000.0 / 368.08e6 * FRAME_300S * math.exp(_LAMBDA * 6600.0)
    assert conv.factor_at(datetime(2025, 1, 1, 11, 50), 300.0) == pytest.approx(expected)
    # at 11:00 with an instantaneous frame: the START factor of the same hour
    assert conv.factor_at(datetime(2025, 1, 1, 11), 0.0) == pytest.approx(FACTOR_1H)
    assert conv.factor_at(datetime(2025, 1, 1, 11), 300.0) == pytest.approx(FACTOR_1H * FRAME_300S)
    # START and ADMIN ignore the slice time and frame
    start = suv_parameters(tags())
    assert start.factor_at(datetime(2025, 1, 1, 11, 50), 300.0) == start.factor


def test_decay_correction_none_with_several_acquisition_times() -> None:
    slices = [
        {"AcquisitionTime": t, "ActualFrameDuration": "300000"}
        for t in ("110000", "110500", "111000.5")
    ]
    factors = slice_factors(suv_parameters(tags(DecayCorrection="NONE"), slices), slices, BASE)
    elapsed = (3600.0, 3900.0, 4200.5)
    expected = [70000.0 / 368.08e6 * FRAME_300S * math.exp(_LAMBDA * t) for t in elapsed]
    assert factors == pytest.approx(expected, rel=1e-12)
    assert factors[1] / factors[0] == pytest.approx(2.0 ** (300.0 / 6586.2))
    # other decay corrections: one factor for every slice
    assert slice_factors(suv_parameters(tags()), slices, BASE) == [pytest.approx(FACTOR_1H)] * 3


def test_decay_correction_none_with_philips_activity_counts() -> None:
    slices = [{"AcquisitionTime": "110500", "ActualFrameDuration": 300000}]
    t = tags(Units="CNTS", DecayCorrection="NONE", **{PHILIPS_ACTIVITY_FACTOR: "2.0"})
    (factor,) = slice_factors(suv_parameters(t, slices), slices, t)
    assert factor == pytest.approx(2.0 * 70000.0 / 368.08e6 * FRAME_300S * math.exp(_LAMBDA * 3900))


@pytest.mark.parametrize(
    ("slice_tags", "message"),
    [
        (
            {"ActualFrameDuration": "300000"},
            "NONE needs each slice's AcquisitionTime; slice 2 of 2",
        ),
        ({"AcquisitionTime": "110500"}, "lacks the DICOM tag ActualFrameDuration"),
        ({"AcquisitionTime": "110500", "ActualFrameDuration": "long"}, "should be a number"),
        ({"AcquisitionTime": "095000", "ActualFrameDuration": "300000"}, "before the injection"),
        ({"AcquisitionTime": "110500", "ActualFrameDuration": "-5"}, "must not be negative"),
    ],
)
def test_decay_correction_none_slice_errors(slice_tags: dict[str, str], message: str) -> None:
    slices = [{"AcquisitionTime": "110000", "ActualFrameDuration": "300000"}, slice_tags]
    conv = suv_parameters(tags(DecayCorrection="NONE"))
    with pytest.raises(InputError, match=message):
        slice_factors(conv, slices, BASE)


def test_philips_counts_with_suv_factor_and_activity_factor() -> None:
    t = tags(Units="CNTS", **{PHILIPS_SUV_FACTOR: "0.0005"})
    assert suv_scale_factor(t) == pytest.approx(0.0005)
    t = tags(Units="CNTS", **{PHILIPS_ACTIVITY_FACTOR: "2.0"})
    assert suv_scale_factor(t) == pytest.approx(2.0 * FACTOR_1H)


def test_gml_is_suvbw_unless_suvtype_says_otherwise() -> None:
    assert suv_scale_factor(tags(Units="GML")) == 1.0
    assert suv_scale_factor(tags(Units="GML", SUVType="BW")) == 1.0
    # SUVx -> SUVbw = SUVx x 70 / N: Morgan (LBM) 57.8, James 128 56.52, IBW 72.38 kg (male)
    assert suv_scale_factor(tags(Units="GML", SUVType="LBM")) == pytest.approx(70.0 / 57.8)
    assert suv_scale_factor(tags(Units="GML", SUVType="LBMJAMES128")) == pytest.approx(70.0 / 56.52)
    assert suv_scale_factor(tags(Units="GML", SUVType="IBW")) == pytest.approx(70.0 / 72.38)
    janma = 9270.0 * 70.0 / (6680.0 + 216.0 * 70.0 / 1.75**2)
    for spelling in ("LBMJANMA", "LBMJAM"):
        t = tags(Units="GML", SUVType=spelling)
        assert suv_scale_factor(t) == pytest.approx(70.0 / janma)
    conv = suv_parameters(tags(Units="GML", SUVType="IBW", PatientSex="F"))
    assert conv.factor == pytest.approx(70.0 / 66.43)
    assert conv.suv_type == "IBW" and conv.height_m == 1.75


def test_gml_with_patient_sex_other_uses_the_mean_mass() -> None:
    # LBMJAMES128, sex O: N = (56.52 + 51.22) / 2 = 53.87 kg; IBW: (72.38 + 66.43) / 2
    conv = suv_parameters(tags(Units="GML", SUVType="LBMJAMES128", PatientSex="O"))
    assert conv.factor == pytest.approx(70.0 / 53.87)
    assert any("PatientSex O" in n for n in conv.notes)
    t = tags(Units="GML", SUVType="IBW", PatientSex="O")
    assert suv_scale_factor(t) == pytest.approx(70.0 / 69.405)
    # a stored SUVlbm of 1.0 in such a patient is SUVbw 1.2994
    assert 1.0 * suv_scale_factor(tags(Units="GML", SUVType="LBMJAMES128", PatientSex="O")) == (
        pytest.approx(1.29942, abs=1e-5)
    )


def test_cm2ml_is_back_computed_with_body_surface_area() -> None:
    # BSA = 0.007184 x 70^0.425 x 175^0.725 m2; SUVbw = SUVbsa x 70000 g / (1e4 BSA) cm2
    bsa_m2 = 0.007184 * 70.0**0.425 * 175.0**0.725
    expected = 70000.0 / (1.0e4 * bsa_m2)
    assert expected == pytest.approx(3.787585, rel=1e-6)
    for t in (tags(Units="CM2ML", SUVType="BSA"), tags(Units="CM2ML", PatientSex=None)):
        assert suv_scale_factor(t) == pytest.approx(expected, rel=1e-12)
    # DRO_2_3 stores SUVbsa 0.05, 0.26, 1.05 (rescale slope 0.01): the exact rule gives
    # SUVbw 0.19, 0.98, 3.98 at two decimals, as the manual of oncoray/suv_computation notes
    # (its listed 0.20, 1.00, 4.00 are rounded at the source)
    assert [round(v * expected, 2) for v in (0.05, 0.26, 1.05)] == [0.19, 0.98, 3.98]


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
        ({"Units": "GML", "SUVType": "IBW", "PatientSex": "U"}, "PatientSex M, F or O"),
        ({"Units": "GML", "SUVType": "IBW", "PatientSex": None}, "PatientSex M, F or O"),
        ({"Units": "GML", "SUVType": "IBW", "PatientSize": None}, "tag PatientSize"),
        ({"Units": "GML", "SUVType": "IBW", "PatientSize": "0"}, "PatientSize must be positive"),
        ({"Units": "GML", "SUVType": "IBW", "PatientSize": "0.5"}, "is -60.120 kg, not positive"),
        ({"Units": "GML", "SUVType": "LEAN"}, "SUVType must be one of"),
        ({"Units": "CM2ML", "PatientSize": None}, "lacks the DICOM tag PatientSize"),
        ({"PatientWeight": "seventy"}, "PatientWeight should be a number"),
        ({"RadiopharmaceuticalStartDateTime": "20250101120000"}, "before the injection"),
    ],
)
def test_unconvertible_series_name_the_problem(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        suv_parameters(tags(**changes))
