"""Fashion-MNIST: the IDX reader, classification-only training, and the bundled model."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

import napari_addunet as na
from napari_addunet.engine.datasets import DataError, clean_data
from napari_addunet.engine.fashion_mnist import (
    CLASS_NAMES,
    DEBIAN_PACKAGE,
    FILES,
    FashionMNISTError,
    default_folder,
    load_fashion_mnist,
    read_idx,
)
from napari_addunet.engine.training import train
from napari_addunet.engine.training_events import StepDone

pytestmark = pytest.mark.usefixtures("one_thread")

HAVE_FILES = all((default_folder() / name).is_file() for pair in FILES.values() for name in pair)
needs_files = pytest.mark.skipif(
    not HAVE_FILES, reason=f"Fashion-MNIST not installed (Debian package {DEBIAN_PACKAGE})"
)


# -- the reader ------------------------------------------------------------------------------------
def write_idx(path, array: np.ndarray, *, magic: int | None = None, cut: int = 0) -> None:
    """An IDX file of unsigned bytes, gzipped; ``cut`` bytes dropped from the end."""
    head = struct.pack(">I", magic if magic is not None else (0x08 << 8) | array.ndim)
    head += b"".join(struct.pack(">I", n) for n in array.shape)
    raw = head + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(raw[: len(raw) - cut])


def fake_split(folder, n: int = 5, **image_kw) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    write_idx(folder / FILES["test"][0], images, **image_kw)
    write_idx(folder / FILES["test"][1], labels)
    return images, labels


def test_reads_a_folder_of_idx_files_and_limits(tmp_path):
    images, labels = fake_split(tmp_path)
    x, y = load_fashion_mnist("test", tmp_path)
    assert x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    x3, y3 = load_fashion_mnist("test", tmp_path, limit=3)
    assert x3.shape == (3, 28, 28) and y3.tolist() == labels[:3].tolist()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(cut=100), r"announces shape \(5, 28, 28\) \(3,920 values\) but the file holds 3,820"),
        (dict(magic=0x00000801), "magic number 0x00000801, expected 0x00000803"),
        (dict(magic=0x12340803), "magic number 0x12340803"),
    ],
)
def test_invalid_or_truncated_files_give_clear_errors(tmp_path, kw, match):
    fake_split(tmp_path, **kw)
    with pytest.raises(FashionMNISTError, match=match):
        load_fashion_mnist("test", tmp_path)


def test_broken_gzip_and_missing_files_say_what_to_do(tmp_path):
    fake_split(tmp_path)
    path = tmp_path / FILES["test"][0]
    path.write_bytes(path.read_bytes()[:200])  # a cut-off download
    with pytest.raises(FashionMNISTError, match=f"truncated or corrupted.*{DEBIAN_PACKAGE}"):
        read_idx(path, 3)
    with pytest.raises(FashionMNISTError, match=f"missing train-images-idx3-ubyte.gz.*{DEBIAN_PACKAGE}"):
        load_fashion_mnist("train", tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_fashion_mnist("val", tmp_path)  # type: ignore[arg-type]


def test_images_and_labels_must_match(tmp_path):
    fake_split(tmp_path)
    write_idx(tmp_path / FILES["test"][1], np.zeros(4, np.uint8))
    with pytest.raises(FashionMNISTError, match="holds 5 images but .* 4 labels"):
        load_fashion_mnist("test", tmp_path)
    write_idx(tmp_path / FILES["test"][1], np.full(5, 10, np.uint8))
    with pytest.raises(FashionMNISTError, match=r"label 10 is out of range \(0..9\)"):
        load_fashion_mnist("test", tmp_path)


@needs_files
def test_the_installed_files():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10_000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10  # balanced test set
    assert y[:5].tolist() == [9, 2, 1, 1, 6]  # first labels of the published t10k file
    assert len(CLASS_NAMES) == 10 and CLASS_NAMES[9] == "Ankle boot"
    x, y = load_fashion_mnist("train", limit=7)
    assert x.shape == (7, 28, 28) and y.tolist() == [9, 0, 0, 3, 0, 2, 7]


# -- classification only (denoise_weight 0) --------------------------------------------------------------
def stripes(n: int = 24) -> tuple[list[np.ndarray], list[int]]:
    """Horizontal or vertical stripes: two classes that a small model learns in a few steps."""
    rng = np.random.default_rng(3)
    images, labels = [], []
    for i in range(n):
        wave = 0.5 + 0.4 * np.sin(np.arange(16) * rng.uniform(0.6, 1.2) + rng.uniform(0, 6))
        img = np.tile(wave, (16, 1)) if i % 2 else np.tile(wave[:, None], (1, 16))
        images.append(img.astype(np.float32))
        labels.append(i % 2)
    return images, labels


SETTINGS = dict(
    epochs=2,
    steps_per_epoch=6,
    batch_size=8,
    patch_size=16,
    lr=3e-3,
    warmup_steps=0,
    val_fraction=0.25,
    val_patches=8,
    augment=False,
    sigma_min=20,
    sigma_max=20,
    device="cpu",
)


def head_model() -> na.models.DenoiserModel:
    torch.manual_seed(0)
    return na.create_model("addunet", width=8, kernels=(3, 3), num_classes=2)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model, prefixes: tuple[str, ...]) -> dict[str, bool]:
    after = model.state_dict()
    return {k: not torch.equal(before[k], after[k]) for k in before if k.startswith(prefixes)}


def test_classification_only_leaves_the_denoising_path_untouched():
    images, labels = stripes()
    data = clean_data(images, labels=labels, class_names=["h", "v"], normalization="none")
    denoiser_only = ("decoders.", "out.", "beta")  # reached by the denoising loss alone
    shared = ("stem.", "encoders.", "head.")

    model = head_model()
    before = snapshot(model)
    steps: list[StepDone] = []
    train(data, model, dict(SETTINGS, denoise_weight=0.0, lambda_cls=1.0), callback=steps.append)
    untouched = changed(before, model, denoiser_only)
    assert untouched and not any(untouched.values())  # not even weight decay
    assert all(changed(before, model, shared).values())
    assert model.gates == pytest.approx((1.0, 1.0))
    parts = [e.loss for e in steps if isinstance(e, StepDone)]
    assert all(p.total == pytest.approx(p.classify) for p in parts)  # L = lambda L_cls
    assert all(p.denoise > 0 for p in parts)  # still measured and reported

    # the same run with the denoising loss on moves those weights
    model = head_model()
    before = snapshot(model)
    train(data, model, dict(SETTINGS, denoise_weight=1.0, lambda_cls=1.0))
    assert all(changed(before, model, denoiser_only).values())


def test_denoise_weight_scales_the_denoising_loss():
    images, labels = stripes()
    data = clean_data(images, labels=labels, class_names=["h", "v"], normalization="none")
    steps: list[StepDone] = []
    train(data, head_model(), dict(SETTINGS, denoise_weight=3.0, lambda_cls=0.5), callback=steps.append)
    parts = [e.loss for e in steps if isinstance(e, StepDone)]
    assert parts and all(p.total == pytest.approx(3.0 * p.denoise + 0.5 * p.classify) for p in parts)


def test_classification_only_needs_lambda_labels_and_a_head():
    images, labels = stripes(4)
    with pytest.raises(na.ConfigError, match="denoise_weight and training.lambda_cls are both 0"):
        na.TrainingConfig(denoise_weight=0.0)
    with pytest.raises(na.ConfigError, match="training.denoise_weight must be >= 0"):
        na.TrainingConfig(denoise_weight=-1.0)
    plain = clean_data(images, normalization="none")
    with pytest.raises(DataError, match="denoise_weight 0 trains the classifier alone, which needs labels"):
        train(plain, head_model(), dict(SETTINGS, denoise_weight=0.0, lambda_cls=1.0))
    labelled = clean_data(images, labels=labels, normalization="none")
    torch.manual_seed(0)
    headless = na.create_model("addunet", width=8, kernels=(3, 3))
    with pytest.raises(DataError, match="no classification head"):
        train(labelled, headless, dict(SETTINGS, denoise_weight=0.0, lambda_cls=1.0))


# -- the bundled model -----------------------------------------------------------------------------------
BUNDLED = "addunet-fashion-mnist"


def test_the_bundled_fashion_model_loads_by_name_and_knows_its_classes():
    assert BUNDLED in na.bundled_models()
    model = na.load_model(BUNDLED)
    assert model.architecture == "addunet" and model.num_classes == 10
    assert model.class_names == list(CLASS_NAMES)
    meta = model.metadata
    assert meta["dataset"]["name"] == "Fashion-MNIST" and meta["dataset"]["license"] == "MIT"
    assert DEBIAN_PACKAGE in meta["dataset"]["source"]
    training = meta["training"]
    assert training["command"].startswith("python scripts/train_fashion_model.py")
    assert training["noise"]["sigma_255"] == [0.0, 55.0] and training["steps"] > 0
    assert set(meta["test"]["by_sigma"]) == {"0", "15", "25", "50"}


@needs_files
def test_the_bundled_fashion_model_classifies_and_denoises_as_recorded():
    """Recompute the check stored in the file: 200 test images at sigma 25, seeded noise."""
    from napari_addunet.engine.fashion_mnist import evaluate_noisy

    model = na.load_model(BUNDLED)
    recorded = model.metadata["fashion_self_check"]
    images, labels = load_fashion_mnist("test", limit=recorded["images"])
    now = evaluate_noisy(model, images, labels, recorded["sigma"], seed=recorded["seed"])
    assert now.accuracy > 0.5  # chance: 0.1
    assert now.psnr > now.input_psnr + 2.0  # it denoises
    # the same weights as the ones checked when the file was written
    assert now.accuracy == pytest.approx(recorded["accuracy"], abs=0.006)  # at most one image differs
    assert now.psnr == pytest.approx(recorded["psnr"], abs=0.02)
    assert now.input_psnr == pytest.approx(recorded["input_psnr"], abs=1e-3)
