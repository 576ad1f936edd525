"""Architecture-specific checks of the baseline models of the zoo.

Generic behaviour (shapes at odd sizes, gradients, head, save/load) is tested for every
registered architecture elsewhere; these tests pin down what makes each baseline what
it claims to be.
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx
from torch import nn

from napari_addunet.models import ConfigError, create_model, get_config_class, list_models
from napari_addunet.models.attention_unet import AttentionGate, AttentionUNet
from napari_addunet.models.autoencoder import ConvAutoencoder
from napari_addunet.models.dncnn import DnCNN
from napari_addunet.models.rescnn import ResCNN
from napari_addunet.models.resunet import ResidualBlock, ResUNet
from napari_addunet.models.unet import UNet
from napari_addunet.models.unetpp import UNetPlusPlus, node_name

BASELINES = {
    "unet": UNet,
    "resunet": ResUNet,
    "attention_unet": AttentionUNet,
    "unetpp": UNetPlusPlus,
    "rescnn": ResCNN,
    "dncnn": DnCNN,
    "autoencoder": ConvAutoencoder,
}
SMALL = {
    "unet": {"base_width": 4, "depth": 2},
    "resunet": {"base_width": 4, "depth": 2},
    "attention_unet": {"base_width": 4, "depth": 2},
    "unetpp": {"base_width": 4, "depth": 2},
    "rescnn": {"n_filters": 4},
    "dncnn": {"depth": 4, "width": 4},
    "autoencoder": {"base_width": 4, "depth": 2},
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class _Image(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)[0]


def traced_functions(model: nn.Module) -> list:
    """Targets of the function calls in the traced ``forward_features`` (image output)."""
    graph = torch.fx.symbolic_trace(_Image(model)).graph
    return [n.target for n in graph.nodes if n.op == "call_function"]


def convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def first_conv(module: nn.Module) -> nn.Conv2d:
    return convs(module)[0]


def conv_params(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def unet_params(cin: int, cout: int, base: int, depth: int) -> int:
    """Parameters of the classic U-Net without batch norm, counted by hand."""
    w = [base * 2**i for i in range(depth + 1)]

    def double(a: int, b: int) -> int:
        return conv_params(a, b, 3) + conv_params(b, b, 3)

    total = double(cin, w[0]) + sum(double(w[i - 1], w[i]) for i in range(1, depth + 1))
    for i in range(depth):
        total += conv_params(w[i + 1], w[i], 2) + double(2 * w[i], w[i])
    return total + conv_params(w[0], cout, 1)


# -- registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_registered_with_own_config(name: str) -> None:
    assert name in list_models()
    model = create_model(name, **SMALL[name])
    assert type(model) is BASELINES[name]
    assert model.architecture == name
    assert get_config_class(name).architecture == name
    assert type(model.config) is get_config_class(name)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_forward_features_traces_with_fx(name: str) -> None:
    model = create_model(name, in_channels=3, **SMALL[name])
    traced = torch.fx.symbolic_trace(_Image(model))
    x = torch.randn(1, 3, 16, 16)
    model.eval()
    torch.testing.assert_close(traced(x), model.forward_features(x)[0])


# -- U-Net ---------------------------------------------------------------------------------------


def test_unet_channels_double_per_level() -> None:
    model = create_model("unet", base_width=8, depth=3)
    assert model.widths == (8, 16, 32, 64)
    assert model.size_multiple == 8
    assert len(model.encoders) == 4 and len(model.decoders) == 3 and len(model.pools) == 3
    for i, enc in enumerate(model.encoders):
        c1, c2 = convs(enc)
        assert c1.in_channels == (1 if i == 0 else 8 * 2 ** (i - 1))
        assert c1.out_channels == c2.in_channels == c2.out_channels == 8 * 2**i
        assert c1.kernel_size == c2.kernel_size == (3, 3)
    for pool in model.pools:
        assert isinstance(pool, nn.MaxPool2d) and pool.kernel_size == 2


def test_unet_decoder_reads_concatenated_skip() -> None:
    model = create_model("unet", base_width=8, depth=3)
    for step, (up, dec) in enumerate(zip(model.ups, model.decoders, strict=True)):
        width = 8 * 2 ** (2 - step)  # deep to shallow
        assert isinstance(up, nn.ConvTranspose2d)
        assert up.kernel_size == (2, 2) and up.stride == (2, 2)
        assert (up.in_channels, up.out_channels) == (2 * width, width)
        assert first_conv(dec).in_channels == 2 * width
        assert first_conv(dec).out_channels == width
    ops = traced_functions(model)
    assert ops.count(torch.cat) == 3
    assert operator.add not in ops  # no global residual by default
    assert model.out.kernel_size == (1, 1)


def test_unet_matches_hand_count_and_notebook() -> None:
    assert create_model("unet").num_parameters() == unet_params(1, 1, 32, 4)
    assert create_model("unet", in_channels=3, out_channels=2).num_parameters() == unet_params(3, 2, 32, 4)
    # The notebook's SimpleUNet (three poolings, 32 channels) reports 1,925,025 parameters.
    assert create_model("unet", depth=3).num_parameters() == 1_925_025


def test_unet_head_reads_bottleneck() -> None:
    model = create_model("unet", base_width=4, depth=3, num_classes=5)
    assert model.head.mlp[1].in_features == 32
    _, features = model.forward_features(torch.randn(1, 1, 16, 16))
    assert features.shape == (1, 32, 2, 2)


def test_unet_global_residual() -> None:
    x = torch.randn(2, 1, 16, 16)
    plain = create_model("unet", base_width=4, depth=2)
    resid = create_model("unet", base_width=4, depth=2, global_residual=True)
    for model in (plain, resid):
        nn.init.zeros_(model.out.weight)
        nn.init.zeros_(model.out.bias)
    torch.testing.assert_close(plain(x).denoised, torch.zeros_like(x))
    torch.testing.assert_close(resid(x).denoised, x)


def test_unet_batch_norm_option() -> None:
    assert not any(isinstance(m, nn.BatchNorm2d) for m in create_model("unet", depth=2).modules())
    model = create_model("unet", base_width=4, depth=2, batch_norm=True)
    # two per block, 2 * depth + 1 blocks
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 10


# -- Residual U-Net ------------------------------------------------------------------------------


def test_resunet_blocks_are_residual_with_projection_shortcuts() -> None:
    model = create_model("resunet", in_channels=8, base_width=8, depth=2)
    blocks = list(model.encoders) + list(model.decoders)
    assert all(isinstance(b, ResidualBlock) for b in blocks)
    assert isinstance(model.encoders[0].shortcut, nn.Identity)  # 8 -> 8 channels
    for b in blocks[1:]:
        (proj,) = convs(b.shortcut)
        assert proj.kernel_size == (1, 1)


def test_residual_block_adds_shortcut() -> None:
    for cin in (4, 6):
        block = ResidualBlock(cin, 4)
        nn.init.zeros_(block.conv2.weight)
        nn.init.zeros_(block.conv2.bias)
        x = torch.randn(2, cin, 8, 8)
        torch.testing.assert_close(block(x), torch.relu(block.shortcut(x)))
    identity = ResidualBlock(4, 4)
    nn.init.zeros_(identity.conv2.weight)
    nn.init.zeros_(identity.conv2.bias)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(identity(x), torch.relu(x))


def test_resunet_is_unet_plus_shortcuts() -> None:
    res = create_model("resunet").num_parameters()
    plain = create_model("unet").num_parameters()
    w = [32 * 2**i for i in range(5)]
    shortcuts = conv_params(1, 32, 1) + sum(conv_params(w[i - 1], w[i], 1) for i in range(1, 5))
    shortcuts += sum(conv_params(2 * w[i], w[i], 1) for i in range(4))
    assert res == plain + shortcuts


# -- Attention U-Net -----------------------------------------------------------------------------


def test_attention_gate_coefficients() -> None:
    gate = AttentionGate(skip_ch=4, gate_ch=8, inter_ch=2)
    skip, g = torch.randn(2, 4, 16, 12), torch.randn(2, 8, 8, 6)
    alpha = gate.coefficients(skip, g)
    assert alpha.shape == (2, 1, 16, 12)
    assert (alpha >= 0).all() and (alpha <= 1).all()
    torch.testing.assert_close(gate(skip, g), skip * alpha)
    assert gate.w_x.stride == (2, 2) and gate.w_x.bias is None
    assert gate.psi.out_channels == 1


def test_attention_unet_gates_every_skip() -> None:
    model = create_model("attention_unet", base_width=8, depth=3, attention_reduction=4)
    assert len(model.attention_gates) == 3
    for step, gate in enumerate(model.attention_gates):
        width = 8 * 2 ** (2 - step)
        assert gate.w_x.in_channels == width
        assert gate.w_g.in_channels == 2 * width  # gating signal from one level deeper
        assert gate.w_x.out_channels == max(1, width // 4)
    assert traced_functions(model).count(operator.mul) == 3


@pytest.mark.parametrize("bias, same", [(30.0, True), (-30.0, False)])
def test_attention_unet_open_gates_is_unet(bias: float, same: bool) -> None:
    plain = create_model("unet", base_width=4, depth=2)
    att = create_model("attention_unet", base_width=4, depth=2)
    missing, unexpected = att.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("attention_gates.") for k in missing)
    for gate in att.attention_gates:
        nn.init.zeros_(gate.psi.weight)
        nn.init.constant_(gate.psi.bias, bias)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        close = torch.allclose(att(x).denoised, plain(x).denoised, atol=1e-6)
    assert close is same


# -- U-Net++ -------------------------------------------------------------------------------------


@pytest.mark.parametrize("upsample", ["transposed", "bilinear"])
def test_unetpp_nested_dense_nodes(upsample: str) -> None:
    depth, base = 3, 4
    model = create_model("unetpp", base_width=base, depth=depth, upsample=upsample)
    w = [base * 2**i for i in range(depth + 1)]
    assert len(model.nodes) == (depth + 1) * (depth + 2) // 2
    assert len(model.ups) == depth * (depth + 1) // 2
    for j in range(1, depth + 1):
        for i in range(depth + 1 - j):
            up_ch = w[i] if upsample == "transposed" else w[i + 1]
            node = first_conv(model.nodes[node_name(i, j)])
            assert node.in_channels == j * w[i] + up_ch, (i, j)
            assert node.out_channels == w[i]
    assert first_conv(model.nodes[node_name(depth, 0)]).out_channels == w[depth]
    assert traced_functions(model).count(torch.cat) == depth * (depth + 1) // 2


def test_unetpp_parameter_counts() -> None:
    # Zhou et al. report 9.04 M parameters for U-Net++ with 32 to 512 channels.
    assert create_model("unetpp").num_parameters() == 9_041_601
    # With one pooling, the nested design reduces to the U-Net.
    for cin in (1, 3):
        assert (
            create_model("unetpp", depth=1, in_channels=cin).num_parameters()
            == create_model("unet", depth=1, in_channels=cin).num_parameters()
        )


def test_unetpp_head_reads_bottleneck() -> None:
    model = create_model("unetpp", base_width=4, depth=2, num_classes=3)
    assert model.head.mlp[1].in_features == 16
    _, features = model.forward_features(torch.randn(1, 1, 8, 8))
    assert features.shape == (1, 16, 2, 2)


# -- ResCNN --------------------------------------------------------------------------------------


def test_rescnn_defaults_match_notebook() -> None:
    model = create_model("rescnn")
    layers = convs(model)
    assert len(layers) == 3
    assert [c.out_channels for c in layers] == [32, 32, 1]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in layers)
    assert model.num_parameters() == conv_params(1, 32, 3) + conv_params(32, 32, 3) + conv_params(32, 1, 3)
    assert len(convs(create_model("rescnn", n_layers=6, n_filters=4))) == 6


def test_rescnn_output_is_input_plus_tanh() -> None:
    model = create_model("rescnn", n_filters=4, kernel_size=5)
    x = torch.randn(2, 1, 12, 12)
    y, hidden = model.forward_features(x)
    torch.testing.assert_close(y, x + torch.tanh(model.last(hidden)))
    assert ((y - x).abs() < 1).all()
    nn.init.zeros_(model.last.weight)
    nn.init.zeros_(model.last.bias)
    torch.testing.assert_close(model(x).denoised, x)


def test_rescnn_head_reads_hidden_features() -> None:
    model = create_model("rescnn", n_filters=6, num_classes=2)
    assert model.head.mlp[1].in_features == 6


# -- DnCNN ---------------------------------------------------------------------------------------


def test_dncnn_structure() -> None:
    model = create_model("dncnn")
    layers = convs(model)
    assert len(layers) == 17
    assert all(c.kernel_size == (3, 3) for c in layers)
    assert [c.out_channels for c in layers[:-1]] == [64] * 16
    assert layers[-1].out_channels == 1
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 15
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 16
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.first.modules())
    assert isinstance(model.last, nn.Conv2d)  # no activation after the last layer
    assert model.num_parameters() == 556_097
    assert model.size_multiple == 1
    assert create_model("dncnn", in_channels=3).num_parameters() == 556_097 + 2 * (64 * 9 * 2) + 2


def test_dncnn_output_is_input_minus_residual() -> None:
    model = create_model("dncnn", depth=5, width=8).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        residual, _ = model.predict_residual(x)
        torch.testing.assert_close(model(x).denoised, x - residual)
    direct = create_model("dncnn", depth=5, width=8, residual=False).eval()
    direct.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(direct(x).denoised, residual)
    assert operator.sub in traced_functions(model)


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dncnn_runs_tall_inputs_in_bands_with_the_same_values(residual: bool, channels_last: bool) -> None:
    from napari_addunet.models.dncnn import BAND_ROWS

    torch.manual_seed(0)
    model = create_model("dncnn", depth=6, width=8, residual=residual).eval()
    for m in model.modules():  # batch norm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 1, 2 * BAND_ROWS + 37, 21)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    reference = model(x).denoised.detach()  # gradients on: the whole-map pass
    calls = []
    hook = model.middle[0][0].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        banded = model(x).denoised
    hook.remove()
    assert not calls  # the banded pass calls the convolutions functionally, not the modules
    torch.testing.assert_close(banded, reference, rtol=0, atol=1e-6)


def test_dncnn_head_reads_last_hidden_features() -> None:
    model = create_model("dncnn", depth=4, width=8, num_classes=3)
    assert model.head.mlp[1].in_features == 8
    _, features = model.forward_features(torch.randn(1, 1, 8, 8))
    assert features.shape == (1, 8, 8, 8)


# -- autoencoder ---------------------------------------------------------------------------------


def test_autoencoder_has_no_skips() -> None:
    model = create_model("autoencoder", base_width=4, depth=3)
    ops = traced_functions(model)
    assert torch.cat not in ops and operator.add not in ops and operator.sub not in ops
    x = torch.randn(1, 1, 16, 16)
    image, code = model.forward_features(x)
    assert code.shape == (1, 32, 2, 2)
    torch.testing.assert_close(model.decode(code), image)


def test_autoencoder_downsamples_by_strided_convs() -> None:
    model = create_model("autoencoder", base_width=4, depth=3)
    assert model.size_multiple == 8
    strided = [c for c in convs(model) if c.stride == (2, 2)]
    assert [c.out_channels for c in strided] == [8, 16, 32]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.in_channels, u.out_channels, u.stride) for u in ups] == [
        (32, 16, (2, 2)),
        (16, 8, (2, 2)),
        (8, 4, (2, 2)),
    ]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert create_model("autoencoder", num_classes=2).head.mlp[1].in_features == 512


# -- default sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("unet", 5e6, 1e7),
        ("resunet", 5e6, 1e7),
        ("attention_unet", 5e6, 1e7),
        ("unetpp", 5e6, 1.2e7),
        ("rescnn", 5e3, 2e4),
        ("dncnn", 5e5, 6e5),
        ("autoencoder", 3e6, 1e7),
    ],
)
def test_default_parameter_counts_are_sensible(name: str, low: float, high: float) -> None:
    assert low <= create_model(name).num_parameters() <= high


# -- configuration errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, field, value",
    [
        ("unet", "depth", 0),
        ("unet", "depth", 7),
        ("unet", "base_width", 0),
        ("unet", "batch_norm", "yes"),
        ("resunet", "depth", 7),
        ("resunet", "base_width", 1000),
        ("attention_unet", "attention_reduction", 0),
        ("attention_unet", "depth", 0),
        ("unetpp", "depth", 7),
        ("unetpp", "upsample", "nearest"),
        ("rescnn", "n_layers", 1),
        ("rescnn", "n_filters", 0),
        ("rescnn", "kernel_size", 17),
        ("rescnn", "kernel_size", 4),
        ("dncnn", "depth", 1),
        ("dncnn", "width", 0),
        ("autoencoder", "depth", 7),
        ("autoencoder", "base_width", 0),
    ],
)
def test_out_of_range_setting_is_rejected(name: str, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"{name}\.{field}"):
        create_model(name, **{field: value})


@pytest.mark.parametrize(
    "name, settings, field",
    [
        ("unet", {"global_residual": True, "out_channels": 2}, "global_residual"),
        ("resunet", {"global_residual": True, "in_channels": 3, "out_channels": 1}, "global_residual"),
        ("unetpp", {"global_residual": True, "out_channels": 3}, "global_residual"),
        ("rescnn", {"out_channels": 2}, "out_channels"),
        ("dncnn", {"in_channels": 3, "out_channels": 1}, "residual"),
        ("unet", {"base_width": 256, "depth": 5}, "base_width"),
        ("autoencoder", {"base_width": 128, "depth": 6}, "base_width"),
    ],
)
def test_cross_field_constraints(name: str, settings: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"{name}\.{field}"):
        create_model(name, **settings)


def test_channel_changing_outputs_allowed_without_residual() -> None:
    x = torch.randn(1, 3, 10, 14)
    for name, extra in [("unet", {}), ("unetpp", {}), ("dncnn", {"residual": False}), ("autoencoder", {})]:
        settings = {**SMALL[name], **extra}
        model = create_model(name, in_channels=3, out_channels=2, **settings)
        assert model(x).denoised.shape == (1, 2, 10, 14)
