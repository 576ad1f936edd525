"""Training data from layers: kinds, a class per layer or per slice, pairs, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_addunet.engine.datasets import DataError
from napari_addunet.engine.layer_data import layer_training_data


def _img(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_clean_layers_keep_their_names():
    data = layer_training_data("clean", [("cells", _img((32, 32))), ("stack", _img((3, 32, 32)))])
    assert data.mode == "supervised" and len(data) == 4
    assert data.sources == ["cells", "stack"]
    assert data.names == ["cells", "stack[0]", "stack[1]", "stack[2]"]
    assert data.labels is None
    assert data.describe()["names"] == ["cells", "stack"]


def test_classes_per_layer():
    data = layer_training_data("noisy", [("a", _img((16, 16))), ("b", _img((2, 16, 16)))], classes=["x", "y"])
    assert data.mode == "noise2void"
    assert data.class_names == ["x", "y"] and data.labels.tolist() == [0, 1, 1]
    with pytest.raises(DataError, match="some layers have a class"):
        layer_training_data("clean", [("a", _img((16, 16))), ("b", _img((16, 16)))], classes=["x", ""])
    none = layer_training_data("clean", [("a", _img((16, 16)))], classes=[""])
    assert none.labels is None


def test_classes_per_slice_from_csv(tmp_path):
    table = tmp_path / "classes.csv"
    table.write_text(
        "layer,slice,class\nstack,0,mitosis\nstack,1,interphase\nstack,2,mitosis\ncells.tif,,interphase\n"
    )
    images = [("stack", _img((3, 16, 16))), ("cells", _img((16, 16)))]
    data = layer_training_data("clean", images, label_file=table)
    assert [data.class_names[i] for i in data.labels] == ["mitosis", "interphase", "mitosis", "interphase"]
    with pytest.raises(DataError, match="no class for stack"):
        layer_training_data("clean", images, label_file={"cells": "a"})
    with pytest.raises(DataError, match="not in the training data"):
        layer_training_data("clean", images[1:], label_file={"cells": "a", "ghost": "b"})


def test_a_layer_named_with_its_file_extension_matches_the_table(tmp_path):
    table = tmp_path / "classes.csv"
    table.write_text("layer,class\ncells.tif,interphase\nstack.tif,mitosis\n")
    images = [("cells.tif", _img((16, 16))), ("stack", _img((2, 16, 16)))]
    data = layer_training_data("clean", images, label_file=table)
    assert [data.class_names[i] for i in data.labels] == ["interphase", "mitosis", "mitosis"]


def test_pairs():
    noisy, clean = _img((2, 16, 16), 1), _img((2, 16, 16), 2)
    data = layer_training_data("pairs", [("noisy", noisy)], targets=[clean])
    assert data.mode == "pairs" and len(data.targets) == 2
    with pytest.raises(DataError, match="target layer for every"):
        layer_training_data("pairs", [("noisy", noisy)], targets=[None])
    with pytest.raises(DataError, match="its target has shape"):
        layer_training_data("pairs", [("noisy", noisy)], targets=[clean[0]])


def test_bad_layers():
    with pytest.raises(DataError, match="tick at least one"):
        layer_training_data("clean", [])
    with pytest.raises(DataError, match="unknown kind"):
        layer_training_data("dirty", [("a", _img((8, 8)))])
    with pytest.raises(DataError, match="2-D images or 3-D stacks"):
        layer_training_data("clean", [("rgb4d", _img((2, 3, 8, 8)))])
    with pytest.raises(DataError, match="unique"):
        layer_training_data("clean", [("a", _img((8, 8))), ("a", _img((8, 8)))])


def test_class_csv_formats(tmp_path):
    from napari_addunet.engine.layer_data import read_layer_classes

    plain = tmp_path / "plain.csv"
    plain.write_text("cells,round\nstack.tif,long\n")
    assert read_layer_classes(plain) == {"cells": "round", "stack": "long"}
    slices = tmp_path / "slices.csv"
    slices.write_text("Image,Z,Label\nstack,0,a\nstack,1,b\n")
    assert read_layer_classes(slices) == {"stack[0]": "a", "stack[1]": "b"}
    clash = tmp_path / "clash.csv"
    clash.write_text("layer,class\ncells,a\ncells,b\n")
    with pytest.raises(DataError, match="two classes"):
        read_layer_classes(clash)
    bad = tmp_path / "bad.csv"
    bad.write_text("layer,slice,class\nstack,x,a\n")
    with pytest.raises(DataError, match="line 2"):
        read_layer_classes(bad)
    gaps = tmp_path / "gaps.csv"  # blank lines count: the message names the line in the file
    gaps.write_text("layer,slice,class\n\n\nstack,0,a\n\nstack,x,b\n")
    with pytest.raises(DataError, match="line 6"):
        read_layer_classes(gaps)
    no_header = tmp_path / "no_header.csv"
    no_header.write_text("\nstack,0,a\nstack,y,b\n")
    with pytest.raises(DataError, match="line 3"):
        read_layer_classes(no_header)
    with pytest.raises(DataError, match="does not exist"):
        read_layer_classes(tmp_path / "missing.csv")


def test_errors_name_the_layer_not_an_anonymous_array():
    bad = _img((32, 32))
    bad[3, 4] = np.nan
    with pytest.raises(DataError, match=r"^nuclei holds 1 NaN/Inf"):  # was "array 1 holds ..."
        layer_training_data("clean", [("cells", _img((32, 32))), ("nuclei", bad)])
    with pytest.raises(DataError, match=r"^mask: boolean arrays"):  # was "images array: ..."
        layer_training_data("clean", [("mask", np.zeros((32, 32), bool))])
    with pytest.raises(DataError, match=r"pairs do not match: noisy is float32 but its target is uint8"):
        layer_training_data("pairs", [("noisy", _img((32, 32)))], targets=[np.zeros((32, 32), np.uint8)])


def test_named_arrays_in_the_python_api():
    from napari_addunet.engine.datasets import clean_data

    data = clean_data({"a": _img((32, 32)), "b": _img((2, 32, 32))}, labels={"a": "x", "b": "y"})
    assert data.sources == ["a", "b"] and data.names == ["a", "b[0]", "b[1]"]
    assert data.class_names == ["x", "y"] and data.labels.tolist() == [0, 1, 1]
    with pytest.raises(DataError, match="'b' must be an array, got str"):
        clean_data({"a": _img((32, 32)), "b": "file.tif"})
