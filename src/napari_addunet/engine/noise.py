"""Synthetic degradations for supervised training: blur kernels and noise models.

All levels are on the scale of images normalised to ``[0, 1]``; Gaussian sigmas are given
on ``[0, 255]`` (the convention of the denoising literature: ``sigma=25`` means a standard
deviation of ``25/255``).

Noise models
------------
``"gaussian"``
    ``y = x + n``, ``n ~ N(0, sigma^2)``, one sigma per image drawn uniformly from
    ``sigma`` (a fixed level when both ends are equal; a range trains one *blind* model).
``"poisson_gaussian"``
    Photon (shot) noise plus read noise, what microscope cameras produce:
    ``y = Poisson(max(x, 0) * photons) / photons + N(0, sigma^2)`` where ``photons`` is the
    photon count of a pixel of intensity 1, drawn log-uniformly from ``photons``.
``"none"``
    No noise (blur only, for pure deblurring).

Blur (optional, applied to the clean image before the noise): ``"gaussian"`` kernels with a
standard deviation drawn from ``blur_sigma`` or ``"motion"`` kernels, a line of
``blur_size`` pixels at a random angle.

Every random draw goes through a ``torch.Generator`` so runs repeat exactly from a seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

NoiseKind = Literal["gaussian", "poisson_gaussian", "none"]
BlurKind = Literal["none", "gaussian", "motion"]


class NoiseError(ValueError):
    """A noise or blur setting is invalid."""


# -- kernels ------------------------------------------------------------------------------------
def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or size < 1 or size % 2 == 0:
        raise NoiseError(f"blur kernel size must be a positive odd integer, got {size!r}")
    return int(size)


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """A normalised 2-D Gaussian blur kernel.

    Parameters
    ----------
    size
        Odd side length in pixels.
    sigma
        Standard deviation in pixels (> 0).

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32 kernel summing to 1.
    """
    size = _check_size(size)
    if not sigma > 0:
        raise NoiseError(f"Gaussian blur sigma must be > 0, got {sigma!r}")
    r = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(r**2) / (2.0 * float(sigma) ** 2))
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def motion_kernel(size: int, angle: float, length: float | None = None) -> np.ndarray:
    """A normalised linear motion-blur kernel.

    Parameters
    ----------
    size
        Odd side length in pixels.
    angle
        Direction of the motion in degrees (0: horizontal, 90: vertical).
    length
        Length of the motion in pixels (default: ``size``); at most ``size``.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32 kernel summing to 1: a line through the centre, drawn
        with bilinear weights so that any angle is smooth.
    """
    size = _check_size(size)
    length = float(size if length is None else length)
    if not 0 < length <= size:
        raise NoiseError(f"motion length must be in (0, {size}], got {length}")
    k = np.zeros((size, size), np.float64)
    c = size // 2
    theta = math.radians(float(angle))
    dx, dy = math.cos(theta), -math.sin(theta)
    n = max(2, int(math.ceil(length * 8)))
    for i in range(n):
        t = -length / 2 + (i + 0.5) * length / n
        x, y = c + t * dx, c + t * dy
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
            for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                if 0 <= yy < size and 0 <= xx < size:  # the tips may fall outside: dropped
                    k[yy, xx] += wx * wy
    return (k / k.sum()).astype(np.float32)


def blur(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image of a batch with its own kernel (edges replicated).

    Parameters
    ----------
    images
        ``(batch, channels, H, W)``.
    kernels
        ``(batch, k, k)`` or ``(k, k)`` (one kernel for all), ``k`` odd.

    Returns
    -------
    torch.Tensor
        The blurred batch, same shape as ``images``.
    """
    b, c, h, w = images.shape
    if kernels.ndim == 2:
        kernels = kernels.expand(b, *kernels.shape)
    k = kernels.shape[-1]
    pad = k // 2
    x = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="replicate")
    weight = kernels.to(images).repeat_interleave(c, dim=0)[:, None]
    # conv2d computes a correlation: flip so that this is a true convolution.
    return F.conv2d(x, weight.flip(-1, -2), groups=b * c).reshape(b, c, h, w)


# -- the noise model ----------------------------------------------------------------------------
def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """A random degradation ``clean -> noisy`` (blur, then noise).

    Parameters
    ----------
    kind
        ``"gaussian"``, ``"poisson_gaussian"`` or ``"none"``.
    sigma
        ``(low, high)`` Gaussian (or read-noise) standard deviation on ``[0, 255]``.
    photons
        ``(low, high)`` photons of a pixel of intensity 1 (``"poisson_gaussian"`` only); fewer
        photons mean more shot noise.
    blur
        ``"none"``, ``"gaussian"`` or ``"motion"``.
    blur_size
        Odd side length of the blur kernels.
    blur_sigma
        ``(low, high)`` standard deviation in pixels of Gaussian blur kernels.
    """

    kind: NoiseKind = "gaussian"
    sigma: tuple[float, float] = (0.0, 55.0)
    photons: tuple[float, float] = (10.0, 100.0)
    blur: BlurKind = "none"
    blur_size: int = 9
    blur_sigma: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        if self.kind not in ("gaussian", "poisson_gaussian", "none"):
            raise NoiseError(
                f"unknown noise model {self.kind!r}; use 'gaussian', 'poisson_gaussian' or 'none'"
            )
        if self.blur not in ("none", "gaussian", "motion"):
            raise NoiseError(f"unknown blur {self.blur!r}; use 'none', 'gaussian' or 'motion'")
        for name, (lo, hi), floor in (
            ("sigma", self.sigma, 0.0),
            ("photons", self.photons, 1e-6),
            ("blur_sigma", self.blur_sigma, 1e-6),
        ):
            if not (math.isfinite(lo) and math.isfinite(hi) and floor <= lo <= hi):
                raise NoiseError(
                    f"noise {name} range must satisfy {floor:g} <= low <= high, got ({lo}, {hi})"
                )
        _check_size(self.blur_size)
        if self.kind == "none" and self.blur == "none":
            raise NoiseError("noise model 'none' without blur degrades nothing; choose a noise or a blur")

    @classmethod
    def from_config(cls, config: Any) -> NoiseModel:
        """The noise model described by a :class:`~napari_addunet.engine.training_config.TrainingConfig`."""
        return cls(
            kind=config.noise,
            sigma=(config.sigma_min, config.sigma_max),
            photons=(config.photons_min, config.photons_max),
            blur=config.blur,
            blur_size=config.blur_size,
            blur_sigma=(config.blur_sigma_min, config.blur_sigma_max),
        )

    # -- random draws ---------------------------------------------------------------------------
    def kernels(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """``n`` random blur kernels ``(n, k, k)``, or None without blur."""
        if self.blur == "none":
            return None
        if self.blur == "gaussian":
            lo, hi = self.blur_sigma
            values = _uniform(n, lo, hi, generator).tolist()
            ks = [gaussian_kernel(self.blur_size, s) for s in values]
        else:
            angles = _uniform(n, 0.0, 180.0, generator).tolist()
            ks = [motion_kernel(self.blur_size, a) for a in angles]
        return torch.from_numpy(np.stack(ks))

    def degrade(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Blur (if set) and add noise to a batch of clean images.

        Parameters
        ----------
        clean
            ``(batch, channels, H, W)`` images normalised to ``[0, 1]``, on any device.
        generator
            A CPU ``torch.Generator``; all random numbers are drawn from it (on the CPU) so a
            seed gives the same result on every device.

        Returns
        -------
        torch.Tensor
            The degraded batch (float32, not clipped), on ``clean``'s device.
        """
        return self.degrade_with_levels(clean, generator)[0]

    def degrade_with_levels(
        self, clean: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """As :meth:`degrade` (the same draws), and the levels drawn for each image.

        Returns
        -------
        noisy, sigma, photons
            The degraded batch; each image's Gaussian sigma on ``[0, 255]`` (zeros for
            ``"none"``), and its photons at intensity 1 (``"poisson_gaussian"``; else None).
        """
        b = clean.shape[0]
        x = clean.detach().float().cpu()
        ks = self.kernels(b, generator)
        if ks is not None:
            x = blur(x, ks)
        shape = (b,) + (1,) * (x.ndim - 1)
        photons = sigma = None
        if self.kind == "poisson_gaussian":
            lo, hi = self.photons
            photons = torch.exp(_uniform(b, math.log(lo), math.log(hi), generator)).float()
            x = torch.poisson(x.clamp(min=0) * photons.view(shape), generator=generator) / photons.view(shape)
        if self.kind != "none":
            sigma = _uniform(b, *self.sigma, generator).float()
            x = x + (sigma / 255.0).view(shape) * torch.randn(x.shape, generator=generator)
        return x.to(clean.device), sigma if sigma is not None else torch.zeros(b), photons

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for a checkpoint's metadata."""
        out: dict[str, Any] = {"model": self.kind}
        if self.kind != "none":
            out["sigma_255"] = [self.sigma[0], self.sigma[1]]
            out["blind"] = self.sigma[0] != self.sigma[1]
        if self.kind == "poisson_gaussian":
            out["photons_at_1"] = [self.photons[0], self.photons[1]]
        if self.blur != "none":
            out["blur"] = {"kind": self.blur, "size": self.blur_size}
            if self.blur == "gaussian":
                out["blur"]["sigma_px"] = [self.blur_sigma[0], self.blur_sigma[1]]
        out["scale"] = "images normalised to [0, 1]; sigma given on [0, 255]"
        return out
