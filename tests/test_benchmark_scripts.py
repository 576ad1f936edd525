"""The logic of the benchmark scripts that is not measurement: splits, sweeps, target statements."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import napari_addunet as na

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train400_split_holds_out_every_20th_image(tmp_path):
    sel = _script("select_config")
    for i in range(400):
        (tmp_path / f"test_{i + 1:03d}.png").touch()
    train, val = sel.split_train400(tmp_path)
    assert len(train) == 380 and len(val) == 20
    assert [p.name for p in val[:3]] == ["test_001.png", "test_021.png", "test_041.png"]
    assert not set(train) & set(val)
    (tmp_path / "few").mkdir()
    with pytest.raises(SystemExit, match="expected the 400 Train400 images"):
        sel.split_train400(tmp_path / "few")


def test_gate_sweep_includes_the_learned_value_and_matches_the_plain_forward():
    gs = _script("gate_sweep")
    model = na.create_model("addunet", width=4, kernels=(3, 3)).eval()
    model.set_gates([0.7, 1.3])
    rng = np.random.default_rng(0)
    images = [("a", (rng.random((24, 24)) * 255).astype(np.uint8))]
    res = gs.sweep(model, images, 25.0, points=5)
    report = na.evaluate(model, {"a": images[0][1]}, (25.0,))
    assert res["psnr_learned"] == pytest.approx(report.mean(25.0)["psnr"], abs=1e-3)
    for level, learned in zip(res["levels"], (0.7, 1.3), strict=True):
        assert level["values"][0] == 0.0 and level["values"][-1] == pytest.approx(2 * learned)
        at_learned = level["values"].index(pytest.approx(learned))
        assert level["psnr"][at_learned] == pytest.approx(res["psnr_learned"], abs=1e-3)
    assert model.gates == pytest.approx((0.7, 1.3))  # the sweep leaves the model's gates alone


def _denoising_doc(bsd68: tuple[float, float, float]) -> dict:
    results = {s: {"psnr": v} for s, v in zip(("15", "25", "50"), bsd68, strict=True)}
    return {"methods": {"addunet-bundled": {"parameters": 1, "datasets": {"bsd68": {"results": results}}}}}


def test_summary_computes_the_targets_from_the_numbers():
    summary = _script("summary")
    below = "\n".join(summary.denoising_section(_denoising_doc((31.18, 28.75, 25.69)), None))
    assert "minus published BM3D +0.11 / +0.18 / +0.07 dB" in below
    assert "is NOT met (0 of 3 sigmas)" in below and "(goal not reached)" in below
    above = "\n".join(summary.denoising_section(_denoising_doc((31.80, 29.30, 26.30)), None))
    assert "(+0.3 dB at every sigma) is met;" in above and "(goal reached)" in above
