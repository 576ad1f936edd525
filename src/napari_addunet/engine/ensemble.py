"""Self-ensemble: average a denoiser's output over flipped and transposed copies of its input.

A convolutional denoiser is not exactly equivariant to flips and 90-degree rotations, so its
errors on the eight orientations of an image (the symmetries of the square) are partly
independent; averaging the eight results back in the original orientation lowers the error.
The price is one forward pass per orientation: ``ensemble=8`` costs 8 times the CPU or GPU
time of a single pass, with the same peak memory (the passes run one after the other).

Sizes: ``1`` (off), ``2`` (identity and left-right flip), ``4`` (the four flips, which keep
the image's shape) and ``8`` (the flips with and without a transpose). Classification is not
averaged; it always uses the untransformed input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the module itself needs no torch: the widget reads ENSEMBLE_SIZES
    import torch

ENSEMBLE_SIZES = (1, 2, 4, 8)

# (transpose, flip up-down, flip left-right), the identity first; the first n are used.
_ORIENTATIONS: tuple[tuple[bool, bool, bool], ...] = (
    (False, False, False),
    (False, False, True),
    (False, True, False),
    (False, True, True),
    (True, False, False),
    (True, False, True),
    (True, True, False),
    (True, True, True),
)


class EnsembleError(ValueError):
    """An ensemble size the engine does not offer."""


def check_ensemble(ensemble: object) -> int:
    """``ensemble`` as an int from :data:`ENSEMBLE_SIZES`, or :class:`EnsembleError`."""
    if (
        isinstance(ensemble, bool)
        or not isinstance(ensemble, (int, np.integer))
        or int(ensemble) not in ENSEMBLE_SIZES
    ):
        raise EnsembleError(
            f"ensemble must be one of {', '.join(map(str, ENSEMBLE_SIZES))} "
            f"(orientations averaged; 1 is off), got {ensemble!r}"
        )
    return int(ensemble)


def orientations(ensemble: int) -> tuple[tuple[bool, bool, bool], ...]:
    """The orientations (transpose, flip up-down, flip left-right) averaged by ``ensemble``."""
    return _ORIENTATIONS[: check_ensemble(ensemble)]


def orient(x: torch.Tensor, o: tuple[bool, bool, bool]) -> torch.Tensor:
    """``x`` (``..., H, W``) in orientation ``o``: transposed first, then flipped."""
    transpose, up_down, left_right = o
    if transpose:
        x = x.transpose(-2, -1)
    dims = [d for d, on in ((-2, up_down), (-1, left_right)) if on]
    return x.flip(dims) if dims else x


def unorient(y: torch.Tensor, o: tuple[bool, bool, bool]) -> torch.Tensor:
    """The inverse of :func:`orient`: flips undone first, then the transpose."""
    transpose, up_down, left_right = o
    dims = [d for d, on in ((-2, up_down), (-1, left_right)) if on]
    if dims:
        y = y.flip(dims)
    return y.transpose(-2, -1) if transpose else y


def flipped_axes(o: tuple[bool, bool, bool]) -> tuple[bool, bool]:
    """Whether orientation ``o`` reverses the input's (height, width) axes."""
    transpose, up_down, left_right = o
    return (left_right, up_down) if transpose else (up_down, left_right)


def _padded_far(x: torch.Tensor, far: tuple[int, int], flips: tuple[bool, bool]) -> torch.Tensor:
    import torch.nn.functional as F

    dy, dx = (far[0] if flips[0] else 0), (far[1] if flips[1] else 0)
    if not (dy or dx):
        return x
    h, w = int(x.shape[-2]), int(x.shape[-1])
    mode = "reflect" if dy < h and dx < w else "replicate"
    return F.pad(x, (0, dx, 0, dy), mode=mode)


def ensemble_mean(
    run: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    ensemble: int,
    identity: torch.Tensor | None = None,
    far: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Mean of ``unorient(run(orient(x, o)), o)`` over the first ``ensemble`` orientations.

    ``run`` maps a ``(N, C, H, W)`` tensor to a tensor of the same height and width (the
    orientation's own, so height and width are swapped for transposed orientations).
    ``identity``: ``run(x)`` when the caller has it already (it is then not run again).
    ``far``: for a tile of a larger image, ``(dy, dx)`` pixels from the tile's bottom and
    right edges to the image's, modulo the model's pooling multiple. A flipped copy is then
    extended by that many pixels beyond those edges (which are the tile's artificial edges,
    outside what it owns), so that a pooling model sees it on the grid of the flipped whole
    image, and tiled results equal untiled ones.
    """
    total: torch.Tensor | None = None
    h, w = int(x.shape[-2]), int(x.shape[-1])
    for o in orientations(ensemble):
        if identity is not None and not any(o):
            y = identity
        else:
            xp = _padded_far(x, far, flipped_axes(o))
            y = unorient(run(orient(xp, o).contiguous()), o)[..., :h, :w]
        total = y.float() if total is None else total.add_(y.float())
    assert total is not None
    return total.div_(float(ensemble)) if ensemble > 1 else total
