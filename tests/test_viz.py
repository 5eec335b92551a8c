"""Review figures: orientation on screen, content, calibration curves, saving."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mefn import viz
from mefn.errors import GeometryError, InputError, OutputError
from mefn.io.volume import Geometry
from mefn.postprocess import lesion_table
from mefn.viz.calibration import _roi_box

SHAPE = (33, 34, 35)
# i axis -> superior, j axis -> patient right (-L), k axis -> anterior (-P).
ROTATED = (0.0, -1.0, 0.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0)


def rotated_geometry() -> Geometry:
    return Geometry(
        SHAPE, spacing_mm=(3.0, 1.5, 2.0), origin_mm=(5.0, -7.0, 11.0), direction=ROTATED
    )


def flipped_geometry() -> Geometry:
    # i -> patient right, j -> posterior, k -> inferior: a common NIfTI-from-DICOM layout.
    return Geometry(
        SHAPE,
        spacing_mm=(2.0, 1.5, 3.0),
        origin_mm=(10.0, -5.0, 7.0),
        direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1),
    )


def render(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float64) / 255.0


@pytest.fixture
def case_arrays():
    geo = flipped_geometry()
    rng = np.random.default_rng(3)
    ct = rng.normal(40.0, 30.0, SHAPE).astype(np.float32)
    suv = rng.gamma(2.0, 0.3, SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[10:15, 12:18, 10:16] = 1  # large, confident
    mask[25:28, 5:8, 28:31] = 1  # small, uncertain
    suv[mask > 0] += 6.0
    unc = rng.uniform(0.0, 0.2, SHAPE).astype(np.float32)
    unc[25:28, 5:8, 28:31] = 0.8
    reference = np.zeros(SHAPE, np.uint8)
    reference[11:16, 12:18, 10:16] = 1
    u_ct = rng.uniform(0.0, 1.0, SHAPE).astype(np.float32)
    u_pet = rng.uniform(0.0, 1.0, SHAPE).astype(np.float32)
    table = lesion_table(mask, suv, unc, geo)
    return geo, ct, suv, mask, unc, reference, u_ct, u_pet, table


# --- orientation -----------------------------------------------------------------------------
def test_display_orientation_identity_and_rotated():
    ident = viz.display_orientation(Geometry(SHAPE))
    assert ident.perm == (0, 1, 2) and ident.flip == (False, False, False)
    rot = viz.display_orientation(rotated_geometry())
    # L <- j reversed, P <- k reversed, S <- i.
    assert rot.perm == (1, 2, 0)
    assert rot.flip == (True, True, False)
    assert rot.shape == (34, 35, 33)
    assert rot.spacing_mm == (1.5, 2.0, 3.0)
    assert rot.oblique_deg == pytest.approx(0.0)
    point = (4, 9, 30)
    assert rot.to_canonical(point) == (34 - 1 - 9, 35 - 1 - 30, 4)
    assert rot.from_canonical(rot.to_canonical(point)) == point


def test_canonical_index_matches_physical_lps():
    geo = rotated_geometry()
    orient = viz.display_orientation(geo)
    a = np.asarray(orient.to_canonical((0, 0, 0)))
    b = np.asarray(orient.to_canonical((1, 1, 1)))
    wa, wb = geo.index_to_world((0, 0, 0)), geo.index_to_world((1, 1, 1))
    # Moving +1 along each array axis moves each canonical index the same way as LPS.
    assert np.array_equal(np.sign(b - a), np.sign(wb - wa))


def test_oblique_grid_uses_nearest_axes():
    t = np.radians(20.0)
    direction = (np.cos(t), -np.sin(t), 0.0, np.sin(t), np.cos(t), 0.0, 0.0, 0.0, 1.0)
    orient = viz.display_orientation(Geometry(SHAPE, direction=direction))
    assert orient.perm == (0, 1, 2) and orient.flip == (False, False, False)
    assert orient.oblique_deg == pytest.approx(20.0, abs=1e-6)


def test_marker_lands_where_the_anatomy_says():
    geo = rotated_geometry()
    marker = np.zeros(SHAPE, np.float32)
    point = (16, 17, 34)  # k max: the most anterior voxel
    marker[point] = 1.0
    planes = viz.slice_planes(marker, geo, point)
    axial = planes["axial"]
    assert axial.shape == (35, 34)  # rows along A-P, columns along R-L
    row, col = np.unravel_index(np.argmax(axial), axial.shape)
    assert row == 0  # anterior at the top
    assert col == 34 - 1 - 17  # j runs to the patient's right: right is on the left
    sagittal = planes["sagittal"]
    assert np.unravel_index(np.argmax(sagittal), sagittal.shape)[1] == 0  # anterior on the left

    head = np.zeros(SHAPE, np.float32)
    top = (32, 0, 5)  # i max: the most superior voxel, j 0: the patient's leftmost
    head[top] = 1.0
    coronal = viz.slice_planes(head, geo, top)["coronal"]
    assert coronal.shape == (33, 34)
    r, c = np.unravel_index(np.argmax(coronal), coronal.shape)
    assert (r, c) == (0, 33)  # head at the top, patient's left on the right of the screen


def test_plotted_map_shows_marker_at_top_with_physical_aspect():
    geo = rotated_geometry()
    marker = np.zeros(SHAPE, np.float32)
    point = (16, 17, 34)
    marker[point] = 1.0
    fig = viz.plot_map(marker, geo, point, colorbar=False, crosshair=False)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [f"uncertainty u {p}" for p in viz.PLANES]
    shown = np.asarray(axes[0].images[0].get_array())
    assert np.unravel_index(np.argmax(shown), shown.shape)[0] == 0
    # Axial rows run along P (2.0 mm), columns along L (1.5 mm).
    assert axes[0].get_aspect() == pytest.approx(2.0 / 1.5)
    assert axes[1].get_aspect() == pytest.approx(3.0 / 1.5)
    assert axes[2].get_aspect() == pytest.approx(3.0 / 2.0)


def test_slice_planes_rejects_bad_point_and_grid():
    geo = rotated_geometry()
    with pytest.raises(ValueError, match=r"slice point \(40, 0, 0\) is outside the image"):
        viz.slice_planes(np.zeros(SHAPE), geo, (40, 0, 0))
    with pytest.raises(GeometryError, match=r"image has shape \(3, 4, 5\).*resample"):
        viz.slice_planes(np.zeros((3, 4, 5)), geo, (0, 0, 0))


def test_move_point_and_n_slices():
    geo = rotated_geometry()
    assert viz.n_slices(geo, "axial") == 33
    assert viz.n_slices(geo, "coronal") == 35
    assert viz.n_slices(geo, "sagittal") == 34
    # Axial slice 0 is the most inferior: i = 0 here (i runs superior).
    assert viz.move_point(geo, (16, 17, 20), "axial", 0) == (0, 17, 20)
    # Coronal slice 0 is the most anterior: k max here.
    assert viz.move_point(geo, (16, 17, 20), "coronal", 0) == (16, 17, 34)
    with pytest.raises(ValueError, match=r"axial slice 33 is outside 0\.\.32"):
        viz.move_point(geo, (0, 0, 0), "axial", 33)
    with pytest.raises(ValueError, match="plane must be one of"):
        viz.n_slices(geo, "oblique")


# --- maps, points, tables --------------------------------------------------------------------
def test_modality_disagreement_values():
    u_ct = np.array([[[0.9, 0.1, 0.5]]], np.float32)
    u_pet = np.array([[[0.2, 0.6, 0.5]]], np.float32)
    assert np.allclose(viz.modality_disagreement(u_ct, u_pet), [[[0.7, -0.5, 0.0]]])
    assert np.allclose(viz.modality_disagreement(u_ct, u_pet, signed=False), [[[0.7, 0.5, 0.0]]])
    with pytest.raises(GeometryError, match="must share a grid"):
        viz.modality_disagreement(u_ct, u_pet[..., :2])


def test_auto_point_prefers_flagged_lesion(case_arrays):
    geo, _, suv, mask, unc, _, _, _, table = case_arrays
    assert [lesion.review for lesion in table.lesions] == [False, True]
    point = viz.auto_point(geo, table, suv)
    assert mask[point] == 1 and unc[point] == pytest.approx(0.8)
    # Without lesions: the hottest voxel; without anything: the centre.
    hot = np.zeros(SHAPE, np.float32)
    hot[3, 30, 7] = 9.0
    assert viz.auto_point(geo, None, hot) == (3, 30, 7)
    assert viz.auto_point(geo) == (16, 17, 17)
    with pytest.raises(ValueError, match=r"no lesion 7 in the table; lesions are \[1, 2\]"):
        viz.lesion_point(table, 7, geo)


def test_lesion_rows_sorted_by_uncertainty(case_arrays):
    table = case_arrays[-1]
    rows = viz.lesion_rows(table)
    assert [row[0] for row in rows] == ["2", "1"]  # lesion 2 (u 0.8) first
    assert rows[0][viz.LESION_COLUMNS.index("u mean")] == "0.80"
    assert rows[0][-1] == "REVIEW" and rows[1][-1] == ""
    assert rows[1][viz.LESION_COLUMNS.index("vol mL")] == f"{5 * 6 * 6 * 9 / 1000:.2f}"
    text = viz.format_lesion_table(table)
    lines = text.splitlines()
    assert [cell.strip() for cell in lines[0].split("  ") if cell.strip()] == list(
        viz.LESION_COLUMNS
    )
    assert lines[1].split()[0] == "2" and lines[1].endswith("REVIEW")
    assert "1 lesion(s) with mean u >= 0.30 flagged for review" in lines[-1]


# --- calibration -----------------------------------------------------------------------------
def test_roi_box_is_the_lesion_box_grown_and_clipped():
    mask = np.zeros(SHAPE, np.uint8)
    reference = np.zeros(SHAPE, np.uint8)
    assert _roi_box(mask, reference) == (slice(0, 33), slice(0, 34), slice(0, 35))
    mask[2, 30, 5] = 1
    reference[14, 29, 6] = 3
    # margin 10: i 2..14 -> 0..24 (clipped below), j 29..30 -> 19..33 (clipped above), k 5..6
    assert viz.ROI_MARGIN_VOX == 10
    assert _roi_box(mask, reference) == (slice(0, 25), slice(19, 34), slice(0, 17))


def test_names_used_through_viz_are_exported_by_the_package():
    import importlib
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sources = [
        root / "notebooks" / "review_uncertainty.ipynb",
        root / "mefn" / "cli" / "review.py",
        Path(__file__),
    ]
    used = {
        n for f in sources for n in re.findall(r"(?<!mefn\.)\bviz\.([A-Za-z]\w*)", f.read_text())
    }
    assert {"prepare_review", "review_figure", "slice_figure", "move_point"} <= used
    assert sorted(used - set(viz.__all__)) == []
    # each concern module's public names are all re-exported, and defined where they live
    concerns = ("orientation", "points", "drawing", "plots", "tables", "calibration")
    exported: set[str] = {"format_u"}
    for name in (*concerns, "review_data", "page"):
        module = importlib.import_module(f"mefn.viz.{name}")
        exported |= set(module.__all__)
        for public in module.__all__:
            obj = getattr(module, public)
            if callable(obj):
                assert obj.__module__ == module.__name__, public
    assert sorted(exported) == sorted(viz.__all__)


def test_plot_calibration_titles_and_grid_check(case_arrays):
    _, _, _, mask, unc, reference, _, _, _ = case_arrays
    from mefn.metrics.calibration import (
        calibration_counts,
        expected_calibration_error,
        lesion_units,
        risk_coverage,
    )

    fig = viz.plot_calibration(mask, unc, reference)
    titles = [ax.get_title() for ax in fig.axes]
    # the figure shows the metrics of `mefn evaluate`, on the lesion region
    region = np.zeros(mask.shape, bool)
    region[_roi_box(mask, reference)] = True
    ece = expected_calibration_error(calibration_counts(reference, mask, unc, region=region))
    assert titles[0] == f"reliability (ECE {ece:.3f}, lesion region)"
    area = risk_coverage(lesion_units(reference, mask, unc))["area"]
    assert titles[1] == f"risk-coverage (area {area:.3f})"
    probs = np.stack([1.0 - mask, mask]).astype(np.float32)
    fig = viz.plot_calibration(mask, unc, reference, probabilities=probs)
    assert fig.axes[0].get_xlabel() == "predicted-class probability"
    with pytest.raises(GeometryError, match="must share a grid"):
        viz.plot_calibration(mask, unc, reference[:-1])


# --- figures ----------------------------------------------------------------------------------
def test_fusion_layers_and_orientation(case_arrays):
    geo, ct, suv, mask, _, reference, _, _, _ = case_arrays
    point = (12, 15, 12)  # inside lesion 1
    fig = viz.plot_fusion(ct, suv, geo, point, mask=mask, reference=reference)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert len(ax.images) == 2  # CT below, PET above
        pet = np.asarray(ax.images[1].get_array())
        assert pet.ndim == 3 and pet.shape[-1] == 4
        assert pet[..., 3].max() > 0.5 and pet[..., 3].min() < 0.5  # hot lesion opaque
        assert len(ax.collections) >= 1  # mask contours
    pixels = render(fig)
    assert pixels.var() > 0.01


def test_mip_marks_each_lesion_and_puts_head_up(case_arrays):
    geo, _, suv, mask, _, _, _, _, table = case_arrays
    fig = viz.plot_mip(suv, geo, lesions=table, mask=mask)
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == [f"1 u={table.lesions[0].uncertainty_mean:.2f}", "2 u=0.80"]
    assert "2 lesion(s), 1 to review" in ax.get_title()
    mip = np.asarray(ax.images[0].get_array())
    assert mip.shape == (35, 33)  # rows along S-I, columns along R-L
    # Lesion 2 sits at k 28-30 (k runs inferior) and i 25-27 (i runs to the right).
    hot = np.zeros(SHAPE, np.float32)
    hot[26, 6, 29] = 1.0
    mip_hot = np.asarray(viz.plot_mip(hot, geo).axes[0].images[0].get_array())
    r, c = np.unravel_index(np.argmax(mip_hot), mip_hot.shape)
    assert r == 29 and c == 32 - 26


def test_review_figure_full(case_arrays):
    geo, ct, suv, mask, unc, reference, u_ct, u_pet, table = case_arrays
    data = viz.ReviewData(
        geo, ct, suv, mask, unc, table, u_ct, u_pet, reference=reference, case_id="demo"
    )
    fig = viz.review_figure(data)
    titles = [ax.get_title() for ax in fig.axes]
    for plane in viz.PLANES:
        assert any(t.startswith("PET/CT " + plane) for t in titles)
        assert f"uncertainty u {plane}" in titles
        assert f"u_CT - u_PET {plane}" in titles
    assert any(t.startswith("PET MIP (coronal)") for t in titles)
    assert any(t.startswith("lesions by uncertainty") for t in titles)
    assert any(t.startswith("reliability") for t in titles)
    assert any(t.startswith("risk-coverage") for t in titles)
    assert "demo" in fig.get_suptitle() and "1 flagged for review" in fig.get_suptitle()
    assert render(fig).var() > 0.01


def test_review_figure_without_extras_says_so(case_arrays):
    geo, ct, suv, mask, unc, *_ = case_arrays
    fig = viz.review_figure(viz.ReviewData(geo, ct, suv, mask, unc), point=(12, 15, 12))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("disagreement not available" in t for t in texts)
    assert not any(ax.get_title().startswith("reliability") for ax in fig.axes)
    with pytest.raises(ValueError, match="outside the image"):
        viz.review_figure(viz.ReviewData(geo, ct, suv, mask, unc), point=(99, 0, 0))


def test_review_data_checks_grids(case_arrays):
    geo, ct, suv, mask, unc, *_ = case_arrays
    with pytest.raises(GeometryError, match=r"suv has shape \(33, 34, 34\)"):
        viz.ReviewData(geo, ct, suv[..., :-1], mask, unc)
    with pytest.raises(GeometryError, match=r"probabilities \(2, 3, 3, 3\) do not match"):
        viz.ReviewData(geo, ct, suv, mask, unc, probabilities=np.zeros((2, 3, 3, 3)))


def test_save_figure_png_pdf_and_errors(tmp_path, case_arrays):
    from matplotlib.image import imread

    geo, ct, suv, mask, *_ = case_arrays
    fig = viz.plot_fusion(ct, suv, geo, (12, 15, 12), mask=mask)
    png = viz.save_figure(fig, tmp_path / "f.png", dpi=50)
    image = imread(png)
    assert image.shape[0] == 200 and image.shape[1] == 600  # 12 x 4 inches at 50 dpi
    assert image[..., :3].var() > 0.005
    pdf = viz.save_figure(fig, tmp_path / "f.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]  # no temporaries
    with pytest.raises(OutputError, match=r"must end in \.png or \.pdf, found 'f\.jpg'"):
        viz.save_figure(fig, tmp_path / "f.jpg")
    with pytest.raises(OutputError, match="does not exist; create it first"):
        viz.save_figure(fig, tmp_path / "missing" / "f.png")


def test_output_case_id(tmp_path):
    with pytest.raises(InputError, match="holds no <case>_mask.nii.gz: expected a `mefn segment`"):
        viz.output_case_id(tmp_path)
    (tmp_path / "a_mask.nii.gz").touch()
    assert viz.output_case_id(tmp_path) == "a"
    (tmp_path / "b_mask.nii.gz").touch()
    with pytest.raises(InputError, match=r"outputs of 2 cases \(a, b\); choose one"):
        viz.output_case_id(tmp_path)
    assert viz.output_case_id(tmp_path, "b") == "b"


def test_from_prediction_takes_volumes_on_its_grid(case_arrays):
    from types import SimpleNamespace

    from mefn.io.volume import Volume

    geo, ct, suv, mask, unc, reference, u_ct, u_pet, table = case_arrays
    prediction = SimpleNamespace(
        geometry=geo,
        suv=suv,
        mask=mask,
        uncertainty=unc,
        lesions=table,
        uncertainty_ct=u_ct,
        uncertainty_pet=u_pet,
        probabilities=None,
        case_id="p",
        hot_spots=(),
        dropped=(),
    )
    data = viz.ReviewData.from_prediction(
        prediction, Volume(ct, geo), reference=Volume(reference.astype(np.float32), geo)
    )
    assert data.ct is ct and data.reference is not None and data.reference.dtype == np.uint8
    assert int(data.reference.sum()) == 5 * 6 * 6


def test_slice_figure_and_picker_helpers(case_arrays):
    geo, ct, suv, mask, unc, reference, u_ct, u_pet, table = case_arrays
    choices = viz.lesion_choices(table)
    assert [lesion_id for _, lesion_id in choices] == [2, 1]
    assert choices[0][0].startswith("2: 0.24 mL") and choices[0][0].endswith("REVIEW")
    point = viz.lesion_point(table, 2, geo)
    # Axial slice index: k runs inferior here, so slice = 34 - k.
    assert viz.slice_index(geo, point, "axial") == 34 - point[2]
    assert viz.move_point(geo, point, "axial", viz.slice_index(geo, point, "axial")) == point
    data = viz.ReviewData(geo, ct, suv, mask, unc, table, u_ct, u_pet)
    fig = viz.slice_figure(data, point)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len([t for t in titles if "axial" in t]) == 3
    assert render(fig).var() > 0.01
    fig = viz.slice_figure(viz.ReviewData(geo, ct, suv, mask, unc), point)
    assert not any("u_CT" in ax.get_title() for ax in fig.axes)
    # a small u with a small calibrated threshold: the u row uses the review page's scale
    calibrated = dataclasses.replace(table, review_threshold=0.001)
    fig = viz.slice_figure(viz.ReviewData(geo, ct, suv, mask, unc / 100, calibrated), point)
    u_axes = [ax for ax in fig.axes if ax.get_title().startswith("uncertainty u")]
    want = viz.uncertainty_display_max(unc / 100, 0.001)
    assert want < 0.5 and len(u_axes) == 3
    assert all(ax.images[0].get_clim() == (0.0, want) for ax in u_axes)


def test_prepare_review_needs_case_with_outputs(tmp_path):
    with pytest.raises(InputError, match="need the input case they were made from"):
        viz.prepare_review(outputs=tmp_path)


def test_uncertainty_scale_follows_the_data() -> None:
    """A u map far below 1 is shown on its own scale (else it looks uniformly certain)."""
    from mefn.viz import format_u, uncertainty_display_max

    u = np.full((20, 20, 20), 0.001, np.float32)
    u[5:10, 5:10, 5:10] = 0.02
    assert uncertainty_display_max(u, 0.004) == pytest.approx(0.02)
    assert uncertainty_display_max(u, 0.05) == pytest.approx(0.1)  # twice the threshold
    assert uncertainty_display_max(np.full((4, 4, 4), 0.6, np.float32), 0.3) == 1.0
    assert uncertainty_display_max(np.zeros((4, 4, 4), np.float32), 0.0) == 1e-3
    assert [format_u(v) for v in (0.00387319, 0.12, 1.0, 0.0)] == ["0.0039", "0.12", "1.00", "0.00"]


def test_hot_spots_are_listed_and_marked_on_the_mip(case_arrays):
    from mefn.postprocess import HotSpot

    geo, ct, suv, mask, unc, reference, u_ct, u_pet, table = case_arrays
    centre = geo.index_to_world(np.array([10.0, 12.0, 14.0]))
    spot = HotSpot(
        spot_id=1,
        voxels=20,
        volume_ml=0.16,
        centroid_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
        suv_max=7.25,
        suv_mean=4.0,
        background_suv=1.0,
        contrast=7.25,
        covered_fraction=0.0,
        lesion_probability_max=0.0021,
    )
    text = viz.format_hot_spots((spot,))
    assert "H1" in text and "7.25" in text and "0.0021" in text and "check them" in text
    assert viz.format_hot_spots(()) == "no PET hot spot outside the mask"
    fig = viz.plot_mip(suv, geo, lesions=table, hot_spots=(spot,))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert any(t.startswith("H1 SUV 7.2") and "p=0.0021" in t for t in labels)
    assert "1 hot spot(s) outside the mask" in ax.get_title()
    data = viz.ReviewData(
        geometry=geo, ct=ct, suv=suv, mask=mask, uncertainty=unc, lesions=table, hot_spots=(spot,)
    )
    page = viz.review_figure(data)
    assert "1 PET hot spot(s) outside the mask" in page.texts[0].get_text()


def test_lesions_removed_for_low_confidence_are_counted_on_the_page(case_arrays):
    from mefn.postprocess import DroppedLesion
    from mefn.viz.review_data import _report_dropped

    geo, ct, suv, mask, unc, reference, u_ct, u_pet, table = case_arrays
    gone = DroppedLesion(label=1, volume_ml=0.4, centroid_mm=(1.0, 2.0, 3.0), suv_max=2.5,
                         confidence=0.04)  # fmt: skip
    report = {"dropped_lesions": [gone.to_json()]}
    assert _report_dropped(report) == (gone,)
    assert _report_dropped(None) == () and _report_dropped({}) == ()
    assert _report_dropped({"dropped_lesions": [{"label": 1}]}) == ()  # unreadable: none
    data = viz.ReviewData(
        geometry=geo, ct=ct, suv=suv, mask=mask, uncertainty=unc, lesions=table, dropped=(gone,)
    )
    page = viz.review_figure(data)
    assert "1 removed for a confidence below the floor" in page.texts[0].get_text()
