"""Self-ensemble: orientations, the engine's averaged result against a numpy reference, bad sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import napari_addunet as na
from napari_addunet.engine.ensemble import (
    ENSEMBLE_SIZES,
    EnsembleError,
    check_ensemble,
    ensemble_mean,
    orient,
    orientations,
    unorient,
)
from napari_addunet.engine.evaluation import EvaluationError, evaluate
from napari_addunet.engine.inference import denoise, iter_denoise, predict
from napari_addunet.engine.layer_run import LayerSnapshot, run_layer_denoise
from napari_addunet.models import create_model


def _tiny(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    return create_model("addunet", **{"width": 4, "kernels": (3, 3), **kw}).eval()


@pytest.fixture(scope="module")
def model():
    return _tiny()


def _np_orient(a: np.ndarray, o) -> np.ndarray:
    transpose, up_down, left_right = o
    a = a.T if transpose else a
    a = a[::-1] if up_down else a
    return np.ascontiguousarray(a[:, ::-1] if left_right else a)


def _np_unorient(a: np.ndarray, o) -> np.ndarray:
    transpose, up_down, left_right = o
    a = a[:, ::-1] if left_right else a
    a = a[::-1] if up_down else a
    return np.ascontiguousarray(a.T if transpose else a)


def test_orientations_are_the_eight_symmetries_and_invert():
    x = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 1, 4, 6)
    seen = set()
    for n in ENSEMBLE_SIZES:
        assert len(orientations(n)) == n
        assert orientations(n)[0] == (False, False, False)
    for o in orientations(8):
        y = orient(x, o)
        assert torch.equal(unorient(y, o), x)
        assert np.array_equal(y[0, 0].numpy(), _np_orient(x[0, 0].numpy(), o))
        seen.add(tuple(y.flatten().tolist()))
    assert len(seen) == 8
    # sizes 2 and 4 keep the shape (no transpose), so any model runs them on the same tile
    assert all(not o[0] for o in orientations(4))


@pytest.mark.parametrize("bad", [0, 3, 16, -1, 2.0, "8", True, None])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(EnsembleError, match="ensemble must be one of 1, 2, 4, 8"):
        check_ensemble(bad)


def test_ensemble_mean_matches_a_numpy_reference():
    x = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(1))

    def run(v):  # not equivariant: weights the first row and column
        out = v.clone()
        out[..., 0, :] *= 3
        out[..., :, 0] += 1
        return out

    for n in ENSEMBLE_SIZES:
        got = ensemble_mean(run, x, n).numpy()
        for b in range(2):
            ref = np.mean(
                [
                    _np_unorient(
                        run(torch.from_numpy(_np_orient(x[b, 0].numpy(), o))[None, None])[0, 0].numpy(), o
                    )
                    for o in orientations(n)
                ],
                axis=0,
            )
            np.testing.assert_allclose(got[b, 0], ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(ensemble_mean(run, x, 1), run(x))
    calls = []

    def counted(v):
        calls.append(v.shape)
        return run(v)

    given = ensemble_mean(counted, x, 8, identity=run(x))  # the identity pass is not run again
    assert len(calls) == 7
    torch.testing.assert_close(given, ensemble_mean(run, x, 8))


def test_denoise_averages_the_oriented_results(model, one_thread):
    rng = np.random.default_rng(0)
    img = rng.random((40, 52)).astype(np.float32)
    plain = denoise(model, img, axes="YX", device="cpu", tile=0)
    assert np.array_equal(denoise(model, img, axes="YX", device="cpu", tile=0, ensemble=1), plain)
    for n in (2, 8):
        got = denoise(model, img, axes="YX", device="cpu", tile=0, ensemble=n)
        # percentile normalisation is computed on the whole image, which no orientation changes
        ref = np.mean(
            [
                _np_unorient(denoise(model, _np_orient(img, o), axes="YX", device="cpu", tile=0), o)
                for o in orientations(n)
            ],
            axis=0,
        )
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        assert np.abs(got - plain).max() > 1e-4  # a random model is far from equivariant


def test_tiled_ensemble_equals_untiled(model, one_thread):
    img = np.random.default_rng(1).random((150, 170)).astype(np.float32)
    whole = denoise(model, img, axes="YX", device="cpu", tile=0, ensemble=8)
    for tile in (48, 64):
        tiled, gen = None, iter_denoise(model, img, axes="YX", device="cpu", tile=tile, ensemble=8)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            tiled = stop.value
        assert tiled.details["tiles_per_plane"] > 1 and tiled.details["ensemble"] == 8
        np.testing.assert_allclose(tiled.denoised, whole, rtol=1e-5, atol=1e-5)


def test_tiled_ensemble_equals_untiled_for_a_pooling_model(one_thread):
    # Sides that are not multiples of the pooling grid: a flipped tile must pool on the grid of
    # the flipped whole image, which starts from the image's far edge, not the tile's.
    pooling = _tiny(kernels=(3, 3, 3), multiscale=True)
    assert pooling.size_multiple == 4
    img = np.random.default_rng(1).random((151, 173)).astype(np.float32)
    whole = denoise(pooling, img, axes="YX", device="cpu", tile=0, ensemble=8)
    for tile in (48, 64):
        result = _drain(iter_denoise(pooling, img, axes="YX", device="cpu", tile=tile, ensemble=8))
        assert result.details["tiles_per_plane"] > 1 and result.details["exact_tiling"]
        np.testing.assert_allclose(result.denoised, whole, rtol=1e-5, atol=1e-5)


def _drain(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def test_gates_apply_in_every_orientation(model, one_thread):
    img = np.random.default_rng(2).random((32, 36)).astype(np.float32)
    gates = [0.3, 1.7]
    got = denoise(model, img, axes="YX", device="cpu", tile=0, gates=gates, ensemble=2)
    flipped = denoise(model, img[:, ::-1].copy(), axes="YX", device="cpu", tile=0, gates=gates)[:, ::-1]
    ref = (denoise(model, img, axes="YX", device="cpu", tile=0, gates=gates) + flipped) / 2
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert list(model.gates) != gates  # the call did not change the model


def test_stacks_and_lazy_input(model):  # no one_thread: it would stick to dask's worker threads
    da = pytest.importorskip("dask.array")
    stack = np.random.default_rng(3).random((3, 32, 40)).astype(np.float32)
    eager = denoise(model, stack, axes="ZYX", device="cpu", ensemble=4)
    lazy = denoise(model, da.from_array(stack, chunks=(1, 32, 40)), axes="ZYX", device="cpu", ensemble=4)
    np.testing.assert_allclose(np.asarray(lazy.compute()), eager, rtol=1e-5, atol=1e-5)


def test_classification_uses_the_untransformed_input(one_thread):
    model = _tiny(num_classes=3, seed=4)
    model.metadata["class_names"] = ["a", "b", "c"]
    img = np.random.default_rng(4).random((2, 32, 32)).astype(np.float32)
    plain = predict(model, img, axes="ZYX", device="cpu")
    ens = predict(model, img, axes="ZYX", device="cpu", ensemble=8)
    np.testing.assert_allclose(ens.probabilities, plain.probabilities, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ens.denoised, plain.denoised)


def test_bad_size_changes_nothing(model):
    img = np.random.default_rng(5).random((16, 16)).astype(np.float32)
    before = img.copy()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(EnsembleError, match="got 3"):
        denoise(model, img, device="cpu", ensemble=3)
    with pytest.raises(EvaluationError, match="ensemble must be one of"):
        evaluate(model, {"a": (before * 255).astype(np.uint8)}, (25,), ensemble=5)
    assert np.array_equal(img, before)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_evaluate_with_ensemble(model, one_thread):
    clean = (np.random.default_rng(6).random((24, 30)) * 255).astype(np.uint8)
    plain = evaluate(model, {"img": clean}, (25,))
    ens = evaluate(model, {"img": clean}, (25,), ensemble=8)
    assert plain.ensemble == 1 and ens.ensemble == 8
    assert ens.to_dict()["ensemble"] == 8
    assert ens.mean(25)["psnr"] != plain.mean(25)["psnr"]
    assert ens.mean(25)["input_psnr"] == plain.mean(25)["input_psnr"]  # same noisy input


def test_layer_run_records_the_ensemble(model, one_thread):
    data = np.random.default_rng(7).random((24, 24)).astype(np.float32)
    snap = LayerSnapshot(name="noisy", data=data, rgb=False, scale=(1.0, 1.0), translate=(0.0, 0.0))
    result = run_layer_denoise(model, snap, device="cpu", ensemble=4)
    assert result.record.ensemble == 4
    assert result.layers[0][1]["metadata"]["napari_addunet"]["ensemble"] == 4
    assert ("self-ensemble", "4 orientations") in result.record.rows()
    assert ("self-ensemble", "off") in run_layer_denoise(model, snap, device="cpu").record.rows()
    np.testing.assert_allclose(
        result.denoised, denoise(model, data, device="cpu", ensemble=4), rtol=1e-5, atol=1e-5
    )


def test_bundled_denoiser_gains_from_the_ensemble(one_thread):
    from napari_addunet.engine.evaluation import self_check_image

    clean = self_check_image()
    net = na.load_model()
    plain = evaluate(net, {"check": clean}, (25,))
    ens = evaluate(net, {"check": clean}, (25,), ensemble=8)
    assert ens.mean(25)["psnr"] > plain.mean(25)["psnr"]


def test_command_line_ensemble(tmp_path, model, capsys):
    import tifffile

    from napari_addunet.cli import main
    from napari_addunet.engine.checkpoint import save_model

    ckpt = tmp_path / "tiny.safetensors"
    save_model(model, ckpt)
    img = np.random.default_rng(8).random((32, 32)).astype(np.float32)
    tifffile.imwrite(tmp_path / "in.tif", img)

    def denoise_cli(out: str, ensemble: str) -> int:
        argv = ["-q", "denoise", str(tmp_path / "in.tif"), "-o", str(tmp_path / out), "-m", str(ckpt)]
        return main([*argv, "--device", "cpu", "--ensemble", ensemble])

    assert denoise_cli("out.tif", "8") == 0
    np.testing.assert_allclose(
        tifffile.imread(tmp_path / "out.tif"),
        denoise(model, img, device="cpu", ensemble=8),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(SystemExit) as refused:
        denoise_cli("bad.tif", "3")
    assert refused.value.code == 2 and "--ensemble" in capsys.readouterr().err
    assert not (tmp_path / "bad.tif").exists()
    clean = (img * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "clean.tif", clean)
    argv = ["-q", "evaluate", "-m", str(ckpt), "--images", str(tmp_path / "clean.tif"), "--sigma", "25"]
    assert main([*argv, "--ensemble", "2", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ensemble"] == 2
    direct = evaluate(model, {"clean": clean}, (25,), ensemble=2)
    assert report["results"]["25"]["mean"]["psnr"] == pytest.approx(direct.mean(25)["psnr"], abs=1e-9)
