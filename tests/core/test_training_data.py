"""Training data: sources, normalisation, labels, splits, patches, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage import data as skdata
from skimage import io as skio

from napari_addunet.engine.datasets import (
    DataError,
    PatchSampler,
    class_folder_data,
    clean_data,
    fixed_patches,
    noisy_data,
    paired_data,
    read_label_csv,
    split_data,
)


@pytest.fixture
def folder(tmp_path):
    cam = skdata.camera()
    for i in range(3):
        skio.imsave(tmp_path / f"img{i}.png", cam[i * 40 : i * 40 + 32, :40], check_contrast=False)
    return tmp_path


# -- sources -------------------------------------------------------------------------------------
def test_arrays_of_different_sizes_stacks_and_files(tmp_path, folder):
    rng = np.random.default_rng(0)
    stack = rng.random((3, 20, 24)).astype(np.float32)
    tif = tmp_path / "sub" / "stack.tif"
    tif.parent.mkdir()
    tifffile.imwrite(tif, (stack * 1000).astype(np.uint16), photometric="minisblack")
    data = clean_data([rng.random((16, 16)), rng.random((30, 20)), stack, tif, folder])
    assert data.mode == "supervised"
    assert len(data) == 1 + 1 + 3 + 3 + 3
    assert data.groups.tolist() == [0, 1, 2, 2, 2, 3, 3, 3, 4, 5, 6]
    assert data.names[2] == "array 2[0]" and data.names[5] == "stack.tif[0]" and data.names[-1] == "img2.png"
    assert all(p.dtype == np.float32 and p.ndim == 2 for p in data.inputs)
    assert data.sources[:3] == ["array 0", "array 1", "array 2"]


def test_normalisation_is_recorded_in_inference_terms(folder):
    data8 = clean_data(folder)
    assert data8.normalization == {"method": "range", "low": 0.0, "high": 255.0}
    assert 0 <= min(p.min() for p in data8.inputs) and max(p.max() for p in data8.inputs) <= 1
    np.testing.assert_allclose(data8.inputs[0], skdata.camera()[:32, :40] / 255.0, atol=1e-6)

    rng = np.random.default_rng(1)
    raw = rng.normal(500, 50, (40, 40))
    auto = clean_data(raw)
    assert auto.normalization == {"method": "percentile", "low": 0.1, "high": 99.9}
    lo, hi = np.percentile(raw, [0.1, 99.9])
    np.testing.assert_allclose(auto.inputs[0], (raw - lo) / (hi - lo), rtol=1e-5, atol=1e-6)

    fixed = clean_data(raw, normalization={"method": "range", "low": 0, "high": 1000})
    np.testing.assert_allclose(fixed.inputs[0], raw / 1000, rtol=1e-5)
    none = clean_data(raw.astype(np.float32), normalization="none")
    np.testing.assert_allclose(none.inputs[0], raw.astype(np.float32))
    u16 = clean_data(np.full((8, 8), 65535, np.uint16), normalization="range")
    assert u16.normalization == {"method": "range", "low": 0.0, "high": 65535.0}


def test_pairs_share_the_inputs_normalisation():
    rng = np.random.default_rng(2)
    a = rng.normal(100, 10, (2, 24, 24))
    b = a + 5
    pairs = paired_data(a, b)
    assert pairs.mode == "pairs" and len(pairs.targets) == 2
    diff = pairs.targets[0] - pairs.inputs[0]
    assert np.allclose(diff, diff.mean(), atol=1e-4)  # the same affine map on both


# -- labels ----------------------------------------------------------------------------------------
def test_labels_per_image_per_plane_and_by_name():
    rng = np.random.default_rng(3)
    imgs = [rng.random((2, 10, 10)), rng.random((10, 10))]
    per_image = clean_data(imgs, labels=["cell", "empty"])
    assert per_image.labels.tolist() == [0, 0, 1] and per_image.class_names == ["cell", "empty"]
    per_plane = clean_data(imgs, labels=[1, 0, 1], class_names=["a", "b"])
    assert per_plane.labels.tolist() == [1, 0, 1]
    by_name = clean_data(imgs, labels={"array 0[0]": "x", "array 0[1]": "y", "array 1": "x"})
    assert by_name.labels.tolist() == [0, 1, 0] and by_name.class_names == ["x", "y"]
    ints = clean_data(imgs, labels=[2, 0])
    assert ints.class_names == ["class_0", "class_1", "class_2"]
    assert ints.describe()["classes"] == {"class_0": 1, "class_1": 0, "class_2": 2}


def test_label_csv_and_class_folders(tmp_path, folder):
    (folder / "labels.csv").write_text("file,label\nimg0.png,sky\nimg1,sky\nimg2.png,man\n")
    data = clean_data(folder, labels=folder / "labels.csv")
    assert data.labels.tolist() == [1, 1, 0] and data.class_names == ["man", "sky"]
    (tmp_path / "planes.csv").write_text("s.tif,0,a\ns.tif,1,b\n")
    assert read_label_csv(tmp_path / "planes.csv") == {"s.tif[0]": "a", "s.tif[1]": "b"}
    (tmp_path / "gaps.csv").write_text("file,plane,label\n\ns.tif,0,a\n\ns.tif,x,b\n")
    with pytest.raises(DataError, match="line 5"):  # the line in the file, blank lines counted
        read_label_csv(tmp_path / "gaps.csv")

    root = tmp_path / "classes"
    for name, rows in (("round", slice(0, 32)), ("square", slice(100, 132))):
        (root / name).mkdir(parents=True)
        for i in range(2):
            skio.imsave(
                root / name / f"{i}.png", skdata.coins()[rows, i * 40 : i * 40 + 32], check_contrast=False
            )
    cf = class_folder_data(root)
    assert cf.class_names == ["round", "square"] and cf.labels.tolist() == [0, 0, 1, 1]
    assert cf.mode == "supervised" and class_folder_data(root, mode="noise2void").mode == "noise2void"


# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda tmp: clean_data([]), "no images: the list is empty"),
        (lambda tmp: clean_data(None), "no images given"),
        (lambda tmp: clean_data(tmp / "missing"), "no such file or folder"),
        (lambda tmp: clean_data(tmp), "no images in folder"),
        (lambda tmp: clean_data(np.zeros((2, 2, 8, 8))), r"pass 2-D images \(H, W\) or 3-D stacks"),
        (lambda tmp: clean_data(np.zeros((32, 32, 3))), "looks like a colour"),
        (lambda tmp: clean_data(np.zeros((8, 8), bool)), "boolean arrays"),
        (lambda tmp: clean_data(np.array([[1.0, np.nan], [0.0, 1.0]])), r"holds 1 NaN/Inf value\(s\)"),
        (lambda tmp: clean_data([np.zeros((8, 8))] * 3, labels=[0, 1]), "2 labels for 3 image"),
        (lambda tmp: clean_data([np.zeros((8, 8))] * 2, labels={"array 0": 1}), "no label for array 1"),
        (
            lambda tmp: clean_data(np.zeros((8, 8)), labels={"array 0": 1, "other.tif": 0}),
            "no image named other",
        ),
        (lambda tmp: clean_data(np.zeros((8, 8)), labels=[3], class_names=["a", "b"]), "out of range"),
        (
            lambda tmp: clean_data(np.zeros((8, 8)), labels=["z"], class_names=["a"]),
            "not among the class names",
        ),
        (lambda tmp: clean_data(np.zeros((8, 8)), class_names=["a"]), "without labels"),
        (lambda tmp: paired_data([np.zeros((8, 8))] * 2, [np.zeros((8, 8))]), "pairs do not match"),
        (lambda tmp: paired_data(np.zeros((8, 8)), np.zeros((8, 9))), "pairs do not match"),
        (lambda tmp: class_folder_data(tmp), "no sub-folders"),
        (
            lambda tmp: clean_data([np.zeros((8, 8))] * 2, labels=[0, 1], class_names="ab"),
            "class_names must be a list of names, got the string 'ab'",
        ),
        (
            lambda tmp: paired_data(np.zeros((8, 8)), np.pad(np.array([[np.nan]]), ((0, 7), (0, 7)))),
            r"the target of array 0 holds 1 NaN/Inf value\(s\)",
        ),
    ],
)
def test_bad_data_give_clear_messages(tmp_path, call, match):
    with pytest.raises(DataError, match=match):
        call(tmp_path)


def test_file_names_with_brackets_find_their_labels():
    from napari_addunet.engine.datasets import _label_for

    # only a final [digits] is a plane index
    assert _label_for(["stk[1].tif[0]", "stk[1].tif[1]"], {"stk[1].tif": "a"}) == ["a", "a"]
    assert _label_for(["cell[1].tif"], {"cell[1]": "b"}) == ["b"]
    assert _label_for(["s.tif[0]", "s.tif[1]"], {"s[0]": "x", "s.tif[1]": "y"}) == ["x", "y"]


def test_images_smaller_than_a_patch():
    data = clean_data([np.zeros((40, 40)), np.zeros((20, 50))])
    data.check_patch_size(20)
    with pytest.raises(
        DataError, match=r"1 image\(s\) are smaller than the 32x32 patch: array 1 20x50.*<= 20"
    ):
        data.check_patch_size(32)
    tiny = clean_data([np.zeros((40, 40)), np.zeros((6, 50))])  # smaller than any patch
    with pytest.raises(DataError, match="patches are at least 8 px: use larger images"):
        tiny.check_patch_size(16)


def test_patch_size_floor_is_the_configs():
    from napari_addunet.engine.datasets import MIN_PATCH
    from napari_addunet.engine.training_config import TrainingConfig

    rows = {r["name"]: r for r in TrainingConfig.describe()}
    assert rows["patch_size"]["ge"] == MIN_PATCH


def test_a_grey_image_with_a_channel_axis_is_one_plane_and_grey_with_alpha_is_refused():
    rng = np.random.default_rng(8)
    grey = rng.random((40, 48, 1)).astype(np.float32)
    data = clean_data(grey)
    assert len(data.inputs) == 1 and data.inputs[0].shape == (40, 48)  # was 40 planes of 48 x 1
    with pytest.raises(DataError, match="grey image with an alpha channel"):
        clean_data(rng.random((40, 48, 2)).astype(np.float32))


# -- split and patches -------------------------------------------------------------------------------
def test_validation_is_held_out_by_image():
    rng = np.random.default_rng(4)
    data = noisy_data([rng.random((3, 16, 16)) for _ in range(10)])
    train, val = split_data(data, 0.2, seed=0)
    assert len(val) == 6 and len(train) == 24
    assert not set(train.sources) & set(val.sources) and len(val.sources) == 2
    # the held-out part split again (a test set, then training's own validation)
    rest, again = split_data(train, 0.25, seed=1)
    assert len(again) == 6 and len(rest) == 18 and not set(rest.sources) & set(again.sources)
    assert sorted(rest.sources + again.sources) == sorted(train.sources)
    assert [n.partition("[")[0] for n in again.names] == [again.sources[g] for g in again.groups]
    assert split_data(data, 0.2, seed=0)[1].names == val.names
    assert split_data(data, 0.0)[1] is None


def test_single_stack_splits_by_contiguous_planes_and_single_image_not_at_all():
    stack = noisy_data(np.random.default_rng(5).random((10, 16, 16)))
    train, val = split_data(stack, 0.2)
    assert val.names == ["array 0[8]", "array 0[9]"] and len(train) == 8
    single = noisy_data(np.zeros((16, 16)))
    assert split_data(single, 0.5) == (single, None)


def test_a_split_keeps_every_class_in_training_and_does_not_hold_out_most_planes():
    rng = np.random.default_rng(7)
    two = clean_data([rng.random((32, 32)), rng.random((32, 32))], labels=["cell", "empty"])
    for seed in range(4):  # one layer per class: holding one out would train on one class
        train, val = split_data(two, 0.1, seed=seed)
        assert val is None and train is two
    four = clean_data([rng.random((32, 32)) for _ in range(4)], labels=["a", "a", "b", "b"])
    for seed in range(4):
        train, val = split_data(four, 0.25, seed=seed)
        assert sorted(train.class_names[c] for c in set(train.labels.tolist())) == ["a", "b"]
        assert len(val) == 1
    singles = noisy_data([rng.random((16, 16)) for _ in range(4)])
    for fraction in (0.75, 0.9):  # the largest fractions still leave something to train on
        train, val = split_data(singles, fraction, seed=0)
        assert len(train) >= 1 and len(train) + len(val) == 4
    mixed = noisy_data([rng.random((50, 16, 16)), rng.random((16, 16))])
    for seed in range(4):
        train, val = split_data(mixed, 0.1, seed=seed)
        assert len(train) == 50 and val.names == ["array 1"]


def test_two_to_four_planes_are_normalised_apart_like_channels():
    bright = np.linspace(0, 60000, 64 * 64).reshape(64, 64)
    dim = np.linspace(0, 1000, 64 * 64).reshape(64, 64)
    data = clean_data(np.stack([bright, dim]).astype(np.uint16))
    assert data.inputs[0].max() == pytest.approx(data.inputs[1].max(), rel=1e-3)  # both near 1
    stack = clean_data(np.stack([bright, dim] * 3).astype(np.uint16))  # 6 planes: a Z stack
    assert stack.inputs[1].max() < 0.05  # normalised with the stack's numbers


def test_pairs_of_other_types_and_label_tables_over_same_named_files_are_refused(tmp_path):
    rng = np.random.default_rng(8)
    noisy = (rng.random((32, 32)) * 255).astype(np.uint8)
    with pytest.raises(DataError, match="is uint8 but its target.* is float64"):
        paired_data(noisy, noisy / 255.0)
    for folder in ("cats", "dogs"):
        (tmp_path / folder).mkdir()
        for i in range(2):
            skio.imsave(tmp_path / folder / f"00{i}.png", noisy, check_contrast=False)
    (tmp_path / "labels.csv").write_text("cats/000.png,cat\ncats/001.png,dog\n")
    with pytest.raises(DataError, match="occur in more than one folder .*000.png"):
        clean_data([tmp_path / "cats", tmp_path / "dogs"], labels=tmp_path / "labels.csv")


def test_patch_sampler_shapes_augmentation_and_pairs():
    rng = np.random.default_rng(6)
    a = rng.random((20, 30)).astype(np.float32)
    data = paired_data([a], [a * 2], labels=[1], class_names=["x", "y"], normalization="none")
    sampler = PatchSampler(data, 8, np.random.default_rng(0))
    x, y, labels = sampler.sample(16)
    assert x.shape == y.shape == (16, 1, 8, 8) and labels.tolist() == [1] * 16
    np.testing.assert_allclose(y, 2 * x)  # targets cropped and turned the same way
    plain = PatchSampler(data, 8, np.random.default_rng(0), augment=False).sample(4)[0]
    for p in plain[:, 0]:  # without augmentation every patch is a crop of the image as it is
        found = any(np.array_equal(a[r : r + 8, c : c + 8], p) for r in range(13) for c in range(23))
        assert found
    with pytest.raises(DataError, match="smaller than the 32x32 patch"):
        PatchSampler(data, 32, np.random.default_rng(0))


def test_fixed_patches_are_deterministic_and_cover_every_plane():
    rng = np.random.default_rng(7)
    data = clean_data([rng.random((20, 20)) for _ in range(3)], labels=[0, 1, 2])
    x1, _, l1 = fixed_patches(data, 8, 5, seed=3)
    x2, _, _ = fixed_patches(data, 8, 5, seed=3)
    assert x1.shape == (5, 1, 8, 8) and np.array_equal(x1, x2)
    assert sorted(set(l1.tolist())) == [0, 1, 2]
    # fewer patches than planes: spread over all of them, not the first ones (classes in order)
    ordered = clean_data([rng.random((20, 20)) for _ in range(30)], labels=[i // 3 for i in range(30)])
    _, _, l3 = fixed_patches(ordered, 8, 10)
    assert sorted(set(l3.tolist())) == list(range(10))  # the first 10 planes held classes 0-3 only


def test_the_sampler_sees_every_pixel_about_equally_often_small_images_too():
    rng = np.random.default_rng(9)
    planes = [rng.random((16, 16)) for _ in range(4)] + [rng.random((64, 64))]
    data = clean_data(planes, normalization="none")
    which = PatchSampler(data, 16, np.random.default_rng(0)).sample_with_planes(20000)[3]
    per_plane = np.bincount(which, minlength=5)
    views_per_pixel = per_plane * 16 * 16 / np.array([p.size for p in planes])
    # weighing by patch positions gave [15, 6, 5, 7, 1248] views per pixel
    assert views_per_pixel.min() > 0.8 * views_per_pixel.max()


def test_pairs_from_folders_whose_names_differ_in_part_are_refused(tmp_path):
    rng = np.random.default_rng(9)
    for folder, names in (("noisy", ("a", "b")), ("clean", ("b", "c"))):
        (tmp_path / folder).mkdir()
        for name in names:
            skio.imsave(
                tmp_path / folder / f"{name}.png",
                (rng.random((32, 32)) * 255).astype(np.uint8),
                check_contrast=False,
            )
    with pytest.raises(DataError, match="a.png would be paired with b.png"):  # were paired a-b, b-c silently
        paired_data(tmp_path / "noisy", tmp_path / "clean")


def test_a_per_plane_label_table_names_a_2d_image_as_its_plane_0(tmp_path):
    from napari_addunet.engine.layer_data import layer_training_data

    rng = np.random.default_rng(10)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        skio.imsave(folder / f"i{i}.png", (rng.random((16, 16)) * 255).astype(np.uint8), check_contrast=False)
    table = tmp_path / "planes.csv"
    table.write_text("file,plane,label\n" + "".join(f"i{i}.png,0,{'xy'[i % 2]}\n" for i in range(4)))
    data = clean_data(folder, labels=table)  # was "no label for i0.png, ..."
    assert data.class_names == ["x", "y"] and data.labels.tolist() == [0, 1, 0, 1]
    stack, flat = rng.random((2, 16, 16)).astype(np.float32), rng.random((16, 16)).astype(np.float32)
    layers = layer_training_data(
        "noisy", [("a", stack), ("b", flat)], label_file={"a[0]": "x", "a[1]": "y", "b[0]": "y"}
    )
    assert layers.labels.tolist() == [0, 1, 1]
