"""Readout data: model description, PSNR/SSIM of any layout, probabilities of a slice, text and CSV."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from napari_addunet import create_model, load_model, receptive_field
from napari_addunet.engine.metrics import psnr, ssim
from napari_addunet.engine.readout import (
    Report,
    compare,
    data_range_of,
    model_info,
    model_rows,
    probabilities_at,
)


def test_model_info_of_the_bundled_model():
    model = load_model()
    info = model_info(model, "bundled addunet-gray-blind")
    assert info.architecture == "addunet" and info.parameters == model.num_parameters()
    assert info.receptive_field == receptive_field(model) > 100  # multi-scale: a wide field
    assert info.gates == pytest.approx(model.gates) and len(info.gates) == model.config.depth
    assert info.kernels == model.config.kernels
    assert info.class_names == []
    assert "Train400" in info.training_data and "gaussian" in info.training_noise.lower()
    rows = dict(model_rows(info))
    assert rows["learned gates"].startswith(f"k={model.config.kernels[0]}: {model.gates[0]:.3f}")
    assert rows["classes"].startswith("none")


def test_model_info_of_other_models():
    unet = create_model("unet", base_width=4, depth=2, num_classes=2)
    unet.metadata["class_names"] = ["a", "b"]
    info = model_info(unet)
    assert info.gates is None and info.kernels is None and info.class_names == ["a", "b"]
    assert info.training_data == "unknown"
    assert "parameters" in info.title


def test_data_range_rule():
    assert data_range_of(np.array([0.0, 0.5, 1.0])) == 1.0
    assert data_range_of(np.array([0, 10], np.uint8)) == 255.0
    assert data_range_of(np.array([0, 10], np.uint16)) == 65535.0
    assert data_range_of(np.array([-1.0, 3.0])) == 4.0
    with pytest.raises(ValueError):
        data_range_of(np.array([np.nan]))


def test_compare_2d_matches_the_metrics():
    rng = np.random.default_rng(0)
    ref = rng.random((40, 40))
    est = ref + 0.05 * rng.standard_normal(ref.shape)
    q = compare(est, ref)
    assert q.psnr == pytest.approx(psnr(ref, est, 1.0))
    assert q.ssim == pytest.approx(ssim(ref, est, 1.0))
    assert q.planes == 1
    assert math.isinf(compare(ref, ref).psnr)
    holed = est.copy()
    holed[3, 4] = np.nan
    with pytest.raises(ValueError, match="the image holds 1 NaN or infinite value"):
        compare(holed, ref)
    with pytest.raises(ValueError, match="the reference holds 1 NaN"):
        compare(est, holed)


def test_compare_stacks_and_rgb():
    rng = np.random.default_rng(1)
    ref = rng.random((3, 32, 32))
    est = ref + 0.05 * rng.standard_normal(ref.shape)
    q = compare(est, ref, axes="ZYX")
    assert q.planes == 3
    assert q.ssim == pytest.approx(np.mean([ssim(r, e) for r, e in zip(ref, est, strict=True)]))
    rgb = compare(np.moveaxis(est, 0, -1), np.moveaxis(ref, 0, -1), rgb=True)
    assert rgb.ssim == pytest.approx(q.ssim) and rgb.psnr == pytest.approx(q.psnr)
    with pytest.raises(ValueError, match="shape"):
        compare(ref, ref[:2])


def _record(probs, axes, plane_axes, grid, rgb=False):
    return {
        "probabilities": np.asarray(probs),
        "class_names": ["a", "b"],
        "axes": axes,
        "plane_axes": plane_axes,
        "plane_grid": grid,
        "rgb": rgb,
    }


def test_probabilities_of_a_slice():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    rec = _record(probs, "ZYX", "Z", (3,))
    p = probabilities_at(rec, (1.2, 10.0, 3.0))
    assert p.label == "z=1" and p.best == "b"
    np.testing.assert_allclose(p.values, [0.2, 0.8])
    assert probabilities_at(rec, (7, 0, 0)).label == "z=2"  # clipped to the stack
    # extra leading world dimensions are ignored
    assert probabilities_at(rec, (0, 0, 0, 0)).label == "z=0"
    # a single image
    single = probabilities_at(_record([[0.3, 0.7]], "YX", "", ()), (5, 5))
    assert single.label == "image" and single.best == "b"
    # time and depth
    cube = np.arange(12, dtype=float).reshape(6, 2) / 11
    p = probabilities_at(_record(cube, "TZYX", "TZ", (2, 3)), (1, 2, 0, 0))
    np.testing.assert_allclose(p.values, cube[5]) and p.label == "t=1 z=2"
    # channels split for a grey model and not on screen: averaged
    rgb = probabilities_at(
        _record(np.array([[1, 0], [0, 1], [0.5, 0.5]]), "YXC", "C", (3,), rgb=True), (2, 2)
    )
    np.testing.assert_allclose(rgb.values, [0.5, 0.5])
    assert probabilities_at({"probabilities": None}, (0,)) is None


def test_report_text_and_csv():
    report = Report()
    report.add("model", "architecture", "addunet")
    report.add("quality", "PSNR (dB)", 31.23456)
    report.add("quality", "gates", (1.0, 0.5))
    report.add("quality", "missing", None)
    text = report.text()
    assert text.splitlines() == [
        "model",
        "  architecture: addunet",
        "quality",
        "  PSNR (dB): 31.23",
        "  gates: 1, 0.5",
        "  missing: -",
    ]
    rows = list(csv.reader(io.StringIO(report.csv())))
    assert rows[0] == ["section", "item", "value"] and rows[2] == ["quality", "PSNR (dB)", "31.23"]


def test_infinities_are_shown_with_their_sign():
    from napari_addunet.engine.readout import _fmt

    assert (_fmt(math.inf), _fmt(-math.inf), _fmt(0.5)) == ("inf", "-inf", "0.5")


def test_whole_numbers_and_small_runs_read_as_they_are():
    from napari_addunet.engine.readout import _fmt

    assert _fmt(65535.0) == "65535" and _fmt(1.0) == "1" and _fmt(0.000784) == "0.000784"
    assert _fmt(2.5e-4) == "0.00025" and _fmt(float("inf")) == "inf"
