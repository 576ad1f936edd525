"""AddUNet specifics: the gate API, encode/decode, encoder modes, receptive field."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import napari_addunet as na
from napari_addunet.models import ConfigError
from napari_addunet.models.addunet import GateError

VARIANTS = [
    {"encoder": "residual"},
    {"encoder": "plain"},
    {"encoder": "residual", "multiscale": True},
    {"encoder": "plain", "multiscale": True, "global_residual": False},
]


def make(**config):
    torch.manual_seed(0)
    config.setdefault("width", 8)
    return na.create_model("addunet", **config).eval()


def test_defaults_follow_the_design():
    model = na.create_model("addunet")
    cfg = model.config
    assert cfg.kernels == (9, 7, 5, 3, 1)
    assert cfg.encoder == "residual" and not cfg.multiscale and cfg.num_classes == 0
    assert len(model.gates) == 5
    assert model.gates == pytest.approx((1.0,) * 5, abs=1e-6)
    # fixed width: every convolution inside the encoder/decoder maps C -> C
    for module in list(model.encoders.modules()) + list(model.decoders.modules()):
        if isinstance(module, torch.nn.Conv2d):
            assert module.in_channels == module.out_channels == cfg.width


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_equals_decode_of_encode(variant):
    model = make(**variant, num_classes=3)
    x = torch.rand(2, 1, 37, 53)
    with torch.no_grad():
        out = model(x)
        features = model.encode(x)
        again = model.decode(features)
    assert torch.equal(out.denoised, again.denoised)
    assert torch.equal(out.logits, again.logits)
    assert len(features.skips) == 5


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_without_gradients_matches_the_training_forward_bit_for_bit(variant, channels_last):
    """Under no_grad the forward pass reuses its own buffers in place; the result must not change."""
    model = make(**variant, num_classes=3)
    model.set_gates([0.4, 1.7, 0.0, 2.5, 0.9])
    x = torch.rand(2, 1, 37, 53)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    reference = model(x)  # gradients on: the plain path
    assert reference.denoised.requires_grad
    with torch.no_grad():
        lean = model(x)
    assert torch.equal(lean.denoised, reference.denoised.detach())
    assert torch.equal(lean.logits, reference.logits.detach())
    assert torch.equal(x, x.clone())  # the input is not touched (global residual reads it)


@pytest.mark.parametrize("variant", VARIANTS)
def test_decoding_cached_features_leaves_them_untouched(variant):
    """The gate preview decodes the same cached features again and again."""
    model = make(**variant)
    x = torch.rand(1, 1, 33, 41)
    reference = model.decode(model.encode(x), gates=[0.5, 1.5, 0.2, 1.0, 2.0]).denoised.detach()
    with torch.no_grad():
        features = model.encode(x)
        kept = [t.clone() for t in (*features.skips, features.bottleneck, features.input)]
        first = model.decode(features, gates=[0.5, 1.5, 0.2, 1.0, 2.0]).denoised
        model.decode(features, gates=[0.0, 0.0, 3.0, 0.0, 0.1])
        again = model.decode(features, gates=[0.5, 1.5, 0.2, 1.0, 2.0]).denoised
    assert torch.equal(first, reference) and torch.equal(again, reference)
    for before, now in zip(kept, (*features.skips, features.bottleneck, features.input), strict=True):
        assert torch.equal(before, now)


def test_inference_without_gradients_holds_fewer_feature_maps():
    from napari_addunet.engine.tiling import _live_bytes_tracker, _storage_key

    model = make(encoder="residual", multiscale=True, kernels=(3, 3, 3, 3), width=32, convs_per_level=2)
    x = torch.rand(1, 1, 512, 64)  # tall: the bands of rows are a small part of the map
    full_map = 32 * 4 * 512 * 64
    peaks = []
    for run in (lambda: model.decode(model.encode(x)), lambda: model(x)):
        owned = {_storage_key(t) for t in (*model.parameters(), x)}
        tracker = _live_bytes_tracker(owned)
        with torch.no_grad(), tracker:
            run()
        peaks.append(tracker.peak)
    cached_path, lean = peaks
    # the cached path holds about five full-resolution maps of 32 channels at once; this one runs
    # level 0 in bands of rows, so only the level-0 skip exists whole, beside level 1's input and
    # its branch's output (a quarter each) and a few bands
    assert lean < 0.4 * cached_path, peaks
    assert 1.4 * full_map <= lean < 1.8 * full_map, peaks


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_banded_branches_give_the_same_values(variant, channels_last):
    """Tall inputs run the residual branches in bands of rows (odd sizes: a short last band).

    Within float rounding: a convolution may sum in another order on a band than on the whole
    map (differences of about 1e-7 seen)."""
    from napari_addunet.models.addunet import BAND_ROWS

    model = make(**variant, convs_per_level=2, num_classes=3)
    x = torch.rand(2, 1, 3 * BAND_ROWS + 11, 29)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    reference = model(x)
    with torch.no_grad():
        lean = model(x)
    torch.testing.assert_close(lean.denoised, reference.denoised.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(lean.logits, reference.logits.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("level", range(5))
def test_zero_gate_removes_that_skip(variant, level):
    model = make(**variant)
    x = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        features = model.encode(x)
        gates = list(model.gates)
        gates[level] = 0.0
        base = model.decode(features, gates=gates).denoised
        skips = list(features.skips)
        skips[level] = skips[level] + 10 * torch.randn_like(skips[level])
        features.skips = tuple(skips)
        perturbed = model.decode(features, gates=gates).denoised
        with_gate = model.decode(features).denoised
    assert torch.equal(base, perturbed)
    assert not torch.allclose(with_gate, base, atol=1e-3)


def test_set_gates_and_decode_override():
    model = make()
    x = torch.rand(1, 1, 24, 24)
    model.set_gates([0.0, 0.25, 0.5, 1.5, 3.0])
    assert model.gates == pytest.approx((0.0, 0.25, 0.5, 1.5, 3.0), abs=1e-6)
    with torch.no_grad():
        features = model.encode(x)
        overridden = model.decode(features, gates=[1, 1, 1, 1, 1]).denoised
    # override does not change the model
    assert model.gates == pytest.approx((0.0, 0.25, 0.5, 1.5, 3.0), abs=1e-6)
    model.set_gates([1, 1, 1, 1, 1])
    with torch.no_grad():
        assert torch.allclose(model(x).denoised, overridden, atol=1e-6)
    # the gates are softplus of a parameter and stay differentiable
    assert model.beta.requires_grad
    assert torch.allclose(model.gate_tensor(), torch.nn.functional.softplus(model.beta))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1, 1, 1], "has 5 gates"),
        ([1, 1, 1, 1, -0.1], "gate 4 must be non-negative"),
        ([1, 1, math.nan, 1, 1], "gate 2 must be finite"),
        ([1, 1, "x", 1, 1], "gate 2 must be a number"),
    ],
)
def test_bad_gates_are_refused_and_change_nothing(values, message):
    model = make()
    before = model.gates
    with pytest.raises(GateError, match=message):
        model.set_gates(values)
    assert model.gates == before


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_modes_compute_what_they_say(variant):
    model = make(**variant)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        state = model.stem(x)
        features = model.encode(x)
        for i, enc in enumerate(model.encoders):
            if variant["encoder"] == "residual":
                r = enc(state)
                assert torch.allclose(features.skips[i], r)
                state = state - r
            else:
                state = enc(state)
                assert torch.allclose(features.skips[i], state)
            if variant.get("multiscale") and i < 4:
                state = model.downs[i](state)
        assert torch.allclose(features.bottleneck, state)


def test_receptive_field_values():
    assert (
        na.receptive_field(torch.nn.Sequential(*[torch.nn.Conv2d(1, 1, 3, padding=1) for _ in range(3)])) == 7
    )
    # stem 3x3, then encoder and decoder kernels 9-7-5-3-1: 1 + 2 + 2 * (8 + 6 + 4 + 2 + 0)
    assert na.receptive_field(na.create_model("addunet")) == 43
    assert na.receptive_field(na.create_model("addunet", kernels=(3, 3))) == 1 + 2 + 2 * 4
    # multi-scale grows with the stride products
    assert na.receptive_field(na.create_model("addunet", multiscale=True)) > 100
    # DnCNN: 17 3x3 convolutions
    assert na.receptive_field(na.create_model("dncnn")) == 35


def test_config_errors_are_specific():
    with pytest.raises(ConfigError, match="kernels items must be odd"):
        na.create_model("addunet", kernels=(9, 4))
    with pytest.raises(ConfigError, match="encoder must be one of 'residual', 'plain'"):
        na.create_model("addunet", encoder="concat")
    with pytest.raises(ConfigError, match="width must be <= 512"):
        na.create_model("addunet", width=1000)
    with pytest.raises(ConfigError, match="global_residual needs out_channels == in_channels"):
        na.create_model("addunet", in_channels=3, out_channels=1)
    assert na.create_model("addunet", in_channels=3, out_channels=1, global_residual=False).out_channels == 1


def test_level_convs_set_the_convolutions_of_each_level():
    model = make(kernels=(5, 3, 3), level_convs=(1, 3, 2), encoder="residual")
    assert model.config.convs == (1, 3, 2)
    assert [len(e) for e in model.encoders] == [1, 3, 2]
    assert [len(d) for d in model.decoders] == [1, 3, 2]
    # the residual branch ends with a linear convolution, the decoder with a ReLU
    assert isinstance(model.encoders[1][-1], torch.nn.Conv2d)
    assert isinstance(model.decoders[1][-1][-1], torch.nn.ReLU)
    assert make(kernels=(3, 3), convs_per_level=2).config.convs == (2, 2)
    with pytest.raises(
        ConfigError, match=r"level_convs needs one count per level \(3, as in kernels\), got 2"
    ):
        na.create_model("addunet", kernels=(5, 3, 3), level_convs=(1, 2))
    with pytest.raises(ConfigError, match="level_convs items must be >= 1"):
        na.create_model("addunet", kernels=(5, 3), level_convs=(1, 0))
    # the setting round-trips through a checkpoint
    again = na.create_model("addunet", **model.config.to_dict())
    assert again.config.level_convs == (1, 3, 2)


@pytest.mark.parametrize(
    "settings",
    [
        {"convs_per_level": 2, "batch_norm": True},
        {"convs_per_level": 1, "kernels": (5, 3), "global_residual": False},
        {"convs_per_level": 3, "kernels": (3, 9, 3), "width": 5},
        {"level_convs": (2, 4, 3), "kernels": (3, 3, 3), "width": 6},
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_level0_in_bands_gives_the_same_values(settings, channels_last):
    """Multi-scale Real AddUNets run their whole level 0 in bands of rows on tall inputs."""
    from napari_addunet.models.addunet import BAND_ROWS
    from napari_addunet.models.addunet_bands import level0_in_bands

    model = make(encoder="residual", multiscale=True, **settings)
    if settings.get("batch_norm"):
        for m in model.modules():  # statistics that are not the identity
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    model.set_gates([0.3 + 0.4 * i for i in range(model.config.depth)])
    x = torch.rand(2, 1, 5 * BAND_ROWS + 3, 45)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    assert level0_in_bands(model, model.pad_input(x)[0].shape[-2], BAND_ROWS)
    reference = model(x).denoised.detach()
    with torch.no_grad():
        lean = model(x).denoised
    torch.testing.assert_close(lean, reference, rtol=0, atol=1e-6)
    if settings.get("batch_norm"):  # training mode: batch statistics would depend on the band
        assert not level0_in_bands(model.train(), 10 * BAND_ROWS, BAND_ROWS)


def test_level0_in_bands_only_where_it_applies():
    from napari_addunet.models.addunet import BAND_ROWS
    from napari_addunet.models.addunet_bands import level0_in_bands

    ms = make(encoder="residual", multiscale=True, convs_per_level=2)
    assert level0_in_bands(ms, 4 * BAND_ROWS, BAND_ROWS)
    assert not level0_in_bands(ms, 2 * BAND_ROWS, BAND_ROWS)  # short maps: one pass is as lean
    assert not level0_in_bands(make(encoder="plain", multiscale=True), 4 * BAND_ROWS, BAND_ROWS)
    assert not level0_in_bands(make(encoder="residual"), 4 * BAND_ROWS, BAND_ROWS)  # one resolution


def test_bands_run_on_the_cpu_only():
    """Bands were measured on CPUs; other devices run whole maps (checked on the meta device,
    which computes shapes only): the whole-map pass calls the layer modules, bands do not."""
    from napari_addunet.models.addunet import BAND_ROWS

    model = make(encoder="residual", multiscale=True, kernels=(3, 3, 3), convs_per_level=2)
    calls = []
    model.encoders[0][0][0].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(torch.rand(1, 1, 4 * BAND_ROWS, 16))
        assert not calls
        model.to("meta")(torch.empty(1, 1, 4 * BAND_ROWS, 16, device="meta"))
    assert calls


def test_a_small_initial_gate_learns_and_a_gate_set_to_zero_stays_closed():
    torch.manual_seed(0)
    model = na.create_model("addunet", width=4, kernels=(3, 3), gate_init=0.0)
    assert model.gates == pytest.approx((1e-4, 1e-4), rel=1e-3)  # 0 starts at 1e-4: it can open
    small = na.create_model("addunet", width=4, kernels=(3, 3), gate_init=1e-5)
    assert small.gates == pytest.approx((1e-5, 1e-5), rel=1e-3)  # other values as given (was 1e-4)
    model.set_gates([0.0, 0.001])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.rand(2, 1, 16, 16)
    for _ in range(5):
        optimizer.zero_grad()
        ((model(x).denoised - x.flip(-1)) ** 2).mean().backward()
        optimizer.step()
    assert model.gates[0] == 0.0  # closed for good, as set_gates documents
    assert abs(model.gates[1] - 0.001) > 1e-6  # a small gate moves (about 1% per step here)


def test_receptive_field_refuses_what_it_cannot_bound_with_a_message():
    fixed_size = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.Upsample(size=(8, 8)))
    with pytest.raises(ValueError, match="fixed size has no fixed scale"):  # was a TypeError
        na.receptive_field(fixed_size)
    pooled = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1))
    with pytest.raises(ValueError, match="whole image"):  # was an OverflowError
        na.receptive_field(pooled)


def test_gates_round_trip_exactly_and_decode_with_them_matches_the_forward():
    torch.manual_seed(0)
    model = na.create_model("addunet", width=8, kernels=(3, 3, 3)).eval()
    rng = np.random.default_rng(0)
    x = torch.rand(1, 1, 16, 16)
    for _ in range(200):  # about 3 % of values used to come back 1 ulp off
        model.set_gates(list(rng.random(3) * 3))
        read = model.gates
        model.set_gates(read)
        assert model.gates == read
        with torch.no_grad():
            assert torch.equal(model(x).denoised, model.decode(model.encode(x), gates=read).denoised)


def test_a_closed_gate_stays_closed_and_finite_under_weight_decay():
    torch.manual_seed(0)
    model = na.create_model("addunet", width=8, kernels=(3, 3, 3))
    model.set_gates([0.0, 0.5, 1.0])
    assert torch.isfinite(model.beta).all()  # was -inf, which weight decay turns into NaN
    for opt in (
        torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4),
        torch.optim.SGD(model.parameters(), lr=1e-2, weight_decay=1e-4),
    ):
        for _ in range(2):
            opt.zero_grad()
            model(torch.rand(2, 1, 16, 16)).denoised.mean().backward()
            opt.step()
    assert model.gates[0] == 0.0 and all(np.isfinite(model.gates))


def test_gates_that_do_not_fit_or_are_not_sequences_are_refused():
    model = na.create_model("addunet", width=8, kernels=(3, 3, 3))
    before = model.gates
    with pytest.raises(GateError, match="does not fit"):
        model.set_gates([1e39, 1, 1])  # became an infinite gate
    with pytest.raises(GateError, match="does not fit"):
        model.decode(model.encode(torch.rand(1, 1, 8, 8)), gates=[1e39, 1, 1])
    for zero_d in (torch.tensor(1.0), np.array(1.0)):  # raw TypeErrors before
        with pytest.raises(GateError, match="sequence of 3 numbers"):
            model.set_gates(zero_d)
    assert model.gates == before
