"""Blind-spot masking for self-supervised training on noisy images alone (Noise2Void).

A few pixels of each patch are chosen on a jittered grid and replaced by a random
neighbour within ``radius`` (never the pixel itself). The network sees the masked patch;
the loss compares its output with the original noisy values at the masked pixels only.
Because the network never sees a pixel's own value when predicting it, pixel-wise
independent noise cannot be learned and only the signal is (Krull, Buchholz and Jug, 2019).
"""

from __future__ import annotations

import math

import torch


def _offset(index: torch.Tensor, delta: torch.Tensor, size: int) -> torch.Tensor:
    """``index + delta``, or ``index - delta`` where that leaves the patch (so never ``index``)."""
    moved = index + delta
    return torch.where((moved < 0) | (moved >= size), index - delta, moved)


def blindspot_mask(
    batch: torch.Tensor, fraction: float, radius: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a batch for blind-spot training.

    Parameters
    ----------
    batch
        Noisy patches ``(batch, channels, H, W)``.
    fraction
        Approximate fraction of pixels masked per patch (one per grid cell of side
        ``round(1 / sqrt(fraction))``, at least 2), at most 0.25: with more, the cells would
        shrink to single pixels, every pixel would be replaced, and the pixels' own noisy values
        would reach the network through their neighbours.
    radius
        Neighbours are drawn from the ``(2 radius + 1)^2`` window around the pixel, without
        the centre; an offset that would leave the patch is mirrored (``-dy``, ``-dx``).
        Must be less than half the patch side.
    generator
        CPU generator for every random draw.

    Returns
    -------
    masked, mask
        The masked batch (same device as ``batch``) and a boolean mask ``(batch, 1, H, W)``
        of the replaced pixels.
    """
    b, c, h, w = batch.shape
    if not 0 < fraction <= 0.25:
        raise ValueError(f"blind-spot mask fraction must be in (0, 0.25], got {fraction}")
    if radius < 1 or 2 * radius >= min(h, w):
        raise ValueError(
            f"blind-spot radius must be in [1, {(min(h, w) - 1) // 2}] for {h}x{w} patches, got {radius}"
        )
    step = max(2, int(round(1.0 / math.sqrt(fraction))))
    gy = torch.arange(0, h, step)
    gx = torch.arange(0, w, step)
    ny, nx = len(gy), len(gx)
    ys = gy.view(1, ny, 1) + torch.randint(0, step, (b, ny, nx), generator=generator)
    xs = gx.view(1, 1, nx) + torch.randint(0, step, (b, ny, nx), generator=generator)
    keep = (ys < h) & (xs < w)
    side = 2 * radius + 1
    # an offset in the window, skipping the centre
    pick = torch.randint(0, side * side - 1, (b, ny, nx), generator=generator)
    pick = pick + (pick >= (side * side) // 2).long()
    dy, dx = pick // side - radius, pick % side - radius
    bi = torch.arange(b).view(b, 1, 1).expand(b, ny, nx)[keep]
    ys, xs = ys[keep], xs[keep]
    sy, sx = _offset(ys, dy[keep], h), _offset(xs, dx[keep], w)
    cpu = batch.detach().cpu()
    masked = cpu.clone()
    masked[bi, :, ys, xs] = cpu[bi, :, sy, sx]
    mask = torch.zeros((b, 1, h, w), dtype=torch.bool)
    mask[bi, 0, ys, xs] = True
    return masked.to(batch.device), mask.to(batch.device)
