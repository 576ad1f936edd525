"""Checks that every registered architecture must pass (the tests loop over the registry)."""

from __future__ import annotations

import pytest
import torch

import napari_addunet as na
from napari_addunet.models import ConfigError, InputShapeError, ModelOutput, UnknownModelError

ARCHS = na.list_models()


def small(name: str, **config) -> torch.nn.Module:
    """A quick-to-run instance of an architecture (its defaults, smaller where a width exists)."""
    cls = na.get_config_class(name)
    fields = cls.field_names()
    for key, value in (("width", 8), ("base_width", 8), ("n_filters", 8)):
        if key in fields and key not in config:
            config[key] = value
    if name == "dncnn":
        config.setdefault("depth", 5)
    torch.manual_seed(0)
    return na.create_model(name, **config)


def test_registry_has_all_architectures():
    expected = {"addunet", "unet", "resunet", "attention_unet", "unetpp", "rescnn", "dncnn", "autoencoder"}
    assert expected <= set(ARCHS)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_equals_input_at_odd_size(name, channels):
    model = small(name, in_channels=channels)
    x = torch.rand(2, channels, 37, 53)
    out = model(x)
    assert isinstance(out, ModelOutput)
    assert out.denoised.shape == x.shape
    assert out.logits is None
    assert torch.isfinite(out.denoised).all()


@pytest.mark.parametrize("name", ARCHS)
def test_every_parameter_gets_a_gradient(name):
    model = small(name, num_classes=4)
    model.train()
    x = torch.rand(2, 1, 32, 40)
    out = model(x)
    loss = (out.denoised - x).pow(2).mean() + torch.nn.functional.cross_entropy(
        out.logits, torch.tensor([0, 3])
    )
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}.{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", ARCHS)
def test_classification_head_shape(name):
    model = small(name, num_classes=7, head_hidden=16).eval()
    out = model(torch.rand(3, 1, 29, 31))
    assert out.logits.shape == (3, 7)
    assert model.class_names == [f"class_{i}" for i in range(7)]


@pytest.mark.parametrize("name", ARCHS)
def test_save_load_round_trip_identical(name, tmp_path):
    model = small(name, num_classes=2).eval()
    # perturb batch-norm statistics so buffers are checked too
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = na.save_model(
        model, tmp_path / f"{name}.safetensors", class_names=["cat", "dog"], training={"steps": 3}
    )
    loaded = na.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    assert loaded.class_names == ["cat", "dog"]
    assert loaded.metadata["training"] == {"steps": 3}
    x = torch.rand(2, 1, 37, 53)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.denoised, b.denoised)
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("weights_dtype", ["float16", "bfloat16"])
def test_half_size_storage_loads_as_the_rounded_float32_model(name, weights_dtype, tmp_path):
    from napari_addunet.engine.checkpoint import round_weights

    model = small(name, num_classes=2).eval()
    full = na.save_model(model, tmp_path / "full.safetensors")
    half = na.save_model(model, tmp_path / "half.safetensors", weights_dtype=weights_dtype)
    from safetensors import safe_open

    with safe_open(str(half), framework="pt") as f:
        stored = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - not a dict
    state = model.state_dict()
    assert all(
        stored[k].dtype == getattr(torch, weights_dtype) for k in state if state[k].is_floating_point()
    )
    assert all(stored[k].dtype == state[k].dtype for k in state if not state[k].is_floating_point())
    float_bytes = sum(v.numel() * 4 for v in state.values() if v.is_floating_point())
    assert full.stat().st_size - half.stat().st_size > 0.45 * float_bytes
    assert na.read_header(half)["weights_dtype"] == weights_dtype
    assert na.read_header(full)["weights_dtype"] == "float32"
    loaded = na.load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(2, 1, 37, 53)
    with torch.no_grad():
        exact = model(x)
        rounded = round_weights(model, weights_dtype)(x)
        got = loaded(x)
    # the rounding is real (outputs move) and round_weights predicts the file exactly
    assert not torch.equal(exact.denoised, got.denoised)
    assert torch.equal(rounded.denoised, got.denoised)
    assert torch.equal(rounded.logits, got.logits)


@pytest.mark.parametrize("name", ARCHS)
def test_wrong_channel_count_is_refused(name):
    model = small(name)
    with pytest.raises(InputShapeError, match="1 input channel"):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(InputShapeError, match="4-D"):
        model(torch.rand(16, 16))


@pytest.mark.parametrize("name", ARCHS)
def test_receptive_field_is_positive_and_bounds_the_real_dependence(name):
    model = small(name).eval().double()
    rf = na.receptive_field(model)
    assert rf >= 3
    # The output centre pixel must not depend on input pixels farther than rf // 2 away.
    size = rf + 24
    size += (-size) % model.size_multiple
    x = torch.rand(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    c = size // 2
    model(x).denoised[0, 0, c, c].backward()
    ys, xs = torch.nonzero(x.grad[0, 0]).unbind(1)
    reach = int(max((ys - c).abs().max(), (xs - c).abs().max()))
    assert 2 * reach + 1 <= rf, f"{name}: measured dependence {2 * reach + 1} > receptive field {rf}"


@pytest.mark.parametrize("name", ARCHS)
def test_receptive_field_is_the_same_inside_no_grad_and_inference_mode(name):
    model = small(name).eval()
    rf = na.receptive_field(model)
    with torch.no_grad():  # the models sum in place there: a traced branch dropped out (43 -> 19)
        assert na.receptive_field(model) == rf
    with torch.inference_mode():
        assert na.receptive_field(model) == rf


def test_unknown_architecture_suggests_names():
    with pytest.raises(UnknownModelError, match="Did you mean 'addunet'"):
        na.create_model("addunett")


@pytest.mark.parametrize("name", ARCHS)
def test_unknown_and_out_of_range_settings(name):
    with pytest.raises(ConfigError, match="unknown setting 'no_such_field'"):
        na.create_model(name, no_such_field=1)
    with pytest.raises(ConfigError, match="in_channels must be >= 1"):
        na.create_model(name, in_channels=0)
    with pytest.raises(ConfigError, match="num_classes must be an integer"):
        na.create_model(name, num_classes="three")


@pytest.mark.parametrize("name", ARCHS)
def test_fast_layout_keeps_results_and_saved_files(name, tmp_path):
    from napari_addunet.engine.devices import prefers_channels_last, use_fast_layout

    model = small(name, num_classes=2).eval()
    x = torch.rand(2, 1, 37, 53)
    with torch.no_grad():
        before = model(x)
    plain = na.load_model(na.save_model(model, tmp_path / "plain.safetensors"))
    cpu = torch.device("cpu")
    assert use_fast_layout(model, cpu) is prefers_channels_last(cpu)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs, "every architecture has 2-D convolutions"
    if prefers_channels_last(cpu):
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
        assert not all(p.is_contiguous() for p in convs if p.shape[1] > 1 and p.shape[-1] > 1)
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after.denoised, before.denoised, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after.logits, before.logits, rtol=1e-4, atol=1e-5)
    # the saved file holds the same values in the default layout
    loaded = na.load_model(na.save_model(model, tmp_path / "fast.safetensors"))
    for (k, a), (_, b) in zip(plain.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
        assert b.is_contiguous(), k


def test_config_takes_numpy_numbers_and_the_schedule_notation_but_no_negative_items():
    import numpy as np

    model = na.create_model("addunet", kernels="9-7-5", gate_init=np.float32(0.5))
    assert model.config.kernels == (9, 7, 5) and model.config.gate_init == 0.5
    assert na.create_model("addunet", kernels="5 3 3").config.kernels == (5, 3, 3)
    with pytest.raises(ConfigError, match="items must be >= 1, got -5"):  # was read as (3, 5)
        na.create_model("addunet", kernels="3,-5")
    with pytest.raises(ConfigError, match="gate_init must be a number"):
        na.create_model("addunet", gate_init=np.bool_(True))


@pytest.mark.parametrize("name", na.list_models())
def test_every_model_refuses_a_non_tensor_with_a_type_error(name):
    model = na.create_model(name)
    with torch.no_grad(), pytest.raises(TypeError, match="expects a torch.Tensor"):
        model([[0.0]])  # DnCNN read x.ndim first: AttributeError
