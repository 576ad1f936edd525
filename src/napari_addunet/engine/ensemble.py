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


def ensemble_mean(
    run: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    ensemble: int,
    identity: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of ``unorient(run(orient(x, o)), o)`` over the first ``ensemble`` orientations.

    ``run`` maps a ``(N, C, H, W)`` tensor to a tensor of the same height and width (the
    orientation's own, so height and width are swapped for transposed orientations).
    ``identity``: ``run(x)`` when the caller has it already (it is then not run again).
    """
    total: torch.Tensor | None = None
    for o in orientations(ensemble):
        y = identity if identity is not None and not any(o) else unorient(run(orient(x, o).contiguous()), o)
        total = y.float() if total is None else total.add_(y.float())
    assert total is not None
    return total.div_(float(ensemble)) if ensemble > 1 else total
