"""The command line on real files in temporary folders."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tifffile
import torch
from skimage import data as skdata

import napari_addunet as na
from napari_addunet.cli import main


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    model = na.create_model("addunet", width=4, kernels=(3, 3), num_classes=3)
    return na.save_model(
        model,
        tmp_path / "tiny.safetensors",
        class_names=["a", "b", "c"],
        normalization={"method": "percentile", "low": 0.1, "high": 99.9},
    )


@pytest.fixture
def stack_tif(tmp_path):
    rng = np.random.default_rng(0)
    arr = (rng.random((3, 40, 50)) * 4000).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        arr,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.2),
        metadata={"spacing": 0.5, "unit": "um", "axes": "ZYX"},
    )
    return path, arr


def test_denoise_tiff_keeps_metadata_and_refuses_overwrite(tiny_model, stack_tif, tmp_path, capsys):
    src, arr = stack_tif
    out = tmp_path / "out.tif"
    assert (
        main(["-q", "denoise", str(src), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"]) == 0
    )
    with tifffile.TiffFile(out) as tif:
        result = tif.asarray()
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.5)
        assert tif.series[0].axes == "ZYX"
        xres = tif.pages[0].tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(5.0)
    assert result.shape == arr.shape and result.dtype == np.float32
    expected = na.denoise(na.load_model(tiny_model), arr, axes="ZYX", device="cpu")
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-3)
    before = out.read_bytes()
    assert main(["-q", "denoise", str(src), "-o", str(out), "--model", str(tiny_model)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["-q", "denoise", str(src), "-o", str(out), "--model", str(tiny_model), "--overwrite"]) == 0


def test_denoise_folder_to_folder_png(tiny_model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    import imageio.v3 as iio

    iio.imwrite(folder / "a.png", skdata.camera()[:64, :64])
    iio.imwrite(folder / "b.png", skdata.moon()[:48, :40])
    out = tmp_path / "out"
    code = main(
        ["-q", "denoise", str(folder), "-o", str(out), "--model", str(tiny_model), "--output-format", "input"]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert iio.imread(out / "b.png").shape == (48, 40)
    assert iio.imread(out / "a.png").dtype == np.uint8


def test_denoise_gates_change_the_result(tiny_model, tmp_path):
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.random.default_rng(1).random((32, 32)).astype(np.float32))
    main(["-q", "denoise", str(img), "-o", str(tmp_path / "a.tif"), "--model", str(tiny_model)])
    main(
        [
            "-q",
            "denoise",
            str(img),
            "-o",
            str(tmp_path / "b.tif"),
            "--model",
            str(tiny_model),
            "--gates",
            "0,0",
        ]
    )
    a, b = tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif")
    assert np.abs(a - b).max() > 1e-4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["denoise", "missing.tif", "-o", "x.tif"], "no such file"),
        (
            ["denoise", "{img}", "-o", "{out}", "--model", "no-such-model"],
            "no bundled model named 'no-such-model'",
        ),
        (["denoise", "{img}", "-o", "{out}", "--axes", "QYX"], "axes"),
        (["denoise", "{img}", "-o", "{out}", "--gates", "1,x"], "--gates takes comma-separated numbers"),
        (["denoise", "{bad}", "-o", "{out}"], "cannot read as an image"),
        (["info", "{bad_ckpt}"], "not a readable safetensors file"),
    ],
)
def test_bad_input_one_line_message_no_traceback(argv, message, tmp_path, capsys, tiny_model):
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.zeros((16, 16), np.float32))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    bad_ckpt = tmp_path / "bad.safetensors"
    bad_ckpt.write_bytes(b"\x00" * 10)
    subs = {
        "{img}": str(img),
        "{out}": str(tmp_path / "o.tif"),
        "{bad}": str(bad),
        "{bad_ckpt}": str(bad_ckpt),
    }
    argv = [subs.get(a, a) for a in argv]
    if "--model" not in argv and argv[0] == "denoise":
        argv += ["--model", str(tiny_model)]
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-addunet: error:")
    assert message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.tif").exists()


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "info", str(tmp_path / "nope.safetensors")])


def test_classify_csv(tiny_model, stack_tif, tmp_path, capsys):
    src, _ = stack_tif
    csv_path = tmp_path / "classes.csv"
    assert main(["classify", str(src), "--model", str(tiny_model), "--csv", str(csv_path)]) == 0
    lines = csv_path.read_text().strip().splitlines()
    assert lines[0] == "file,plane,class,p_a,p_b,p_c"
    assert len(lines) == 4
    probs = np.array([[float(v) for v in line.split(",")[3:]] for line in lines[1:]])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)


def test_classify_without_head_is_refused(tmp_path, capsys):
    path = na.save_model(na.create_model("addunet", width=4, kernels=(3,)), tmp_path / "nohead.safetensors")
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.zeros((16, 16), np.float32))
    assert main(["classify", str(img), "--model", str(path)]) == 2
    assert "no classification head" in capsys.readouterr().err


def test_info_lists_architectures_devices_and_a_checkpoint(tiny_model, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in na.list_models():
        assert name in out
    assert "cpu" in out and "torch" in out
    bundled = [line for line in out.splitlines() if line.startswith("  addunet-")]
    assert {line.split()[0] for line in bundled} == set(na.bundled_models())
    for line in bundled:  # one readable line each, not a dump of the training record
        assert "{" not in line and len(line) < 400 and "steps" in line
    assert main(["info", str(tiny_model)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "addunet"
    assert info["metadata"]["class_names"] == ["a", "b", "c"]
    assert info["receptive_field"] == na.receptive_field(na.load_model(tiny_model))


def test_demo_writes_results_and_improves_psnr(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--image", "coins", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    for name in ("clean.tif", "noisy.tif", "denoised.tif", "residual.tif", "demo.png"):
        assert (out / name).exists()
    noisy_psnr = float(text.split("noisy:")[1].split("PSNR")[1].split("dB")[0])
    denoised_psnr = float(text.split("denoised:")[1].split("PSNR")[1].split("dB")[0])
    assert denoised_psnr > noisy_psnr + 3
    clean, noisy, den, res = (
        tifffile.imread(out / n) for n in ("clean.tif", "noisy.tif", "denoised.tif", "residual.tif")
    )
    np.testing.assert_allclose(res, noisy - den, atol=1e-5)
    # scored as evaluate and the Readout score (skimage's defaults gave another SSIM)
    from napari_addunet.engine.metrics import ssim

    denoised_ssim = float(text.split("denoised:")[1].split("SSIM")[1].split()[0])
    assert denoised_ssim == pytest.approx(ssim(clean, np.clip(den, 0, 1), 1.0), abs=1e-4)
    assert main(["demo", "--output", str(out)]) == 2


def test_denoise_refuses_png_for_float_input_and_keeps_integer_png(tiny_model, tmp_path, capsys):
    import imageio.v3 as iio

    floats = tmp_path / "noisy.tif"
    tifffile.imwrite(floats, np.random.default_rng(0).random((32, 32)).astype(np.float32))
    for name, extra in (("o8.png", []), ("o.jpg", [])):
        assert (
            main(["-q", "denoise", str(floats), "-o", str(tmp_path / name), "-m", str(tiny_model), *extra])
            == 2
        )
        assert "PNG and JPEG store integers, but the input is float32" in capsys.readouterr().err
        assert not (tmp_path / name).exists()
    ints = tmp_path / "cam.png"
    iio.imwrite(ints, skdata.camera()[:48, :48])
    out = tmp_path / "den.png"
    assert main(["-q", "denoise", str(ints), "-o", str(out), "-m", str(tiny_model)]) == 0
    result = iio.imread(out)
    assert result.dtype == np.uint8 and result.shape == (48, 48)
    source = skdata.camera()[:48, :48].astype(float)
    assert abs(result.mean() - source.mean()) < 30  # the image's range, not values crushed to 0 and 1


def test_denoise_refuses_inputs_that_would_write_one_file_before_writing_any(tiny_model, tmp_path, capsys):
    import imageio.v3 as iio

    tif, png = tmp_path / "noisy.tif", tmp_path / "noisy.png"
    tifffile.imwrite(tif, np.zeros((16, 16), np.float32))
    iio.imwrite(png, np.zeros((16, 16), np.uint8))
    out = tmp_path / "out"
    for extra in ([], ["--overwrite"]):
        assert main(["-q", "denoise", str(tif), str(png), "-o", str(out), "-m", str(tiny_model), *extra]) == 2
        err = capsys.readouterr().err
        assert "would both be written to" in err and "noisy.tif" in err
        assert not out.exists() or not any(out.iterdir())
    # with --output-format input the PNG keeps its own format, so the names differ
    argv = [
        "-q",
        "denoise",
        str(tif),
        str(png),
        "-o",
        str(out),
        "-m",
        str(tiny_model),
        "--output-format",
        "input",
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["noisy.png", "noisy.tif"]
    # an explicit file name that contradicts --output-format input is refused, not renamed
    named = tmp_path / "named.tif"
    argv = ["-q", "denoise", str(png), "-o", str(named), "-m", str(tiny_model), "--output-format", "input"]
    assert main(argv) == 2
    assert "give a .png name or drop --output-format" in capsys.readouterr().err
    assert not named.exists() and not named.with_suffix(".png").exists()


def test_quiet_keeps_the_results_of_classify_and_evaluate(tiny_model, stack_tif, tmp_path, capsys):
    import imageio.v3 as iio

    src, _ = stack_tif
    assert main(["-q", "classify", str(src), "-m", str(tiny_model), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("stack.tif[") == 3
    grey = tmp_path / "grey"
    grey.mkdir()
    iio.imwrite(grey / "cam.png", skdata.camera()[:32, :32])
    assert main(["-q", "evaluate", "-m", str(tiny_model), "--images", str(grey), "--sigma", "25"]) == 0
    captured = capsys.readouterr()
    assert "cam.png" in captured.out and "25" in captured.out
    assert captured.err == ""  # no progress bar


def test_output_files_in_missing_folders_are_refused_before_any_work(tiny_model, stack_tif, tmp_path, capsys):
    src, _ = stack_tif
    missing = tmp_path / "nodir"
    assert main(["classify", str(src), "-m", str(tiny_model), "--csv", str(missing / "c.csv")]) == 2
    assert f"folder {missing} does not exist" in capsys.readouterr().err
    assert (
        main(["evaluate", "-m", str(tiny_model), "--images", str(src), "--json", str(missing / "r.json")])
        == 2
    )
    captured = capsys.readouterr()
    assert f"--json {missing / 'r.json'}: folder {missing} does not exist" in captured.err
    assert captured.out == ""  # refused before evaluating
    assert main(["classify", str(src), "-m", str(tiny_model), "--csv", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err
    existing = tmp_path / "keep.csv"
    existing.write_text("mine\n")
    assert main(["classify", str(src), "-m", str(tiny_model), "--csv", str(existing)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert existing.read_text() == "mine\n" and not missing.exists()


def test_classify_without_head_names_the_bundled_classifier(tmp_path, capsys):
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.zeros((28, 28), np.float32))
    assert main(["classify", str(img), "-m", "addunet-gray-blind"]) == 2  # the denoiser has no head
    err = capsys.readouterr().err
    assert "no classification head" in err and "addunet-fashion-mnist" in err


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("data_dir", "has no sample image 'data_dir'"),
        ("download_all", "has no sample image 'download_all'"),
        ("nonsense", "has no sample image 'nonsense'"),
        ("lfw_subset", "'lfw_subset' is not a 2-D grey or colour image"),
    ],
)
def test_demo_refuses_what_is_not_a_sample_image_and_leaves_no_folder(tmp_path, capsys, image, message):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--image", image, "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_demo_has_no_axes_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--output", str(tmp_path / "d"), "--axes", "ZYX"])
    assert "unrecognized arguments: --axes" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_command_quietly(tiny_model):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from napari_addunet.cli import main; raise SystemExit(main())",
            "info",
            str(tiny_model),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the command writes, as with `| head -0`
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err


def test_denoise_makes_the_output_folder_for_one_file_and_for_a_folder_of_one(tiny_model, tmp_path):
    src = tmp_path / "in" / "a.tif"
    src.parent.mkdir()
    tifffile.imwrite(src, np.random.default_rng(0).random((24, 24)).astype(np.float32))
    assert main(["-q", "denoise", str(src), "-o", str(tmp_path / "new1"), "-m", str(tiny_model)]) == 0
    assert (tmp_path / "new1" / "a.tif").is_file()
    assert main(["-q", "denoise", str(src.parent), "-o", str(tmp_path / "new2"), "-m", str(tiny_model)]) == 0
    assert (tmp_path / "new2" / "a.tif").is_file()


def _png(path, array, mode=None):
    from PIL import Image

    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)
    return path


@pytest.mark.parametrize(
    ("dtype", "name", "message"),
    [
        (np.float32, "o.npy", "can write TIFF (.tif, .tiff), PNG, JPEG (.jpg, .jpeg) or BMP, not .npy"),
        (np.uint16, "o.jpg", "JPEG stores 8-bit integers, but the input is uint16; write a .png or a .tif"),
        (np.uint16, "o.bmp", "BMP stores 8-bit integers, but the input is uint16"),
        (np.int16, "o.png", "PNG stores 8- or 16-bit unsigned integers, but the input is int16"),
        ("LA", "o.jpg", "JPEG keeps no alpha channel here, but the input has one; write a .png"),
        ("LA", "o.bmp", "BMP keeps no alpha channel here, but the input has one; write a .png"),
    ],
)
def test_outputs_the_format_cannot_hold_are_refused_before_any_work(
    dtype, name, message, tiny_model, tmp_path, capsys, monkeypatch
):
    if dtype == "LA":
        src = _png(tmp_path / "grey_alpha.png", np.zeros((16, 16, 2), np.uint8))
    else:
        src = tmp_path / "in.tif"
        tifffile.imwrite(src, np.zeros((16, 16), dtype))
    import napari_addunet.engine.inference as inference

    def no_work(*a, **k):
        raise AssertionError("denoised before the output was checked")

    monkeypatch.setattr(inference, "denoise", no_work)
    assert main(["-q", "denoise", str(src), "-o", str(tmp_path / name), "-m", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert message in err and "nothing was written" in err
    assert not (tmp_path / name).exists()


def test_a_file_that_fails_in_a_folder_is_named_and_the_rest_can_follow(tiny_model, tmp_path, capsys):
    folder, out = tmp_path / "mix", tmp_path / "out"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        image = rng.random((24, 24)).astype(np.float32)
        if name == "b":
            image[3, 4] = np.nan
        tifffile.imwrite(folder / f"{name}.tif", image)
    assert main(["-q", "denoise", str(folder), "-o", str(out), "-m", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'b.tif'}: the input holds 1 of 576 NaN/Inf value(s)" in err
    assert "--nan-policy fill" in err and "nan_policy=" not in err
    assert "1 of 3 written; --skip-existing --keep-going finishes the others" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.tif"]
    first = (out / "a.tif").read_bytes()
    argv = ["denoise", str(folder), "-o", str(out), "-m", str(tiny_model)]
    # a file that keeps failing no longer stops the others (it used to, at every rerun)
    assert main(["-q", *argv, "--skip-existing", "--keep-going"]) == 1
    err = capsys.readouterr().err
    assert "b.tif: the input holds 1 of 576 NaN/Inf" in err and "(going on)" in err
    assert "1 of 2 file(s) failed (b.tif); 1 written" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "c.tif"]
    (out / "c.tif").unlink()
    assert main(["-q", *argv, "--overwrite", "--skip-existing"]) == 2
    assert "contradict" in capsys.readouterr().err
    assert main([*argv, "--skip-existing", "--nan-policy", "mask"]) == 0
    said = capsys.readouterr().out
    assert "a.tif exists; skipped" in said and "b.tif ->" in said and "c.tif ->" in said
    assert (out / "a.tif").read_bytes() == first  # kept as it was
    b = tifffile.imread(out / "b.tif")
    assert np.isnan(b[3, 4]) and np.isfinite(np.delete(b.ravel(), 3 * 24 + 4)).all()


def test_classify_an_empty_folder_is_refused_and_writes_no_table(tiny_model, tmp_path, capsys):
    empty, table = tmp_path / "empty", tmp_path / "t.csv"
    empty.mkdir()
    assert main(["classify", str(empty), "-m", str(tiny_model), "--csv", str(table)]) == 2
    assert f"no readable images in {empty}" in capsys.readouterr().err
    assert not table.exists()


def test_a_tiff_with_two_unnamed_axes_asks_for_axes_in_the_command_lines_words(tiny_model, tmp_path, capsys):
    src = tmp_path / "q.tif"
    tifffile.imwrite(src, np.random.default_rng(0).random((2, 5, 24, 24)).astype(np.float32))
    assert main(["-q", "denoise", str(src), "-o", str(tmp_path / "o.tif"), "-m", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the axes of an array of shape (2, 5, 24, 24)" in err and "Pass --axes" in err
    argv = ["-q", "denoise", str(src), "-o", str(tmp_path / "o.tif"), "-m", str(tiny_model), "--axes", "TZYX"]
    assert main(argv) == 0
    assert tifffile.imread(tmp_path / "o.tif").shape == (2, 5, 24, 24)


def test_an_imagej_rgb_tiff_is_written_as_an_imagej_channel_stack(tiny_model, tmp_path):
    rgb = (np.random.default_rng(0).random((24, 28, 3)) * 255).astype(np.uint8)
    src = tmp_path / "rgb.tif"
    tifffile.imwrite(src, rgb, imagej=True, metadata={"unit": "um"})
    assert main(["-q", "denoise", str(src), "-o", str(tmp_path / "o.tif"), "-m", str(tiny_model)]) == 0
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.series[0].axes == "CYX" and tif.series[0].shape == (3, 24, 28)
        assert tif.imagej_metadata["unit"] == "um"


def test_png_alpha_is_kept_and_palettes_are_read_as_their_colours(tiny_model, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = (rng.random((24, 28)) * 255).astype(np.uint8)
    alpha = np.where(np.arange(28)[None, :] < 14, 255, 40).astype(np.uint8).repeat(24, axis=0)
    la = _png(tmp_path / "la.png", np.stack([grey, alpha], axis=-1))
    out = tmp_path / "la_out.png"
    assert (
        main(["-q", "denoise", str(la), "-o", str(out), "-m", str(tiny_model), "--output-format", "input"])
        == 0
    )
    with Image.open(out) as im:
        assert im.mode == "LA"
        result = np.array(im)
    assert np.array_equal(result[..., 1], alpha)  # alpha as it was
    plain = tmp_path / "grey.png"
    _png(plain, grey)
    assert main(["-q", "denoise", str(plain), "-o", str(tmp_path / "g.png"), "-m", str(tiny_model)]) == 0
    assert np.array_equal(result[..., 0], np.array(Image.open(tmp_path / "g.png")))  # grey denoised alone

    colour = (rng.random((24, 28, 3)) * 255).astype(np.uint8)
    pal = _png(tmp_path / "pal.png", colour, mode="P")
    shown = np.array(Image.open(pal).convert("RGB"))
    out = tmp_path / "pal_out.png"
    assert (
        main(["-q", "denoise", str(pal), "-o", str(out), "-m", str(tiny_model), "--output-format", "input"])
        == 0
    )
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size == (28, 24)
    rgb = tmp_path / "shown.png"
    _png(rgb, shown)
    assert main(["-q", "denoise", str(rgb), "-o", str(tmp_path / "s.png"), "-m", str(tiny_model)]) == 0
    assert np.array_equal(np.array(Image.open(out)), np.array(Image.open(tmp_path / "s.png")))


def test_a_plain_tiff_of_two_to_four_pages_asks_whether_they_are_channels(tiny_model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    two = tmp_path / "two.tif"
    tifffile.imwrite(
        two, np.stack([rng.random((24, 24)) * 10, rng.random((24, 24)) * 4000]).astype("f4"), metadata=None
    )
    assert main(["-q", "denoise", str(two), "-o", str(tmp_path / "o.tif"), "-m", str(tiny_model)]) == 2
    assert "cannot tell the axes of an array of shape (2, 24, 24)" in capsys.readouterr().err
    argv = ["-q", "denoise", str(two), "-o", str(tmp_path / "o.tif"), "-m", str(tiny_model), "--axes", "CYX"]
    assert main(argv) == 0
    six = tmp_path / "six.tif"
    tifffile.imwrite(six, rng.random((6, 24, 24)).astype("f4"), metadata=None)  # more pages: a Z stack
    assert main(["-q", "denoise", str(six), "-o", str(tmp_path / "s.tif"), "-m", str(tiny_model)]) == 0
    assert tifffile.imread(tmp_path / "s.tif").shape == (6, 24, 24)


def test_a_big_endian_16_bit_tiff_is_written_as_a_16_bit_png(tiny_model, tmp_path):
    from PIL import Image

    values = (np.random.default_rng(0).random((24, 24)) * 4000).astype(np.uint16)
    src = tmp_path / "be.tif"
    tifffile.imwrite(src, values, byteorder=">", imagej=True)
    out = tmp_path / "be.png"
    assert main(["-q", "denoise", str(src), "-o", str(out), "-m", str(tiny_model)]) == 0
    with Image.open(out) as im:
        assert im.mode == "I;16" and np.array(im).max() > 1000


def test_a_zarr_group_for_a_png_output_gets_the_readers_message(tiny_model, tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    group = tmp_path / "g.zarr"
    zarr.open_group(str(group), mode="w")
    assert main(["-q", "denoise", str(group), "-o", str(tmp_path / "o.png"), "-m", str(tiny_model)]) == 2
    assert "a zarr group, not an array; point at the array inside it" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["imagej-without-unit", "plain-with-axes-option", "plain-with-channel-axes"])
def test_tiff_results_keep_their_stack_axes_and_never_become_rgb(tiny_model, tmp_path, how):
    from napari_addunet.engine.image_io import read_image

    arr = (np.random.default_rng(1).random((3, 32, 40)) * 4000).astype(np.uint16)
    src, out = tmp_path / "z3.tif", tmp_path / "out.tif"
    extra = []
    if how == "imagej-without-unit":
        tifffile.imwrite(src, arr, imagej=True, metadata={"axes": "ZYX"})
    else:  # a plain 3-page file: its axes come from --axes
        tifffile.imwrite(src, arr, photometric="minisblack")
        extra = ["--axes", "ZYX"]
    if how == "plain-with-channel-axes":
        extra = ["--axes", "CYX"]
    assert (
        main(
            ["-q", "denoise", str(src), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", *extra]
        )
        == 0
    )
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].photometric != tifffile.PHOTOMETRIC.RGB  # 3 slices were written as RGB
        assert tif.series[0].axes == ("CYX" if how == "plain-with-channel-axes" else "ZYX")
    back = read_image(out)
    assert back.axes == ("CYX" if how == "plain-with-channel-axes" else "ZYX") and not back.rgb


def test_a_tiff_of_pages_appended_one_by_one_is_read_whole(tiny_model, tmp_path):
    src, out = tmp_path / "app.tif", tmp_path / "out.tif"
    rng = np.random.default_rng(2)
    pages = [(rng.random((32, 32)) * 255).astype(np.uint8) for _ in range(6)]
    for page in pages:
        tifffile.imwrite(src, page, append=True)  # one series per page
    assert (
        main(["-q", "denoise", str(src), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"]) == 0
    )
    assert tifffile.imread(out).shape == (6, 32, 32)  # only the first page was denoised


def test_outputs_png_cannot_hold_are_refused_before_any_work(tiny_model, tmp_path, capsys, monkeypatch):
    import napari_addunet.cli as cli_module

    monkeypatch.setattr(
        cli_module, "denoise", lambda *a, **k: pytest.fail("denoised before refusing"), raising=False
    )
    stack = tmp_path / "stack8.tif"
    tifffile.imwrite(stack, np.zeros((3, 16, 16), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    rgb16 = tmp_path / "rgb16.tif"
    tifffile.imwrite(rgb16, np.zeros((16, 16, 3), np.uint16), photometric="rgb")
    for src, message in (
        (stack, "hold one 2-D image"),
        (rgb16, "colour image can be written here as a .tif only"),
    ):
        code = main(["-q", "denoise", str(src), "-o", str(tmp_path / "x.png"), "--model", str(tiny_model)])
        err = capsys.readouterr().err
        assert (
            code == 2 and message in err and "nothing was written" in err
        )  # was a Pillow error after the work


def test_a_16_bit_colour_png_is_refused_not_read_as_8_bits(tmp_path):
    import struct
    import zlib

    from napari_addunet.engine.image_io import ImageIOError, read_image, source_format

    def png(path, depth, colour, channels):  # a minimal valid PNG, written by hand
        raw = b"".join(b"\x00" + bytes(2 * 2 * channels * depth // 8) for _ in range(2))

        def chunk(kind, body):
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        head = struct.pack(">IIBBBBB", 2, 2, depth, colour, 0, 0, 0)
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", head)
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b"")
        )
        return path

    for colour, channels, kind in ((2, 3, "colour"), (6, 4, "colour"), (4, 2, "grey+alpha")):
        path = png(tmp_path / f"c{colour}.png", 16, colour, channels)
        for reader in (read_image, source_format):
            with pytest.raises(ImageIOError, match=re.escape(f"16-bit {kind} PNG")):
                reader(path)
    assert read_image(png(tmp_path / "grey16.png", 16, 0, 1)).data.dtype == np.uint16  # grey is exact


def test_a_folder_of_one_image_goes_to_an_output_folder_named_with_a_dot(tiny_model, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    tifffile.imwrite(one / "g.tif", np.zeros((16, 16), np.uint8))
    out = tmp_path / "res.v2"
    assert (
        main(["-q", "denoise", str(one), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"]) == 0
    )
    assert (out / "g.tif").exists()  # was "folder res.v2 does not exist", after the work
    dotted = tmp_path / "run.2024.06"
    code = main(
        [
            "-q",
            "denoise",
            str(one / "g.tif"),
            "-o",
            f"{dotted}/",
            "--model",
            str(tiny_model),
            "--device",
            "cpu",
        ]
    )
    assert code == 0 and (dotted / "g.tif").exists()  # the trailing slash names a folder


def test_info_prints_strict_json_and_demo_checks_sigma_first(tmp_path, capsys):
    torch.manual_seed(0)
    path = na.save_model(
        na.create_model("addunet", width=4, kernels=(3, 3)),
        tmp_path / "m.safetensors",
        training={"val_psnr": float("inf")},
    )
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert json.loads(text)["metadata"]["training"]["val_psnr"] is None and "Infinity" not in text
    assert main(["-q", "demo", "-o", str(tmp_path / "demo"), "--sigma", "-5"]) == 2
    assert "--sigma must be a non-negative number" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # an empty folder was made before the error


def test_large_plain_images_are_not_refused_as_decompression_bombs(tmp_path, monkeypatch):
    from PIL import Image

    from napari_addunet.engine.image_io import read_image, source_format

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # as if the image were 2 gigapixels
    assert read_image(path).data.shape == (64, 64) and source_format(path).shape == (64, 64)
    assert Image.MAX_IMAGE_PIXELS == 100  # the guard is back for everyone else


@pytest.fixture
def read_only_folder(tmp_path):
    import os
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: make the folder immutable instead
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a read-only folder here (root without chattr)")
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(
    tiny_model, read_only_folder, tmp_path, capsys, monkeypatch
):
    import napari_addunet.cli as cli_module

    monkeypatch.setattr(cli_module, "denoise", lambda *a, **k: pytest.fail("denoised first"), raising=False)
    src = tmp_path / "g.tif"
    tifffile.imwrite(src, np.zeros((16, 16), np.uint8))
    for argv in (
        ["denoise", str(src), "-o", str(read_only_folder / "x.tif"), "--model", str(tiny_model)],
        ["denoise", str(src), "-o", str(read_only_folder / "sub" / ""), "--model", str(tiny_model)],
    ):
        assert main(["-q", *argv]) == 2
        err = capsys.readouterr().err
        assert (
            "cannot write in" in err and "nothing was written" in err
        )  # named a hidden temp file, after the work


def test_jpeg_results_are_written_near_lossless(tmp_path):
    from PIL import Image

    from napari_addunet.engine.image_io import write_image

    image = skdata.astronaut()[100:228, 100:228]
    write_image(tmp_path / "r.jpg", image)
    back = np.asarray(Image.open(tmp_path / "r.jpg")).astype(float)
    mse = np.mean((back - image) ** 2)
    assert 10 * np.log10(255**2 / mse) > 39  # Pillow's default (quality 75, chroma subsampled): 34.3 dB


def test_png_and_jpeg_results_keep_orientation_resolution_and_profile(tiny_model, tmp_path):
    from PIL import Image

    photo = skdata.astronaut()[:48, :64]
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    src = tmp_path / "rot.jpg"
    Image.fromarray(photo).save(src, exif=exif, dpi=(300, 300))
    grey = tmp_path / "dpi.png"
    Image.fromarray(photo[..., 0]).save(grey, dpi=(300, 300))
    run = ["--model", str(tiny_model), "--device", "cpu"]
    assert main(["-q", "denoise", str(src), "-o", str(tmp_path / "out.jpg"), *run]) == 0
    assert main(["-q", "denoise", str(grey), "-o", str(tmp_path / "out.png"), *run]) == 0
    assert main(["-q", "denoise", str(grey), "-o", str(tmp_path / "out.tif"), *run]) == 0
    with Image.open(tmp_path / "out.jpg") as im:  # every viewer showed the result turned
        assert im.getexif().get(0x0112) == 6 and round(im.info["dpi"][0]) == 300
    with Image.open(tmp_path / "out.png") as im:
        assert round(im.info["dpi"][0]) == 300
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        x = tif.pages[0].tags["XResolution"].value
        assert round(x[0] / x[1]) == 300 and tif.pages[0].tags["ResolutionUnit"].value == 2  # inch
    # a TIFF result of the turned photo says it is turned (it was shown on its side)
    assert main(["-q", "denoise", str(src), "-o", str(tmp_path / "rot.tif"), *run]) == 0
    with tifffile.TiffFile(tmp_path / "rot.tif") as tif:
        assert tif.pages[0].tags["Orientation"].value == 6


def test_transparency_keys_and_converted_colour_spaces_read_right(tiny_model, tmp_path):
    from PIL import Image, ImageCms

    from napari_addunet.engine.image_io import read_image, write_image

    grey = (np.arange(24 * 24) % 200 + 20).reshape(24, 24).astype(np.uint8)
    grey[:4] = 0
    Image.fromarray(grey).save(tmp_path / "key.png", transparency=0)  # a colour key: 0 is clear
    image = read_image(tmp_path / "key.png")
    assert image.alpha is not None and (image.alpha[:4] == 0).all() and (image.alpha[4:] == 255).all()
    write_image(tmp_path / "key-out.png", image.data, image)
    with Image.open(tmp_path / "key-out.png") as im:  # the clear pixels stay clear
        assert im.mode == "LA" and (np.asarray(im)[:4, :, 1] == 0).all()
    cmyk = Image.fromarray(skdata.astronaut()[:32, :32]).convert("CMYK")
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cmyk.save(tmp_path / "cmyk.jpg", icc_profile=profile)
    image = read_image(tmp_path / "cmyk.jpg")
    assert image.rgb and "icc_profile" not in image.plain_info  # the profile was of the CMYK data


def test_classify_without_a_model_uses_the_bundled_classifier(tmp_path, capsys):
    from PIL import Image

    item = tmp_path / "item.png"
    Image.fromarray((np.random.default_rng(4).random((28, 28)) * 255).astype(np.uint8)).save(item)
    assert main(["classify", str(item), "--device", "cpu"]) == 0  # the bundled denoiser has no head
    out = capsys.readouterr().out
    assert "item.png" in out


def test_results_too_big_for_an_imagej_file_are_bigtiffs_that_name_their_axes(tmp_path, monkeypatch):
    from napari_addunet.engine import image_io

    monkeypatch.setattr(image_io, "IMAGEJ_LIMIT", 1000)  # as if the stack were over 4 GB
    out = image_io.write_image(tmp_path / "big.tif", np.zeros((3, 16, 16), np.float32), axes="ZYX")
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff and tif.series[0].axes == "ZYX" and tif.pages[0].photometric != 2


def test_an_input_is_never_written_over_whatever_the_flags(tiny_model, tmp_path, capsys):
    import hashlib

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        _png(folder / name, (rng.random((24, 24)) * 255).astype(np.uint8))
    before = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    for extra in ([], ["--overwrite"], ["--skip-existing"]):
        argv = [
            "-q",
            "denoise",
            str(folder),
            "-o",
            str(folder),
            "--output-format",
            "input",
            "-m",
            str(tiny_model),
        ]
        assert main(argv + extra) == 2, extra
        assert "is the input" in capsys.readouterr().err
    one = folder / "a.png"
    assert main(["-q", "denoise", str(one), "-o", str(one), "--overwrite", "-m", str(tiny_model)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()} == before


def test_lower_case_axes_write_the_same_imagej_file_as_upper_case(tiny_model, tmp_path):
    rgb = (np.random.default_rng(1).random((40, 48, 3)) * 255).astype(np.uint8)
    src = _png(tmp_path / "rgb.png", rgb)
    for axes, out in (("YXC", "upper.tif"), ("yxc", "lower.tif")):
        argv = ["-q", "denoise", str(src), "-o", str(tmp_path / out), "--axes", axes, "-m", str(tiny_model)]
        assert main(argv) == 0
    with tifffile.TiffFile(tmp_path / "lower.tif") as tif:  # was 40 pages of 48 x 3, no axes
        assert tif.is_imagej and tif.series[0].axes == "CYX" and tif.series[0].shape == (3, 40, 48)
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "lower.tif"), tifffile.imread(tmp_path / "upper.tif")
    )


def test_an_explicit_output_name_is_kept_as_typed(tiny_model, tmp_path):
    src = _png(tmp_path / "a.png", (np.random.default_rng(2).random((24, 24)) * 255).astype(np.uint8))
    out = tmp_path / "OUT.PNG"
    assert (
        main(["-q", "denoise", str(src), "-o", str(out), "--output-format", "input", "-m", str(tiny_model)])
        == 0
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("OUT")] == ["OUT.PNG"]


def test_demo_refuses_a_negative_seed_or_an_absent_device_before_making_its_folder(tmp_path, capsys):
    assert main(["-q", "demo", "-o", str(tmp_path / "d"), "--seed", "-1"]) == 2
    assert "--seed must be a non-negative integer, got -1" in capsys.readouterr().err
    assert main(["-q", "demo", "-o", str(tmp_path / "d2"), "--device", "cuda:7"]) == 2
    capsys.readouterr()
    assert not (tmp_path / "d").exists() and not (tmp_path / "d2").exists()


def test_out_of_device_memory_with_the_smallest_tiles_is_one_line(tiny_model, tmp_path, capsys, monkeypatch):
    from napari_addunet.engine import inference
    from napari_addunet.engine.tiling import TileMemoryError

    def no_memory(*args, **kwargs):
        raise TileMemoryError("out of device memory even with 32 px tiles and a batch of 1")

    monkeypatch.setattr(inference, "denoise", no_memory)
    src = _png(tmp_path / "a.png", (np.random.default_rng(3).random((24, 24)) * 255).astype(np.uint8))
    assert main(["-q", "denoise", str(src), "-o", str(tmp_path / "o.tif"), "-m", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert "out of device memory even with 32 px tiles" in err and "Traceback" not in err
