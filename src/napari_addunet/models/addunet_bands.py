"""AddUNet's full-resolution level in bands of rows, for inference without gradients.

A multi-scale Real AddUNet spends its memory at level 0: the stem's map, the residual branch's
hidden map and output, the map passed down, and on the way back the up-sampled map beside the
skip. Computed a band of rows at a time, level 0 keeps only the skip whole (plus the half-
resolution map below it): the encoder runs stem, branch, subtraction and down-sampling band by
band (:func:`encode_level0`), and the decoder up-samples into the scaled skip in place
(:func:`add_upsampled`), then runs its level-0 convolutions and the output convolution band
by band (:func:`finish_level0`). Each band reads the rows of context its
convolutions need (``models/banded.py``), so the values are those of the whole-map pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from .banded import POINTWISE, apply_to_band, band_halo, empty_map, rows_of, zero_outside

if TYPE_CHECKING:
    from .addunet import AddUNet


def _leaves(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


def _is_pair_conv(layer: nn.Module, kind: type) -> bool:
    """A kernel-2, stride-2, unpadded (transposed) convolution: each output row pair reads one
    input row pair (or row), so bands map onto bands without context."""
    if type(layer) is not kind:
        return False
    ok = layer.kernel_size == (2, 2) and layer.stride == (2, 2) and layer.padding == (0, 0)
    ok = ok and layer.dilation == (1, 1) and layer.groups == 1 and layer.padding_mode == "zeros"
    if isinstance(layer, nn.ConvTranspose2d):
        ok = ok and layer.output_padding == (0, 0)
    return ok


def level0_in_bands(model: AddUNet, height: int, rows: int) -> bool:
    """Whether ``model``'s level 0 can run in bands of ``rows`` on a padded map ``height`` tall."""
    cfg = model.config
    if not (cfg.multiscale and cfg.encoder == "residual" and cfg.depth >= 2):
        return False
    if rows % 2 or height % 2 or height <= 2 * rows:
        return False
    down = _leaves(model.downs[0])
    if not (_is_pair_conv(down[0], nn.Conv2d) and all(isinstance(m, POINTWISE) for m in down[1:])):
        return False
    if not _is_pair_conv(model.ups[0], nn.ConvTranspose2d):
        return False
    chains = (_leaves(model.stem), _leaves(model.encoders[0]), [*_leaves(model.decoders[0]), model.out])
    return all(band_halo(chain) is not None for chain in chains)


def encode_level0(model: AddUNet, xp: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Level 0 of the encoder in bands: the skip ``r_0`` and the down-sampled map for level 1.

    The same values as ``x = stem(xp); r = enc_0(x); downs[0](x - r)``; only ``r_0`` and the
    half-resolution map exist whole.
    """
    h, w = xp.shape[-2:]
    stem, branch, down = _leaves(model.stem), _leaves(model.encoders[0]), _leaves(model.downs[0])
    hs, hb = band_halo(stem), band_halo(branch)
    assert hs is not None and hb is not None
    skip = below = None
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        lo, hi = top - hb - hs, bottom + hb + hs
        x, lo, hi = apply_to_band(stem, rows_of(xp, lo, hi), lo, hi, h)
        zero_outside(x, lo, hi, h)  # the branch's first convolution pads with zeros there
        r, _, _ = apply_to_band(branch, x, lo, hi, h)
        t = x[:, :, hb : hb + bottom - top].sub_(r)  # rows top:bottom of x - r
        for layer in down:
            t = layer(t)
        if skip is None:
            skip = empty_map(r, r.shape[1], h, w)
            below = empty_map(t, t.shape[1], h // 2, w // 2)
        skip[:, :, top:bottom].copy_(r)
        below[:, :, top // 2 : bottom // 2].copy_(t)
    assert skip is not None and below is not None
    return skip, below


def add_upsampled(
    model: AddUNet, u: torch.Tensor, skip: torch.Tensor, alpha: torch.Tensor, rows: int
) -> None:
    """``skip <- alpha * skip + ups[0](u)``, in place, up-sampling ``u`` band by band.

    The values of the whole-map pass's ``ups[0](u) + alpha * skip`` (addition commutes);
    the up-sampled map never exists whole.
    """
    h = skip.shape[-2]
    skip.mul_(alpha)
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        skip[:, :, top:bottom].add_(model.ups[0](u[:, :, top // 2 : bottom // 2]))


def finish_level0(model: AddUNet, v: torch.Tensor, xp: torch.Tensor, rows: int) -> torch.Tensor:
    """``out(dec_0(v))`` plus the global residual, band by band; ``v`` is only read."""
    h, w = v.shape[-2:]
    chain: Sequence[nn.Module] = [*_leaves(model.decoders[0]), model.out]
    halo = band_halo(chain)
    assert halo is not None
    y = None
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        t, _, _ = apply_to_band(chain, rows_of(v, top - halo, bottom + halo), top - halo, bottom + halo, h)
        if model.config.global_residual:
            t = t + xp[:, :, top:bottom]
        if y is None:
            y = empty_map(xp, t.shape[1], h, w)
        y[:, :, top:bottom].copy_(t)
    assert y is not None
    return y


def decoder_level0_in_bands(model: AddUNet, height: int, rows: int) -> bool:
    """Whether :func:`decode_level0_from` applies: level 0's decoder and the output convolution
    form a bandable chain and the map is taller than two bands."""
    if height <= 2 * rows:
        return False
    return band_halo([*_leaves(model.decoders[0]), model.out]) is not None


def decode_level0_from(
    model: AddUNet, u: torch.Tensor, skip: torch.Tensor, alpha: float, xp: torch.Tensor, rows: int
) -> torch.Tensor:
    """``out(dec_0(u + alpha * skip))`` plus the global residual, band by band; reads only.

    For the gate preview, whose cached maps ``u`` (level 0's input) and ``skip`` are decoded
    again and again: each band of ``alpha * skip + u`` (the sum in the order the whole-map
    pass adds it) exists only while its rows are computed.
    """
    h, w = skip.shape[-2:]
    chain: Sequence[nn.Module] = [*_leaves(model.decoders[0]), model.out]
    halo = band_halo(chain)
    assert halo is not None
    y = None
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        lo, hi = top - halo, bottom + halo
        a, b = max(lo, 0), min(hi, h)
        v = alpha * skip[:, :, a:b]
        v.add_(u[:, :, a:b])
        t = rows_of(v, lo - a, hi - a)  # zero rows outside the image
        t, _, _ = apply_to_band(chain, t, lo, hi, h)
        if model.config.global_residual:
            t = t + xp[:, :, top:bottom]
        if y is None:
            y = empty_map(xp, t.shape[1], h, w)
        y[:, :, top:bottom].copy_(t)
    assert y is not None
    return y
