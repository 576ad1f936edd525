"""AddUNet: a U-Net whose skips are added through learnable non-negative scalar gates.

Decoder input at level ``j`` is ``u_j + alpha_j * s_j`` with ``alpha_j = softplus(beta_j)``:
no concatenation, and one fixed feature width ``C`` across depth. See ``docs/models.md``
for the choices made where the papers are silent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import addunet_bands
from .banded import band_halo, run_in_bands
from .base import DenoiserModel
from .blocks import ConvAct, conv
from .config import ConfigError, ModelConfig, setting
from .outputs import ModelOutput
from .registry import register_model


class GateError(ValueError):
    """Gate values of the wrong length, negative or not finite."""


@dataclasses.dataclass(frozen=True)
class AddUNetConfig(ModelConfig):
    """Settings of :class:`AddUNet`."""

    width: int = setting(32, ge=1, le=512, doc="feature width C, the same at every level")
    kernels: tuple[int, ...] = setting(
        (9, 7, 5, 3, 1),
        item_ge=1,
        item_le=15,
        item_odd=True,
        min_len=1,
        max_len=8,
        doc="kernel size per level, shallow to deep (the depth is its length)",
    )
    encoder: Literal["residual", "plain"] = setting(
        "residual",
        doc="'residual': x_{i+1} = x_i - r_i, skips carry r_i (Real AddUNet); "
        "'plain': x_{i+1} = Enc_i(x_i), skips carry x_{i+1} (Pseudo AddUNet)",
    )
    convs_per_level: int = setting(1, ge=1, le=8, doc="convolutions per encoder and decoder level")
    level_convs: tuple[int, ...] = setting(
        (),
        item_ge=1,
        item_le=8,
        max_len=8,
        doc="convolutions per level, shallow to deep, overriding convs_per_level "
        "(empty: convs_per_level at every level)",
    )
    multiscale: bool = setting(
        False, doc="stride-2 down-sampling after each level and up-sampling back (extension)"
    )
    global_residual: bool = setting(True, doc="add the input to the output (learn the residual)")
    batch_norm: bool = setting(
        False,
        doc="batch normalisation after each convolution followed by an activation (not after a "
        "residual branch's last convolution, the down/up-sampling or the output convolution)",
    )
    gate_init: float = setting(
        1.0,
        ge=0.0,
        le=10.0,
        doc="initial value of every gate alpha (0 starts them at 1e-4: a gate at 0 gets no gradient)",
    )

    def check(self) -> None:
        if self.global_residual and self.output_channels != self.in_channels:
            raise ConfigError(
                "addunet.global_residual needs out_channels == in_channels "
                f"(got in_channels={self.in_channels}, out_channels={self.output_channels}); "
                "set global_residual=False"
            )
        if self.level_convs and len(self.level_convs) != self.depth:
            raise ConfigError(
                f"addunet.level_convs needs one count per level ({self.depth}, as in kernels), "
                f"got {len(self.level_convs)}: {self.level_convs}; leave it empty to use convs_per_level"
            )

    @property
    def depth(self) -> int:
        return len(self.kernels)

    @property
    def convs(self) -> tuple[int, ...]:
        """Convolutions of each level's encoder branch and decoder, shallow to deep."""
        return self.level_convs or (self.convs_per_level,) * self.depth


@dataclasses.dataclass
class AddUNetFeatures:
    """Encoder outputs cached for repeated decoding (the gate sliders' preview).

    Attributes
    ----------
    skips
        Skip tensors ``s_0 ... s_{L-1}``, shallow to deep.
    bottleneck
        The last encoder state ``x_L``, where the decoder starts and the head reads.
    input
        The padded input, needed by the global residual.
    size
        Height and width of the unpadded input.
    """

    skips: tuple[torch.Tensor, ...]
    bottleneck: torch.Tensor
    input: torch.Tensor
    size: tuple[int, int]


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The modules a chain of ``nn.Sequential`` runs, in order (nested chains flattened)."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


MIN_GATE_INIT = 1e-4
"""The smallest initial gate: ``gate_init=0`` starts here so that training can open the gates."""


CLOSED_BETA = -1.0e4
"""``beta`` of a closed gate: softplus gives exactly 0 in every float type, and float16 and
bfloat16 files can store it."""


def _inverse_softplus(alpha: float) -> float:
    if alpha == 0.0:
        return -math.inf
    if alpha > 20.0:
        return alpha
    return math.log(math.expm1(alpha))


def _beta_for(values: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
    """``beta`` whose softplus, computed in ``dtype``, gives each value as ``dtype`` rounds it.

    A closed gate (0) is :data:`CLOSED_BETA`, not ``-inf``: softplus is exactly 0 there with
    no gradient, and weight decay cannot turn it into NaN.
    """
    beta = torch.tensor([CLOSED_BETA if v == 0 else _inverse_softplus(v) for v in values], dtype=dtype)
    target = torch.tensor(list(values), dtype=dtype)
    try:
        for _ in range(8):  # the inverse is off by an ulp or so after rounding: step onto the value
            got = F.softplus(beta)
            low, high = got < target, got > target
            if not bool((low | high).any()):
                break
            up = torch.nextafter(beta, torch.full_like(beta, math.inf))
            down = torch.nextafter(beta, torch.full_like(beta, -math.inf))
            beta = torch.where(low, up, torch.where(high, down, beta))
    except (RuntimeError, NotImplementedError):  # a dtype without nextafter on this device
        pass
    return beta


#: Output rows per band of the no-gradient pass on the CPU (``models/banded.py``), where bands
#: were measured to save memory and time; GPUs run whole maps (not measured there).
BAND_ROWS = 32


@register_model("addunet", AddUNetConfig, "Additive U-Net: gated additive skips at a fixed width")
class AddUNet(DenoiserModel):
    """Additive U-Net (Lakkavalli and Sinha, 2026) with optional classification head.

    Parameters
    ----------
    config
        An :class:`AddUNetConfig`.

    Notes
    -----
    ``model(x)`` equals ``model.decode(model.encode(x))``. The gates ``alpha_j`` are ordered
    shallow (level 0, kernel ``kernels[0]``) to deep; setting one to 0 removes that level's
    skip from the output exactly.
    """

    def __init__(self, config: AddUNetConfig) -> None:
        super().__init__(config)
        c, bn = config.width, config.batch_norm
        self.stem = ConvAct(config.in_channels, c, 3, bn)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for k, n in zip(config.kernels, config.convs, strict=True):
            if config.encoder == "residual":
                # r_i may be signed: the last convolution of the branch is linear.
                layers: list[nn.Module] = [ConvAct(c, c, k, bn) for _ in range(n - 1)]
                layers.append(conv(c, c, k))
                self.encoders.append(nn.Sequential(*layers))
            else:
                self.encoders.append(nn.Sequential(*[ConvAct(c, c, k, bn) for _ in range(n)]))
            self.decoders.append(nn.Sequential(*[ConvAct(c, c, k, bn) for _ in range(n)]))
        depth = config.depth
        if config.multiscale:
            self.downs = nn.ModuleList(
                nn.Sequential(nn.Conv2d(c, c, 2, stride=2), nn.ReLU(inplace=True)) for _ in range(depth - 1)
            )
            self.ups = nn.ModuleList(nn.ConvTranspose2d(c, c, 2, stride=2) for _ in range(depth - 1))
            self.size_multiple = 2 ** (depth - 1)
        else:
            self.downs = nn.ModuleList()
            self.ups = nn.ModuleList()
        self.out = nn.Conv2d(c, config.output_channels, 1)
        # a gate at exactly 0 could never open (softplus has no gradient there): start at 1e-4
        start = config.gate_init if config.gate_init > 0 else MIN_GATE_INIT
        self.beta = nn.Parameter(_beta_for([start] * depth, torch.get_default_dtype()))
        self._make_head(c)

    # -- gates ----------------------------------------------------------------------------------
    def gate_tensor(self) -> torch.Tensor:
        """The gates ``alpha = softplus(beta)`` as a differentiable tensor, shallow to deep."""
        return F.softplus(self.beta)

    @property
    def gates(self) -> tuple[float, ...]:
        """Learned skip gates ``alpha_j >= 0``, one per level, shallow to deep."""
        return tuple(float(a) for a in self.gate_tensor().detach().cpu())

    def _check_gates(
        self, values: Sequence[float] | torch.Tensor, dtype: torch.dtype | None = None
    ) -> list[float]:
        if (
            isinstance(values, str | bytes)
            or getattr(values, "ndim", None) == 0
            or not (isinstance(values, torch.Tensor) or hasattr(values, "__iter__"))
        ):
            raise GateError(
                f"gates must be a sequence of {self.config.depth} numbers (one per level, shallow to "
                f"deep), got {type(values).__name__} {values!r:.40}"
            )
        vals = values.detach().cpu().tolist() if isinstance(values, torch.Tensor) else list(values)
        if len(vals) != self.config.depth:
            raise GateError(
                f"AddUNet has {self.config.depth} gates (one per level, shallow to deep), "
                f"got {len(vals)} values"
            )
        out = []
        for i, v in enumerate(vals):
            try:
                f = float(v)
            except (TypeError, ValueError) as exc:
                raise GateError(f"gate {i} must be a number, got {v!r}") from exc
            if not math.isfinite(f):
                raise GateError(f"gate {i} must be finite, got {f}")
            if f < 0:
                raise GateError(f"gate {i} must be non-negative (alpha = softplus(beta) >= 0), got {f}")
            largest = torch.finfo(dtype or self.beta.dtype).max
            if f > largest:
                raise GateError(f"gate {i} = {f:g} does not fit in the model's numbers (largest {largest:g})")
            out.append(f)
        return out

    def set_gates(self, values: Sequence[float]) -> None:
        """Set the gates to ``values`` (one non-negative number per level, shallow to deep).

        A gate set to exactly 0 closes its skip for good: it stays 0 through any later training
        (the softplus behind it has no gradient there). Set a small positive value instead to
        let training reopen it.
        """
        vals = self._check_gates(values)
        with torch.no_grad():
            self.beta.copy_(_beta_for(vals, self.beta.dtype))

    # -- encoder / decoder -------------------------------------------------------------------------
    def _encode_padded(
        self, xp: torch.Tensor, in_place: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Skips and bottleneck; ``in_place`` (no gradients only) subtracts into the pass's own maps
        and runs each residual branch in bands of rows, so its hidden map never exists whole."""
        return self._encode_levels(self.stem(xp), [], 0, in_place)

    def _encode_levels(
        self, x: torch.Tensor, skips: list[torch.Tensor], start: int, in_place: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The encoder from level ``start`` on (``x`` its input), appending to ``skips``."""
        last = self.config.depth - 1
        for i, enc in enumerate(self.encoders):
            if i < start:
                continue
            if self.config.encoder == "residual":
                r = self._branch_in_bands(enc, x) if in_place else enc(x)
                skips.append(r)
                x = x.sub_(r) if in_place else x - r  # the same values either way
            else:
                x = enc(x)
                skips.append(x)
            if self.config.multiscale and i < last:
                x = self.downs[i](x)
        return skips, x

    @staticmethod
    def _branch_in_bands(enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``enc(x)``, in bands of :data:`BAND_ROWS` rows when the map is tall enough (same values).

        The branch's input stays alive for the subtraction, so whole, it would hold three maps
        at once (input, hidden, output); in bands it holds two and a few bands of rows.
        """
        layers = _leaves(enc)
        if (
            x.device.type != "cpu"
            or x.shape[-2] <= 2 * BAND_ROWS
            or len(layers) < 2
            or band_halo(layers) is None
        ):
            return enc(x)
        return run_in_bands(layers, x, BAND_ROWS)

    def _decode_image(
        self,
        skips: Sequence[torch.Tensor],
        bottleneck: torch.Tensor,
        xp: torch.Tensor,
        alphas: torch.Tensor,
        consume: bool = False,
    ) -> torch.Tensor:
        """The decoder. ``consume`` (no gradients, and ``skips`` a list and ``bottleneck`` owned
        by this pass): each skip is scaled in place, added into ``u`` and released."""
        u = self._decode_levels(skips, bottleneck, alphas, consume, 0)
        y = self.out(u)
        if self.config.global_residual:
            y = y + xp
        return y

    def _decode_levels(
        self,
        skips: Sequence[torch.Tensor],
        u: torch.Tensor,
        alphas: torch.Tensor,
        consume: bool,
        stop: int,
    ) -> torch.Tensor:
        """Decoder levels from the deepest down to ``stop``; up-samples after each but ``stop``."""
        for j in range(self.config.depth - 1, stop - 1, -1):
            if consume:
                skip = skips.pop()  # type: ignore[attr-defined]
                u.add_(skip.mul_(alphas[j]))  # the values of ``u + alphas[j] * skip``
                del skip
                for layer in _leaves(self.decoders[j]):  # each input is released once used
                    u = layer(u)
            else:
                u = self.decode_level(j, u, skips[j], alphas[j])
            if self.config.multiscale and j > stop:
                u = self.ups[j - 1](u)
        return u

    def decode_level(
        self, j: int, u: torch.Tensor, skip: torch.Tensor, alpha: torch.Tensor | float
    ) -> torch.Tensor:
        """Decoder level ``j``: ``Dec_j(u + alpha * skip)``; ``u`` and ``skip`` are not modified.

        Without gradients the sum is built in one new buffer (``alpha * skip``, then ``u`` added
        in place: the same values, as addition commutes) instead of two; the time did not
        change measurably (512 x 512, the bundled model).
        """
        if torch.is_grad_enabled():
            return self.decoders[j](u + alpha * skip)
        v = alpha * skip
        v = v.add_(u)
        for layer in _leaves(self.decoders[j]):  # each input is released once used
            v = layer(v)
        return v

    def encode(self, x: torch.Tensor) -> AddUNetFeatures:
        """Run the encoder once and keep its outputs (they do not depend on the gates)."""
        self.check_input(x)
        xp, size = self.pad_input(x)
        skips, bottleneck = self._encode_padded(xp)
        return AddUNetFeatures(tuple(skips), bottleneck, xp, size)

    def decode(self, features: AddUNetFeatures, gates: Sequence[float] | None = None) -> ModelOutput:
        """Run the decoder on cached features, with the model's gates or ``gates`` if given.

        ``gates`` overrides the learned values for this call only; the model is unchanged.
        """
        if gates is None:
            alphas = self.gate_tensor()
        else:
            dtype = features.input.dtype
            alphas = torch.tensor(self._check_gates(gates, dtype), dtype=dtype, device=features.input.device)
        image = self._decode_image(features.skips, features.bottleneck, features.input, alphas)
        logits = self.head(features.bottleneck) if self.head is not None else None
        return ModelOutput(self.crop_output(image, features.size), logits)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips, bottleneck = self._encode_padded(x)
        return self._decode_image(skips, bottleneck, x, self.gate_tensor()), bottleneck

    def forward(self, x: torch.Tensor) -> ModelOutput:
        if torch.is_grad_enabled():
            return self.decode(self.encode(x))
        return self._forward_lean(x)

    def _forward_lean(self, x: torch.Tensor) -> ModelOutput:
        """Inference without gradients: the result of ``decode(encode(x))``, bit for bit on
        inputs up to two bands tall and within float rounding when bands run (``models/banded.py``).

        No tensor here is shared with a caller or kept for a backward pass, so the encoder
        subtracts in place, each residual branch runs in bands of rows, each skip is released
        once added, and the decoder's convolutions release their inputs as they go: a
        full-resolution level holds about two feature maps at once (and a quarter-resolution
        one) instead of about five (``benchmarks/activation_memory.py``), so default tiles can
        be larger.
        """
        self.check_input(x)
        xp, size = self.pad_input(x)
        if xp.device.type == "cpu" and addunet_bands.level0_in_bands(self, xp.shape[-2], BAND_ROWS):
            return self._forward_level0_in_bands(xp, size)
        skips, u = self._encode_padded(xp, in_place=True)
        logits = self.head(u) if self.head is not None else None  # before the decoder reuses ``u``
        if self.config.encoder != "residual":
            u = u.clone()  # ``u`` is also the deepest skip
        y = self._decode_image(skips, u, xp, self.gate_tensor(), consume=True)
        return ModelOutput(self.crop_output(y, size), logits)

    def _forward_level0_in_bands(self, xp: torch.Tensor, size: tuple[int, int]) -> ModelOutput:
        """:meth:`_forward_lean` with level 0 in bands of rows (``models/addunet_bands.py``): of
        the full-resolution maps only the skip exists whole. The same values (see ``models/banded.py``)."""
        alphas = self.gate_tensor()
        skip, x = addunet_bands.encode_level0(self, xp, BAND_ROWS)
        skips, u = self._encode_levels(x, [skip], 1, in_place=True)
        del skip, x
        logits = self.head(u) if self.head is not None else None  # before the decoder reuses ``u``
        u = self._decode_levels(skips, u, alphas, True, 1)
        skip = skips.pop()
        addunet_bands.add_upsampled(self, u, skip, alphas[0], BAND_ROWS)
        del u
        y = addunet_bands.finish_level0(self, skip, xp, BAND_ROWS)
        return ModelOutput(self.crop_output(y, size), logits)
