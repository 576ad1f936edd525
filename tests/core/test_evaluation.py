"""Benchmark evaluation: the published protocol, checked against a computation by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from skimage import io as skio

import napari_addunet as na
from napari_addunet.engine.evaluation import EvaluationError, add_protocol_noise, evaluate, to_uint8


def shift_model(offset: float = 0.1):
    """An AddUNet whose output is exactly ``input + offset``: all weights zero, output bias ``offset``.

    Adding a constant does not commute with intensity normalisation, so this also checks that
    the protocol feeds the noisy image to the model as it is.
    """
    model = na.create_model("addunet", width=4, kernels=(3, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.out.bias.fill_(offset)
    return model.eval()


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    skio.imsave(tmp_path / "a.png", a, check_contrast=False)
    skio.imsave(tmp_path / "b.png", a[:, ::-1].copy(), check_contrast=False)
    skio.imsave(tmp_path / "c.png", rng.integers(0, 256, (17, 23), dtype=np.uint8), check_contrast=False)
    return tmp_path


def by_hand(image: np.ndarray, sigma: float, offset: float) -> tuple[float, float]:
    x = image.astype(np.float32) / np.float32(255)
    np.random.seed(0)
    x += np.random.normal(0, sigma / 255.0, x.shape)
    noisy8 = np.uint8((np.clip(x, 0, 1) * 255).round())
    out8 = np.uint8((np.clip(x + np.float32(offset), 0, 1) * 255).round())

    def p(u):
        mse = np.mean((u.astype(np.float64) - image.astype(np.float64)) ** 2)
        return 10 * math.log10(255.0**2 / mse)

    return p(out8), p(noisy8)


def test_protocol_matches_a_hand_computation(folder):
    report = evaluate(shift_model(0.1), folder, [15, 50])
    assert report.images == ["a.png", "b.png", "c.png"] and report.sigmas == [15.0, 50.0]
    for row in report.rows:
        clean = skio.imread(folder / row.image)
        expected, noisy = by_hand(clean, row.sigma, 0.1)
        assert row.psnr == pytest.approx(expected, abs=1e-9)
        assert row.input_psnr == pytest.approx(noisy, abs=1e-9)
    means = report.mean(15)
    assert means["psnr"] == pytest.approx(np.mean([r.psnr for r in report.rows if r.sigma == 15]))


def test_the_seed_is_reset_for_every_image():
    img = np.full((16, 16), 100, np.uint8)
    first = add_protocol_noise(img, 25)
    np.random.seed(123)  # whatever happened before
    assert np.array_equal(add_protocol_noise(img, 25), first)
    # the protocol's values are those of np.random.seed(0) then np.random.normal ...
    np.random.seed(0)
    by_seed = (img.astype(np.float32) / np.float32(255)) + np.random.normal(0, 25 / 255, img.shape)
    np.testing.assert_array_equal(first, by_seed.astype(np.float32))
    # ... without resetting the caller's global generator
    np.random.seed(7)
    expected_next = np.random.RandomState(7).random_sample()
    add_protocol_noise(img, 25)
    assert np.random.random_sample() == expected_next
    assert first.dtype == np.float32 and first.min() < 100 / 255 - 0.1  # float noise, unclipped
    assert to_uint8(np.array([-0.2, 0.5, 1.3])).tolist() == [0, 128, 255]


def test_identity_model_scores_the_noisy_input(folder):
    report = evaluate(shift_model(0.0), folder, [25])
    for row in report.rows:
        assert row.psnr == pytest.approx(row.input_psnr) and row.ssim == pytest.approx(row.input_ssim)


def test_a_model_that_outputs_nan_is_refused_not_scored_as_black(folder):
    broken = shift_model(float("nan"))
    with pytest.raises(EvaluationError, match="non-finite values .* on a.png at sigma 25"):
        evaluate(broken, folder, [25])


def test_table_and_json(folder):
    report = evaluate(shift_model(0.0), [folder / "a.png", folder / "c.png"], [15])
    table = report.table()
    assert "a.png" in table and "mean" in table and "noisy PSNR" in table
    assert "a.png" not in report.table(per_image=False)
    data = json.loads(report.to_json())
    assert data["results"]["15"]["mean"]["psnr"] == pytest.approx(report.mean(15)["psnr"])
    assert [r["image"] for r in data["results"]["15"]["images"]] == ["a.png", "c.png"]
    assert "seed(0)" in data["protocol"]


def test_json_is_strict_when_a_psnr_is_infinite(folder):
    report = evaluate(shift_model(0.0), [folder / "a.png"], [0, 25])  # sigma 0: the input is exact
    assert math.isinf(report.mean(0)["input_psnr"])

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    data = json.loads(report.to_json(), parse_constant=refuse)
    assert data["results"]["0"]["mean"]["input_psnr"] is None
    assert data["results"]["25"]["mean"]["psnr"] == pytest.approx(report.mean(25)["psnr"])


def test_in_memory_images_and_progress():
    seen = []
    arrays = {"x": np.zeros((12, 12), np.uint8), "y": np.full((12, 12), 200, np.uint8)}
    report = evaluate(shift_model(0.0), arrays, [5, 10], progress=seen.append)
    assert [p.done for p in seen] == [1, 2, 3, 4] and seen[-1].total == 4
    assert report.images == ["x", "y"]


@pytest.mark.parametrize(
    "images, sigmas, match",
    [
        ([np.zeros((8, 8), np.uint16)], [15], "defined on 8-bit images"),
        ([np.zeros((2, 8, 8), np.uint8)], [15], "takes 2-D grey images"),
        ([], [15], "no images"),
        ([np.zeros((8, 8), np.uint8)], [-1], "non-negative"),
        ([np.zeros((8, 8), np.uint8)], ("a",), r"sigmas must be numbers, got \['a'\]"),
        ([np.zeros((8, 8), np.uint8)], "25", "a number or a list of numbers, got str"),
        ([np.zeros((8, 8), np.uint8)], (25, 15, 25), "sigma 25 is listed twice"),
        (["missing.png", np.zeros((8, 8), np.uint8)], 15, "mixes file names and arrays"),
    ],
)
def test_bad_evaluation_input(images, sigmas, match):
    with pytest.raises(EvaluationError, match=match):
        evaluate(shift_model(), images, sigmas)


def test_a_single_sigma_and_the_smallest_image():
    report = evaluate(shift_model(), [np.full((4, 4), 100, np.uint8)], 25)
    assert report.sigmas == [25.0] and len(report.rows) == 1
    with pytest.raises(ValueError, match="at least 4x4 pixels, got \\(3, 3\\)"):
        evaluate(shift_model(), [np.full((3, 3), 100, np.uint8)], 25)


def test_empty_folder_and_colour_file(tmp_path):
    with pytest.raises(EvaluationError, match="no images in folder"):
        evaluate(shift_model(), tmp_path, [15])
    skio.imsave(tmp_path / "rgb.png", np.zeros((8, 8, 3), np.uint8), check_contrast=False)
    with pytest.raises(EvaluationError, match="colour image"):
        evaluate(shift_model(), tmp_path / "rgb.png", [15])


def test_sigmas_as_a_0d_array_are_read_and_booleans_refused():
    from napari_addunet.engine.evaluation import check_sigmas

    assert check_sigmas(np.array(25.0)) == [25.0]  # was a TypeError from iterating a 0-d array
    assert check_sigmas(np.array([15, 25])) == [15.0, 25.0]
    with pytest.raises(EvaluationError, match="must be numbers, got True"):
        check_sigmas(True)


def test_sigmas_that_would_share_a_key_are_refused():
    from napari_addunet.engine.evaluation import check_sigmas

    with pytest.raises(EvaluationError, match="both reported as 15"):  # the JSON kept one of them
        check_sigmas([15, 15.0000001])


def test_a_grey_image_with_a_channel_axis_is_evaluated_as_the_image():
    image = np.random.default_rng(3).integers(0, 256, (20, 24), dtype=np.uint8)
    plain = evaluate(shift_model(0.0), [image], [25])
    channel = evaluate(shift_model(0.0), [image[..., None]], [25])  # was refused
    assert channel.rows[0].psnr == plain.rows[0].psnr
