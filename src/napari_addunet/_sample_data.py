"""Sample data: noisy/clean image pairs made on the spot.

Nothing here downloads anything or imports torch, napari or Qt: the arrays come from
scikit-image's bundled camera image and from a seeded numpy generator, so the samples
open offline and fast. ``make_noisy_camera`` and ``make_noisy_stack`` return plain
arrays for scripts and tests; ``noisy_2d`` and ``noisy_3d`` wrap them as napari layer
data for the sample-data menu (see ``napari.yaml``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LayerData = tuple[np.ndarray, dict[str, Any], str]

#: Standard deviation of the Gaussian noise of the 2D sample, on the [0, 1] scale
#: (sigma = 25 on [0, 255], as in the denoising literature).
CAMERA_SIGMA = 25.0 / 255.0
#: Shape (z, y, x) of the synthetic 3D stack.
STACK_SHAPE = (32, 128, 128)
#: Physical voxel spacing (z, y, x) of the stack, relative to the lateral pixel size.
STACK_SCALE = (2.0, 1.0, 1.0)
#: Expected photon count at intensity 1.0 (Poisson part of the 3D noise).
STACK_PHOTONS = 30.0
#: Standard deviation of the additive Gaussian read noise of the 3D sample.
STACK_READ_NOISE = 0.02
#: Seed of every random draw here, so that the samples are the same on every run.
SEED = 0


def make_noisy_camera(sigma: float = CAMERA_SIGMA, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(noisy, clean)``: scikit-image's camera in [0, 1] with additive Gaussian noise.

    Both are float32 arrays of shape (512, 512). The noisy image is not clipped, so the
    noise is exactly Gaussian with standard deviation ``sigma``.
    """
    from skimage import data

    clean = data.camera().astype(np.float32) / np.float32(255.0)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, sigma, size=clean.shape).astype(np.float32)
    return clean + noise, clean


def make_clean_stack(shape: tuple[int, int, int] = STACK_SHAPE, seed: int = SEED) -> np.ndarray:
    """Return a microscopy-like float32 volume (z, y, x) in [0, 1]: nuclei-like blobs and filaments.

    The volume is blurred by an anisotropic Gaussian point-spread function (wider along z),
    as a widefield or confocal stack would be.
    """
    from scipy import ndimage

    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes of at least 8 (z, y, x), got {shape!r}")
    rng = np.random.default_rng(seed)
    dims = np.asarray(shape, dtype=np.float64)

    blobs = _blobs(shape, rng, count=max(4, int(np.prod(dims) / 25_000)))
    filaments = _filaments(shape, rng, count=max(3, int(dims[1:].mean() / 12)))

    volume = 0.04 + 0.45 * blobs + 0.9 * filaments
    volume = ndimage.gaussian_filter(volume, sigma=(1.2, 0.8, 0.8), mode="nearest")
    volume -= volume.min()
    volume /= volume.max()
    return (0.03 + 0.97 * volume).astype(np.float32)


def make_noisy_stack(
    shape: tuple[int, int, int] = STACK_SHAPE,
    photons: float = STACK_PHOTONS,
    read_noise: float = STACK_READ_NOISE,
    seed: int = SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(noisy, clean)`` float32 volumes with Poisson-Gaussian noise.

    ``noisy = Poisson(photons * clean) / photons + N(0, read_noise**2)``, so the noise
    variance at a voxel is ``clean / photons + read_noise**2``.
    """
    if photons <= 0:
        raise ValueError(f"photons must be positive, got {photons!r}")
    if read_noise < 0:
        raise ValueError(f"read_noise must be non-negative, got {read_noise!r}")
    clean = make_clean_stack(shape, seed=seed)
    rng = np.random.default_rng(seed + 1)
    shot = rng.poisson(clean.astype(np.float64) * photons) / photons
    read = rng.normal(0.0, read_noise, size=clean.shape)
    return (shot + read).astype(np.float32), clean


def noisy_2d() -> list[LayerData]:
    """napari sample: camera with Gaussian noise (sigma 25/255) and its clean original."""
    noisy, clean = make_noisy_camera()
    noise = {"model": "gaussian", "sigma": CAMERA_SIGMA, "seed": SEED}
    common = {"colormap": "gray", "contrast_limits": (0.0, 1.0)}
    return [
        (clean, {"name": "camera [clean]", **common, "metadata": {"role": "clean"}}, "image"),
        (noisy, {"name": "camera [noisy]", **common, "metadata": {"role": "noisy", "noise": noise}}, "image"),
    ]


def noisy_3d() -> list[LayerData]:
    """napari sample: a synthetic microscopy stack with Poisson-Gaussian noise, and the clean stack."""
    noisy, clean = make_noisy_stack()
    noise = {
        "model": "poisson-gaussian",
        "photons": STACK_PHOTONS,
        "read_noise": STACK_READ_NOISE,
        "seed": SEED,
    }
    common = {"colormap": "gray", "contrast_limits": (0.0, 1.0), "scale": STACK_SCALE}
    return [
        (clean, {"name": "stack [clean]", **common, "metadata": {"role": "clean"}}, "image"),
        (noisy, {"name": "stack [noisy]", **common, "metadata": {"role": "noisy", "noise": noise}}, "image"),
    ]


def _blobs(shape: tuple[int, int, int], rng: np.random.Generator, count: int) -> np.ndarray:
    """Soft-edged ellipsoids with a little internal texture, like stained nuclei."""
    z, y, x = (np.arange(n, dtype=np.float32) for n in shape)
    z, y, x = z[:, None, None], y[None, :, None], x[None, None, :]
    out = np.zeros(shape, dtype=np.float32)
    lateral = min(shape[1:])
    for _ in range(count):
        cz, cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(0, shape[2])
        ry, rx = rng.uniform(0.05, 0.11, size=2) * lateral
        rz = rng.uniform(0.5, 0.9) * min(ry, rx) / 2.0  # flatter along z, as z is coarser
        radius = np.sqrt(((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
        brightness = rng.uniform(0.5, 1.0)
        # A smooth step at radius 1 and a dimmer centre (a nucleolus-like dip).
        shell = 1.0 / (1.0 + np.exp((radius - 1.0) * 8.0))
        out += brightness * shell * (1.0 - 0.35 * np.exp(-((radius / 0.35) ** 2)))
    return np.clip(out, 0.0, 1.0)


def _filaments(shape: tuple[int, int, int], rng: np.random.Generator, count: int) -> np.ndarray:
    """Thin smooth curves (random walks of the direction), like microtubules or neurites."""
    from scipy import ndimage

    dims = np.asarray(shape, dtype=np.float64)
    anisotropy = np.array([0.25, 1.0, 1.0])  # filaments run mostly in the xy plane
    steps = int(2.0 * dims[1:].max())
    position = rng.uniform(0.0, 1.0, size=(count, 3)) * dims
    direction = rng.normal(size=(count, 3)) * anisotropy
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    points = np.empty((steps, count, 3))
    for i in range(steps):
        direction += rng.normal(scale=0.06, size=(count, 3)) * anisotropy
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        position = position + 0.5 * direction
        points[i] = position
    index = np.rint(points.reshape(-1, 3)).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.asarray(shape)), axis=1)
    index = index[inside]
    out = np.zeros(shape, dtype=np.float32)
    np.add.at(out, (index[:, 0], index[:, 1], index[:, 2]), 1.0)
    out = ndimage.gaussian_filter(out, sigma=(0.6, 0.9, 0.9))
    peak = np.percentile(out[out > 0], 99) if np.any(out > 0) else 1.0
    return np.clip(out / peak, 0.0, 1.0)
