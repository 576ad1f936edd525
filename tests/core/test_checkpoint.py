"""Checkpoint format: one safetensors file, atomic writes, clear errors, nothing unpickled."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import napari_addunet as na
from napari_addunet.engine.checkpoint import CheckpointError


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = na.create_model("addunet", width=8, kernels=(5, 3, 1), num_classes=2)
    m.set_gates([0.3, 0.0, 1.7])
    return m.eval()


def test_header_holds_everything_to_rebuild(model, tmp_path):
    path = na.save_model(
        model,
        tmp_path / "m.safetensors",
        normalization={"method": "range", "low": 0, "high": 255},
        class_names=["a", "b"],
        training={"data": "synthetic"},
    )
    header = na.read_header(path)
    assert header["architecture"] == "addunet"
    assert header["config"]["kernels"] == [5, 3, 1]
    assert header["gates"] == pytest.approx([0.3, 0.0, 1.7], abs=1e-6)
    assert header["metadata"]["normalization"]["high"] == 255
    assert header["package_version"] == na.__version__
    loaded = na.load_model(path)
    assert loaded.gates == pytest.approx(model.gates)


def test_write_is_atomic_and_keeps_old_file_on_failure(model, tmp_path, monkeypatch):
    path = na.save_model(model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    import safetensors.torch

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        na.save_model(model, path, overwrite=True, training={"new": True})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


def test_half_size_storage_refuses_bad_names_and_overflow_and_keeps_the_old_file(model, tmp_path):
    path = na.save_model(model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="weights_dtype must be one of"):
        na.save_model(model, path, weights_dtype="int8")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = 1e6  # beyond float16's 65504
    with pytest.raises(CheckpointError, match="does not fit in float16"):
        na.save_model(model, path, overwrite=True, weights_dtype="float16")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    # bfloat16 has float32's range: the same weights store
    name = next(iter(dict(model.named_parameters())))
    na.save_model(model, tmp_path / "b.safetensors", weights_dtype="bfloat16")
    assert na.load_model(tmp_path / "b.safetensors").state_dict()[name].view(-1)[0] == pytest.approx(
        1e6, rel=1e-2
    )


def test_rounding_refuses_overflow_before_changing_anything_and_broken_weights_are_not_saved(model, tmp_path):
    from napari_addunet.engine.checkpoint import round_weights

    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = 1e6
    before = [t.clone() for t in model.state_dict().values()]
    with pytest.raises(CheckpointError, match="does not fit in float16"):
        round_weights(model, "float16")  # used to turn the weight into inf, which then saved
    for a, b in zip(before, model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="1 NaN value"):
        na.save_model(model, tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()


def test_an_existing_file_is_kept_unless_overwrite_is_given(model, tmp_path):
    path = na.save_model(model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    model.set_gates([0.5, 0.5, 0.5])
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        na.save_model(model, path)
    with pytest.raises(FileExistsError):
        na.save_model(model, path, overwrite=False)
    assert path.read_bytes() == before
    na.save_model(model, path, overwrite=True)
    assert na.load_model(path).gates == pytest.approx([0.5, 0.5, 0.5])


def test_a_misspelt_option_is_refused_not_stored_as_metadata(model, tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(TypeError, match="did you mean weights_dtype="):
        na.save_model(model, path, weight_dtype="float16")
    with pytest.raises(TypeError, match="did you mean overwrite="):
        na.save_model(model, path, overwrites=True)
    assert not path.exists()
    na.save_model(model, path, weights_dtype="float16", weights={"note": "a key of its own"})
    assert na.read_header(path)["metadata"]["weights"] == {"note": "a key of its own"}


def test_wrong_suffix(model, tmp_path):
    with pytest.raises(CheckpointError, match="end in '.safetensors'"):
        na.save_model(model, tmp_path / "m.pt")


def test_pickle_files_are_refused_without_unpickling(tmp_path):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"not even opened")
    with pytest.raises(CheckpointError, match="never loaded as models"):
        na.load_model(evil)


def test_import_torch_weights_reads_state_dict_safely(model, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    imported = na.import_torch_weights(path, "addunet", width=8, kernels=(5, 3, 1), num_classes=2)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(imported(x).denoised, model(x).denoised)


def test_truncated_file(model, tmp_path):
    path = na.save_model(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        na.load_model(cut)


def test_garbage_file(tmp_path):
    path = tmp_path / "g.safetensors"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        na.load_model(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={"producer": "someone else"})
    with pytest.raises(CheckpointError, match="not a napari-addunet checkpoint"):
        na.load_model(path)


def _rewrite(path, out, **changes):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(changes.pop("meta", {}))
    for k in changes.pop("drop", []):
        tensors.pop(k)
    save_file(tensors, str(out), metadata=meta)
    return out


def test_unknown_architecture(model, tmp_path):
    path = na.save_model(model, tmp_path / "m.safetensors")
    bad = _rewrite(path, tmp_path / "b.safetensors", meta={"architecture": "transformer9000"})
    with pytest.raises(CheckpointError, match="unknown architecture 'transformer9000'"):
        na.load_model(bad)


def test_invalid_config(model, tmp_path):
    path = na.save_model(model, tmp_path / "m.safetensors")
    cfg = json.loads(na.read_header(path)["config"] and json.dumps(na.read_header(path)["config"]))
    cfg["width"] = -3
    bad = _rewrite(path, tmp_path / "b.safetensors", meta={"config": json.dumps(cfg)})
    with pytest.raises(CheckpointError, match="invalid model config"):
        na.load_model(bad)


def test_missing_weights_are_refused_strictly(model, tmp_path):
    path = na.save_model(model, tmp_path / "m.safetensors")
    bad = _rewrite(path, tmp_path / "b.safetensors", drop=["out.weight"])
    with pytest.raises(CheckpointError, match="missing \\['out.weight'\\]"):
        na.load_model(bad)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(FileNotFoundError):
        na.load_model(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no bundled model named 'nope'"):
        na.load_model("nope")


def test_local_paths_finds_machine_paths_in_nested_metadata():
    from napari_addunet.engine.checkpoint import local_paths

    meta = {
        "training": {
            "command": "train --clean /home/me/data/train400 --sigma 0:55",
            "data": ["<Train400>", "C:\\Users\\me\\images"],
            "noise": "sigma 0-55 on [0, 255]; and/or blur",
        },
        "normalization": {"method": "range"},
    }
    found = local_paths(meta)
    assert found == [
        "metadata.training.command = 'train --clean /home/me/data/train400 --sigma 0:55'",
        "metadata.training.data[1] = 'C:\\\\Users\\\\me\\\\images'",
    ]
    assert local_paths({"command": "train --clean <Train400> -o model.safetensors"}) == []


@pytest.mark.parametrize("name", ["addunet-gray-blind", "addunet-fashion-mnist"])
def test_bundled_models_name_no_machine_path(name):
    from napari_addunet.engine.checkpoint import local_paths

    assert local_paths(na.load_model(name).metadata) == []


def test_malformed_metadata_the_engine_reads_is_refused_before_writing(tmp_path):
    model = na.create_model("addunet", width=4, kernels=(3,), num_classes=2)
    path = tmp_path / "m.safetensors"
    for bad, message in (
        ({"normalization": {"method": "bogus"}}, "metadata 'normalization': unknown normalization method"),
        ({"normalization": {"method": "range", "lo": 0}}, "unknown normalization key 'lo'"),
        ({"class_names": 5}, "must be a list of names, got int"),
        ({"class_names": "ab"}, "must be a list of names, got str"),
        ({"class_names": ["a", 1]}, "must hold strings"),
        ({"class_names": ["a", "b", "c"]}, "has 3 names but the model has 2 classes"),
    ):
        with pytest.raises(CheckpointError, match=message):
            na.save_model(model, path, **bad)
        assert not path.exists() and model.metadata == {}  # the caller's model is unchanged too
    folder = tmp_path / "d.safetensors"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        na.save_model(model, folder, overwrite=True)
    na.save_model(
        model, path, class_names=["a", "b"], normalization={"method": "range", "low": 0, "high": 255}
    )
    assert na.load_model(path).class_names == ["a", "b"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_header_gates_are_those_of_the_rounded_weights(tmp_path, dtype):
    model = na.create_model("addunet", width=4, kernels=(3, 3, 3))
    model.set_gates([0.0, 0.5, 3.0])
    path = na.save_model(model, tmp_path / "m.safetensors", weights_dtype=dtype)
    loaded = na.load_model(path).gates
    assert loaded != (0.0, 0.5, 3.0)  # rounded to the stored precision
    assert tuple(na.read_header(path)["gates"]) == pytest.approx(loaded, abs=0, rel=0)  # was the unrounded
