"""Percentile normalisation as inference sees it, for training with synthetic noise.

With percentile normalisation, training data are mapped by the percentiles of each *clean*
image, but inference maps a *noisy* image by its own percentiles, which the noise pushes
apart. Trained on the first and run on the second, a model would see the signal compressed
and the noise lower than it was trained on (about sigma 25 -> 18.5 on a 100..3000-count
image). :class:`NoisyPercentiles` estimates, for one noise level, the percentiles the noisy
image would have (in the clean image's normalised units) so that the training pair can be
mapped the way inference will map it.

The estimate degrades a fixed sample of the image's pixels (:func:`pixel_sample`: all
of them, or its tails and a weighted subsample of the rest) with the same noise model and takes the change of its percentiles, so that no noise
gives no change. It is made at whole sigmas (on [0, 255]) and at steps of the photon
count, and interpolated between them. Blur is not modelled (it narrows the tails only
slightly). Every draw comes from generators seeded by the image and the noise level, so
estimates repeat exactly and take nothing from the training run's own random streams.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

SAMPLE = 65536
"""Pixels of an image (or stack) the estimate uses; smaller images use all of theirs."""

PHOTON_BINS = 8
"""Photon counts are estimated at steps of 1/PHOTON_BINS in natural log (13 %) and
interpolated between them, as sigmas are at whole values."""


TAIL_PERCENT = 1.0
"""Pixels below this percentile and above 100 minus it are all kept in a :class:`PixelSample`
(up to :data:`SAMPLE` of them): the percentiles that matter lie there."""


@dataclasses.dataclass(frozen=True, eq=False)
class PixelSample:
    """Pixels standing for an image (or stack): its values and how many pixels each stands for.

    ``weights`` is None when the values are all the image's pixels (any shape then).
    """

    values: np.ndarray
    weights: np.ndarray | None = None

    def mapped(self, offset: float, scale: float) -> PixelSample:
        """The same pixels normalised as ``(value - offset) / scale`` (float32)."""
        values = ((np.asarray(self.values, np.float64) - offset) / scale).astype(np.float32)
        return PixelSample(values, self.weights)

    def percentiles(self, values: np.ndarray, q: Sequence[float]) -> np.ndarray:
        """Percentiles ``q`` of ``values`` (these pixels, changed) under this sample's weights."""
        v = np.asarray(values, np.float64).reshape(-1)
        if self.weights is None:
            return np.percentile(v, q)
        order = np.argsort(v, kind="stable")
        v, w = v[order], self.weights[order]
        cum = np.cumsum(w)
        return np.interp(np.asarray(q, np.float64) / 100.0 * cum[-1], cum - w / 2.0, v)


def pixel_sample(values: np.ndarray, seed: int = 0) -> PixelSample:
    """Pixels standing for ``values``: all of them when there are at most :data:`SAMPLE`;
    otherwise every pixel of the tails (:data:`TAIL_PERCENT`, at most :data:`SAMPLE`) and a
    random :data:`SAMPLE` of the rest, weighted by how many pixels each stands for. Sparse
    bright spots, which decide the high percentile, are never left to chance."""
    flat = np.asarray(values).reshape(-1)
    if flat.size <= SAMPLE:
        return PixelSample(flat.astype(np.float64))
    rng = np.random.default_rng([int(seed), 15485863])
    low, high = np.percentile(flat, [TAIL_PERCENT, 100.0 - TAIL_PERCENT])
    tail = (flat < low) | (flat > high)
    tail_idx = np.flatnonzero(tail)
    n_bulk = flat.size - tail_idx.size
    parts, weights = [], []
    if tail_idx.size:
        pick = tail_idx if tail_idx.size <= SAMPLE else rng.choice(tail_idx, SAMPLE, replace=False)
        parts.append(flat[pick])
        weights.append(np.full(pick.size, tail_idx.size / pick.size))
    if n_bulk:
        idx = rng.integers(0, flat.size, 2 * SAMPLE + 64)
        idx = idx[~tail[idx]][:SAMPLE]  # the tails are at most 2 % of the pixels
        parts.append(flat[idx])
        weights.append(np.full(idx.size, n_bulk / idx.size))
    return PixelSample(np.concatenate(parts).astype(np.float64), np.concatenate(weights))


class NoisyPercentiles:
    """The affine map from clean-percentile units to noisy-percentile units, per noise level.

    Parameters
    ----------
    samples
        For each training plane, the :class:`PixelSample` (normalised) of the image or stack
        its percentiles were taken over (planes of one stack share one).
    points
        For each training plane, the low and high percentiles of that image or stack, from
        all its pixels, in normalised units (``(0, 1)`` unless they coincide).
    low, high
        The percentiles of the normalisation (e.g. 0.1 and 99.9).
    kind
        ``"gaussian"`` or ``"poisson_gaussian"``.
    """

    def __init__(
        self,
        samples: Sequence[PixelSample],
        points: Sequence[tuple[float, float]],
        low: float,
        high: float,
        kind: str,
    ) -> None:
        if kind not in ("gaussian", "poisson_gaussian"):
            raise ValueError(f"no noisy percentiles for noise model {kind!r}")
        self.low, self.high, self.kind = float(low), float(high), kind
        ids: dict[int, int] = {}
        self.images: list[PixelSample] = []
        self.points: list[tuple[float, float]] = []
        self.image_of: list[int] = []
        for s, pt in zip(samples, points, strict=True):
            if id(s) not in ids:
                ids[id(s)] = len(self.images)
                self.images.append(s)
                self.points.append((float(pt[0]), float(pt[1])))
            self.image_of.append(ids[id(s)])
        self.clean = [s.percentiles(s.values, [self.low, self.high]) for s in self.images]
        self._cache: dict[tuple[int, int, int], tuple[float, float]] = {}

    def affine(self, plane: int, sigma: float, photons: float | None = None) -> tuple[float, float]:
        """``(offset, scale)``: the noisy image's low percentile and its high minus low.

        Parameters
        ----------
        plane
            Index of the training plane.
        sigma
            Gaussian (read) noise sigma on [0, 255].
        photons
            Photons of a pixel of intensity 1 (``"poisson_gaussian"`` only).
        """
        g = self.image_of[plane]
        # estimated at whole sigmas and photon bins, linearly in between
        s0 = int(math.floor(float(sigma)))
        corners = [(s0, 1.0 - (float(sigma) - s0)), (s0 + 1, float(sigma) - s0)]
        bins = [(0, 1.0)]
        if self.kind == "poisson_gaussian":
            p = math.log(photons) * PHOTON_BINS
            p0 = int(math.floor(p))
            bins = [(p0, 1.0 - (p - p0)), (p0 + 1, p - p0)]
        lo = scale = 0.0
        for s_i, ws in corners:
            for p_i, wp in bins:
                if ws * wp == 0:
                    continue
                a, b = self._cached(g, s_i, p_i)
                lo, scale = lo + ws * wp * a, scale + ws * wp * b
        return lo, scale

    def _cached(self, g: int, sigma: int, p_bin: int) -> tuple[float, float]:
        key = (g, sigma, p_bin)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._estimate(*key)
        return hit

    def _estimate(self, g: int, sigma: int, p_bin: int) -> tuple[float, float]:
        sample = self.images[g]
        x = np.asarray(sample.values, dtype=np.float64).reshape(-1)
        rng = np.random.default_rng([g, sigma, p_bin + 2**20, 7])  # seeds must not be negative
        y = x
        if self.kind == "poisson_gaussian":
            photons = math.exp(p_bin / PHOTON_BINS)
            y = rng.poisson(np.clip(x, 0, None) * photons) / photons
        if sigma > 0:
            y = y + (sigma / 255.0) * rng.standard_normal(x.shape)
        lo_c, hi_c = self.clean[g]
        lo_n, hi_n = sample.percentiles(y, [self.low, self.high])
        # the change of the sample's percentiles, applied to the whole image's (so that no
        # noise changes nothing, whatever the sample's own estimate of them)
        true_lo, true_hi = self.points[g]
        lo, hi = true_lo + float(lo_n - lo_c), true_hi + float(hi_n - hi_c)
        if hi <= lo:  # no spread even with the noise: inference maps by the minimum and maximum
            return 0.0, 1.0
        return lo, hi - lo

    def batch(
        self, planes: Sequence[int], sigma: torch.Tensor, photons: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets and scales ``(n, 1, 1, 1)`` for a batch of patches."""
        import torch

        sig = sigma.reshape(-1).tolist()
        pho = photons.reshape(-1).tolist() if photons is not None else [None] * len(sig)
        pairs = [self.affine(int(p), s, f) for p, s, f in zip(planes, sig, pho, strict=True)]
        lo = torch.tensor([a for a, _ in pairs], dtype=torch.float32).view(-1, 1, 1, 1)
        scale = torch.tensor([b for _, b in pairs], dtype=torch.float32).view(-1, 1, 1, 1)
        return lo, scale
