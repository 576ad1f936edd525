"""Percentile normalisation as inference sees it, for training with synthetic noise.

With percentile normalisation, training data are mapped by the percentiles of each *clean*
image, but inference maps a *noisy* image by its own percentiles, which the noise pushes
apart. Trained on the first and run on the second, a model would see the signal compressed
and the noise lower than it was trained on (about sigma 25 -> 18.5 on a 100..3000-count
image). :class:`NoisyPercentiles` estimates, for one noise level, the percentiles the noisy
image would have (in the clean image's normalised units) so that the training pair can be
mapped the way inference will map it.

The estimate degrades a fixed subsample of the image's pixels (at most :data:`SAMPLE`
values) with the same noise model and takes the change of its percentiles, so that no noise
gives no change. It is made at whole sigmas (on [0, 255]) and at steps of the photon
count, and interpolated between them. Blur is not modelled (it narrows the tails only
slightly). Every draw comes from generators seeded by the image and the noise level, so
estimates repeat exactly and take nothing from the training run's own random streams.
"""

from __future__ import annotations

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


def pixel_sample(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """A fixed sample of at most :data:`SAMPLE` values of ``values`` (float64, 1-D; all of
    them when there are no more)."""
    flat = np.asarray(values).reshape(-1)
    if flat.size <= SAMPLE:
        return flat.astype(np.float64)
    rng = np.random.default_rng([int(seed), 15485863])
    return flat[rng.integers(0, flat.size, SAMPLE)].astype(np.float64)


class NoisyPercentiles:
    """The affine map from clean-percentile units to noisy-percentile units, per noise level.

    Parameters
    ----------
    samples
        For each training plane, the normalised pixels (or a :func:`pixel_sample` of them) of
        the image or stack its percentiles were taken over (planes of one stack share one
        array), any shape.
    low, high
        The percentiles of the normalisation (e.g. 0.1 and 99.9).
    kind
        ``"gaussian"`` or ``"poisson_gaussian"``.
    """

    def __init__(self, samples: Sequence[np.ndarray], low: float, high: float, kind: str) -> None:
        if kind not in ("gaussian", "poisson_gaussian"):
            raise ValueError(f"no noisy percentiles for noise model {kind!r}")
        self.low, self.high, self.kind = float(low), float(high), kind
        ids: dict[int, int] = {}
        self.images: list[np.ndarray] = []
        self.image_of: list[int] = []
        for s in samples:
            if id(s) not in ids:
                ids[id(s)] = len(self.images)
                self.images.append(s)
            self.image_of.append(ids[id(s)])
        self.clean = [np.percentile(np.asarray(s, np.float64), [self.low, self.high]) for s in self.images]
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
        x = np.asarray(self.images[g], dtype=np.float64).reshape(-1)
        rng = np.random.default_rng([g, sigma, p_bin + 2**20, 7])  # seeds must not be negative
        y = x
        if self.kind == "poisson_gaussian":
            photons = math.exp(p_bin / PHOTON_BINS)
            y = rng.poisson(np.clip(x, 0, None) * photons) / photons
        if sigma > 0:
            y = y + (sigma / 255.0) * rng.standard_normal(x.shape)
        lo_c, hi_c = self.clean[g]
        lo_n, hi_n = np.percentile(y, [self.low, self.high])
        if hi_c > lo_c:  # the change of the sample's percentiles, applied to the image's (0 and 1)
            lo, hi = float(lo_n - lo_c), 1.0 + float(hi_n - hi_c)
        else:  # the clean image was mapped by its minimum and maximum (its percentiles coincide)
            lo, hi = float(lo_n), float(hi_n)
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
