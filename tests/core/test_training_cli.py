"""The ``train`` and ``evaluate`` commands: progress, files, resume, one-line errors."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage import io as skio

import napari_addunet as na
from napari_addunet import cli, cli_training
from napari_addunet.cli_training import parse_sigma, parse_sigmas

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def run(monkeypatch):
    """``cli.main`` with the training commands registered (whether or not cli.py wires them yet)."""
    original = cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = original()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "train" not in sub.choices:
            cli_training.register(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    return lambda *argv: cli.main([str(a) for a in argv])


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cam = skdata.camera()
    for i in range(4):
        skio.imsave(folder / f"im{i}.png", cam[i * 100 : i * 100 + 40, 50:98], check_contrast=False)
    return folder


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(
        'arch = "addunet"\n[model]\nwidth = 4\nkernels = [3, 3]\n[training]\nlr = 0.003\n'
        "warmup_steps = 2\nval_patches = 4\n"
    )
    return path


FAST = ["--epochs", 2, "--steps", 3, "--batch-size", 2, "--patch-size", 16, "--device", "cpu"]


def test_train_writes_a_model_prints_epochs_and_resumes(run, images, config, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert run("train", "--clean", images, "--config", config, "--sigma", "0:50", *FAST, "-o", out) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/2" in printed and "epoch 2/2" in printed and "val loss" in printed
    assert f"-> {out}" in printed
    model = na.load_model(out)
    meta = model.metadata["training"]
    assert model.config.width == 4 and meta["config"]["sigma_max"] == 50 and meta["config"]["lr"] == 0.003
    assert meta["command"].startswith("napari-addunet train --clean imgs --config tiny.toml")
    assert str(tmp_path) not in meta["command"]  # file names only

    assert run("train", "--clean", images, *FAST, "-o", out) == 2
    assert "m.safetensors exists; pass --overwrite" in capsys.readouterr().err

    assert run("train", "--clean", images, "--epochs", 3, "--resume", "-o", out) == 0
    printed = capsys.readouterr().out
    assert "resuming" in printed and "epoch 3/3" in printed and "epoch 2/3" not in printed
    assert na.load_model(out).metadata["training"]["steps"] == 9


def test_model_settings_from_the_command_line(run, images, config, tmp_path, capsys):
    out = tmp_path / "small.safetensors"
    argv = ["train", "--clean", images, "--config", config, "--set", "width=6", "--set", "kernels=5,3,3"]
    assert run(*argv, "--set", "encoder=plain", *FAST, "-o", out) == 0
    model = na.load_model(out)
    assert model.config.width == 6 and model.config.kernels == (5, 3, 3) and model.config.encoder == "plain"
    command = model.metadata["training"]["command"]
    assert "--set width=6 --set kernels=5,3,3 --set encoder=plain" in command  # runs again as it is
    capsys.readouterr()
    for bad, message in (
        ("width", "--set takes NAME=VALUE"),
        ("=4", "--set takes NAME=VALUE"),
        ("widht=4", "widht"),
        ("width=0", "width"),
    ):
        assert run("train", "--clean", images, "--set", bad, *FAST, "-o", tmp_path / "x.safetensors") == 2
        assert message in capsys.readouterr().err
    assert run("train", "--clean", images, "--resume", "--set", "width=8", "-o", out) == 2
    assert "model settings (--set, [model]) cannot change" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_noisy_only_pairs_and_class_folders(run, images, config, tmp_path, capsys):
    assert run("train", "--noisy", images, "--config", config, *FAST, "-o", tmp_path / "n2v.safetensors") == 0
    assert na.load_model(tmp_path / "n2v.safetensors").metadata["training"]["mode"] == "noise2void"
    assert (
        run(
            "train",
            "--noisy",
            images,
            "--pairs",
            images,
            "--config",
            config,
            *FAST,
            "-o",
            tmp_path / "n2n.safetensors",
        )
        == 0
    )
    root = tmp_path / "classes"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            skio.imsave(
                root / name / f"{i}.png",
                np.full((20, 20), 50 + 100 * (name == "b"), np.uint8),
                check_contrast=False,
            )
    out = tmp_path / "cls.safetensors"
    assert (
        run("train", "--clean", root, "--class-folders", "--lambda", 1, "--config", config, *FAST, "-o", out)
        == 0
    )
    model = na.load_model(out)
    assert model.num_classes == 2 and model.metadata["class_names"] == ["a", "b"]
    assert "acc" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--clean", "IMG", "--noisy", "IMG"], "either --clean or --noisy, not both"),
        ([], "give the training images with --clean"),
        (["--clean", "IMG", "--pairs", "IMG"], "use it with --noisy"),
        (["--noisy", "IMG", "--sigma", "25"], "--sigma set the synthetic noise added to --clean images"),
        (["--noisy", "IMG", "--pairs", "IMG", "--noise", "gaussian"], "--noise set the synthetic noise"),
        (["--clean", "IMG", "--sigma", "x"], "--sigma takes a level or a range"),
        (["--clean", "IMG", "--sigma", "40:10"], "--sigma needs 0 <= low <= high <= 255"),
        (
            ["--clean", "IMG", "--lambda", "1"],
            "lambda 1 adds a classification loss, which needs class labels: add --labels",
        ),
        (
            ["--clean", "IMG", "--labels", "LABELS", "--lambda", "1"],
            "labels do not match the images: no label for im3.png",
        ),
        (["--clean", "IMG", "--labels", "LABELS"], "lambda is 0, so the classification head would not learn"),
        (["--clean", "IMG", "--patch-size", "64"], "smaller than the 64x64 patch"),
        (["--clean", "IMG", "--epochs", "0"], "training.epochs must be >= 1"),
        (["--clean", "IMG", "--resume"], "does not exist yet; start without --resume"),
        (["--clean", "MISSING"], "MISSING: no such file or folder"),
        (["--clean", "IMG", "--config", "BADCFG"], "unknown section"),
        (["--clean", "IMG", "--arch", "adunet"], "unknown architecture 'adunet'"),
    ],
)
def test_train_errors_are_one_line(run, images, tmp_path, capsys, argv, message):
    (tmp_path / "labels.csv").write_text("im0.png,a\nim1.png,b\nim2.png,a\n")
    (tmp_path / "bad.json").write_text(json.dumps({"optimizer": {}}))
    subs = {
        "IMG": str(images),
        "LABELS": str(tmp_path / "labels.csv"),
        "BADCFG": str(tmp_path / "bad.json"),
        "MISSING": str(tmp_path / "MISSING"),
    }
    argv = [subs.get(a, a) for a in argv]
    if "--patch-size" not in argv:
        argv += ["--patch-size", "16"]
    out = tmp_path / "x.safetensors"
    assert run("train", *argv, "--device", "cpu", "--steps", 1, "-o", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-addunet: error: ")
    assert re.search(message, err[0]), err[0]
    assert not out.exists()


def test_sigma_parsing():
    assert parse_sigma("25") == (25, 25) and parse_sigma("0:55") == (0, 55) and parse_sigma("5-50") == (5, 50)
    assert parse_sigmas("15,25,50") == [15, 25, 50]
    assert parse_sigma("1e-3") == (0.001, 0.001) and parse_sigma("2.5e1") == (25, 25)  # not ranges
    assert parse_sigma("1e-3:5") == (0.001, 5)
    with pytest.raises(Exception, match="comma-separated"):
        parse_sigmas("15;25")


def test_evaluate_prints_a_table_and_writes_json(run, images, tmp_path, capsys):
    torch.manual_seed(0)
    model = na.create_model("addunet", width=4, kernels=(3,))
    path = na.save_model(model, tmp_path / "e.safetensors")
    report = tmp_path / "r.json"
    assert run("evaluate", "--model", path, "--images", images, "--sigma", "15,25", "--json", report) == 0
    printed = capsys.readouterr().out
    assert "im0.png" in printed and "mean" in printed
    data = json.loads(report.read_text())
    assert set(data["results"]) == {"15", "25"} and len(data["results"]["25"]["images"]) == 4
    assert run("evaluate", "--model", path, "--images", images, "--json", report) == 2
    assert "r.json exists" in capsys.readouterr().err
    assert run("evaluate", "--model", path, "--images", images, "--sigma", "15", "--json", "-") == 0
    assert json.loads(capsys.readouterr().out)["sigmas"] == [15.0]


def test_ctrl_c_stops_after_the_step_and_keeps_the_files(run, images, config, tmp_path, capsys, monkeypatch):
    import signal

    from napari_addunet.engine.training import _Run

    original = _Run._train_step
    before = signal.getsignal(signal.SIGINT)

    def interrupted(self):
        if self.step == 2:
            signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C during step 3
        return original(self)

    monkeypatch.setattr(_Run, "_train_step", interrupted)
    out = tmp_path / "m.safetensors"
    assert run("train", "--clean", images, "--config", config, *FAST, "-o", out) == 130
    captured = capsys.readouterr()
    assert "stopping after this step" in captured.err and "continue with: --resume" in captured.out
    assert na.load_model(out).metadata["training"]["steps"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_resume_from_the_state_alone_and_setup_failures_are_one_line(
    run, images, config, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "m.safetensors"
    assert run("train", "--clean", images, "--config", config, *FAST, "-o", out) == 0
    out.rename(tmp_path / "final.safetensors")  # the user moved the model away; the state stays
    capsys.readouterr()
    # the state is enough to continue (it used to say 'does not exist yet' here, and
    # 'the state exists, resume from it' without --resume)
    assert run("train", "--clean", images, "--epochs", 3, "--resume", "-o", out) == 0
    assert na.load_model(out).metadata["training"]["steps"] == 9
    (tmp_path / "m.state.pt").unlink()
    capsys.readouterr()
    assert run("train", "--clean", images, "--resume", "-o", out) == 2
    assert "has no training state beside it (m.state.pt)" in capsys.readouterr().err
    # a setting this machine cannot honour, refused while the run is prepared: one line
    from napari_addunet.engine import training

    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    bf16 = tmp_path / "bf16.json"
    bf16.write_text(
        json.dumps(
            {"arch": "addunet", "model": {"width": 4, "kernels": [3, 3]}, "training": {"cpu_bf16": True}}
        )
    )
    assert run("train", "--clean", images, "--config", bf16, *FAST, "-o", tmp_path / "b.safetensors") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cpu_bf16 needs a CPU with native bfloat16" in err[0]


def test_a_config_file_with_a_byte_order_mark_is_read(config, tmp_path):
    from napari_addunet.cli_training import read_config_file

    marked = tmp_path / "marked.toml"
    marked.write_bytes(b"\xef\xbb\xbf" + config.read_bytes())  # as some editors save it
    assert read_config_file(str(marked)) == read_config_file(str(config))
    as_json = tmp_path / "marked.json"
    as_json.write_bytes(b"\xef\xbb\xbf" + b'{"arch": "addunet", "training": {"lr": 0.003}}')
    assert read_config_file(str(as_json))["arch"] == "addunet"
