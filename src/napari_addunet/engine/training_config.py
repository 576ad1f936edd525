"""The typed, bounded settings of a training run.

Declared with the same :func:`~napari_addunet.models.config.setting` machinery as the
model configs, so that validation, command-line help and the Train widget's form read one
source of truth (``TrainingConfig.describe()``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from napari_addunet.models.config import ConfigError, ModelConfig, _check_field, check_known, setting


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Settings of a training run (frozen; build variants with :meth:`replace`).

    The data decide the mode: clean images train a supervised denoiser on synthetic noise
    (``noise``, ``sigma_*``, ``photons_*``, ``blur*``), noisy images alone train with blind
    spots (``mask_fraction``, ``mask_radius``), pairs train input -> target. Any mode adds
    ``lambda_cls`` times the cross-entropy of the classification head when labels are given;
    ``denoise_weight`` scales the denoising loss, and 0 trains the classifier alone.
    """

    architecture: ClassVar[str] = "training"  # prefix of validation messages

    epochs: int = setting(10, ge=1, le=100_000, doc="passes of steps_per_epoch steps; validation after each")
    steps_per_epoch: int = setting(100, ge=1, le=1_000_000, doc="optimizer steps per epoch")
    batch_size: int = setting(16, ge=1, le=4096, doc="patches per step (per process with torchrun)")
    patch_size: int = setting(64, ge=8, le=4096, doc="side of the square training patches, in pixels")
    lr: float = setting(1e-3, ge=1e-7, le=1.0, doc="peak learning rate of AdamW")
    weight_decay: float = setting(
        1e-4, ge=0.0, le=1.0, doc="AdamW weight decay (weights only, not biases/gates)"
    )
    warmup_steps: int = setting(100, ge=0, le=10_000_000, doc="linear learning-rate warm-up from 0")
    schedule: Literal["cosine", "constant"] = setting("cosine", doc="learning rate after the warm-up")
    final_lr_fraction: float = setting(
        0.01, ge=0.0, le=1.0, doc="cosine: last learning rate as a fraction of lr"
    )
    grad_clip: float = setting(1.0, ge=0.0, le=1e6, doc="clip the gradient norm to this (0: off)")
    ema_decay: float = setting(
        0.0,
        ge=0.0,
        le=0.9999,
        doc="validate and save an exponential moving average of the weights with this decay "
        "(0.999: about the last 1,000 steps; 0: off, the trained weights themselves)",
    )
    augment: bool = setting(
        True, doc="random flips and 90-degree rotations of patches (off if orientation defines a class)"
    )
    loss: Literal["mse", "l1", "log_mse"] = setting(
        "mse",
        doc="denoising loss; log_mse: the mean over patches of 10 log10(MSE + 1e-6), so that every "
        "patch counts by its PSNR in dB rather than its squared error (weighs low noise more)",
    )
    denoise_weight: float = setting(
        1.0, ge=0.0, le=1000.0, doc="weight of the denoising loss (0: classification only)"
    )
    lambda_cls: float = setting(
        0.0,
        ge=0.0,
        le=1000.0,
        doc="weight lambda of the classification loss (L = denoise_weight L_den + lambda L_cls)",
    )
    noise: Literal["gaussian", "poisson_gaussian", "none"] = setting(
        "gaussian", doc="synthetic noise added to clean images"
    )
    sigma_min: float = setting(0.0, ge=0.0, le=255.0, doc="lowest Gaussian (read) noise sigma, on [0, 255]")
    sigma_max: float = setting(55.0, ge=0.0, le=255.0, doc="highest Gaussian (read) noise sigma, on [0, 255]")
    photons_min: float = setting(10.0, ge=0.01, le=1e7, doc="poisson_gaussian: fewest photons at intensity 1")
    photons_max: float = setting(100.0, ge=0.01, le=1e7, doc="poisson_gaussian: most photons at intensity 1")
    blur: Literal["none", "gaussian", "motion"] = setting("none", doc="blur applied before the noise")
    blur_size: int = setting(9, ge=3, le=31, doc="side of the blur kernels (odd)")
    blur_sigma_min: float = setting(0.5, ge=0.05, le=20.0, doc="Gaussian blur: smallest sigma in pixels")
    blur_sigma_max: float = setting(2.0, ge=0.05, le=20.0, doc="Gaussian blur: largest sigma in pixels")
    mask_fraction: float = setting(
        0.02, ge=1e-4, le=0.25, doc="noisy-only (blind-spot): fraction of masked pixels"
    )
    mask_radius: int = setting(
        2, ge=1, le=16, doc="noisy-only (blind-spot): radius of the replacement window"
    )
    val_fraction: float = setting(0.1, ge=0.0, le=0.9, doc="fraction of images held out for validation")
    val_patches: int = setting(
        64, ge=1, le=100_000, doc="fixed validation patches drawn from held-out images"
    )
    patience: int = setting(
        0, ge=0, le=100_000, doc="stop after this many epochs without improvement (0: off)"
    )
    seed: int = setting(0, ge=0, le=2**31 - 1, doc="seed of every random draw (weights, patches, noise)")
    val_seed: int = setting(
        -1,
        ge=-1,
        le=2**31 - 1,
        doc="seed of the held-out split and of the validation patches and their noise (-1: seed); "
        "fix it to compare runs of other seeds on the same validation",
    )
    device: str = setting("auto", doc="auto, cpu, cuda, cuda:N or mps")
    amp: bool = setting(True, doc="automatic mixed precision (float16) on CUDA; ignored elsewhere")
    cpu_bf16: bool = setting(
        False,
        doc="bfloat16 mixed precision on the CPU: about twice as fast where the CPU computes bfloat16 "
        "natively (AVX512-BF16 or AMX); refused on CPUs without it",
    )

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hints[f.name] is str:
                if not isinstance(value, str):
                    raise ConfigError(f"training.{f.name} must be a string, got {value!r}")
                continue
            object.__setattr__(self, f.name, _check_field(type(self), f, hints[f.name], value))
        self.check()

    def check(self) -> None:
        """Cross-field validation."""
        for low, high in (
            ("sigma_min", "sigma_max"),
            ("photons_min", "photons_max"),
            ("blur_sigma_min", "blur_sigma_max"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo > hi:
                raise ConfigError(f"training.{low} ({lo}) must not exceed training.{high} ({hi})")
        if self.blur_size % 2 == 0:
            raise ConfigError(f"training.blur_size must be odd, got {self.blur_size}")
        if self.mask_radius >= self.patch_size // 2:
            raise ConfigError(
                f"training.mask_radius ({self.mask_radius}) must be smaller than half the patch "
                f"({self.patch_size} px)"
            )
        if self.noise == "none" and self.blur == "none":
            raise ConfigError("training.noise 'none' needs a blur, otherwise clean images are not degraded")
        if self.denoise_weight == 0 and self.lambda_cls == 0:
            raise ConfigError(
                "training.denoise_weight and training.lambda_cls are both 0: nothing would be "
                "learned; set denoise_weight > 0 (denoising) or lambda_cls > 0 with labels "
                "(classification)"
            )

    # -- derived --------------------------------------------------------------------------------
    @property
    def validation_seed(self) -> int:
        """The seed of the held-out split and the validation patches."""
        return self.seed if self.val_seed < 0 else self.val_seed

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run."""
        return self.epochs * self.steps_per_epoch

    # -- conversion (shared with the model configs) ----------------------------------------------
    field_names = classmethod(ModelConfig.field_names.__func__)
    describe = classmethod(ModelConfig.describe.__func__)
    to_dict = ModelConfig.to_dict

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> TrainingConfig:
        """A validated config from a mapping and keyword overrides.

        Raises
        ------
        ConfigError
            For an unknown setting (with the closest valid names) or an invalid value.
        """
        merged = {**(values or {}), **overrides}
        check_known(merged, cls.field_names(), "training setting {key!r}")
        return cls(**merged)

    def replace(self, **changes: Any) -> TrainingConfig:
        """A validated copy with some settings changed."""
        return type(self).from_dict(self.to_dict(), **changes)


def lr_at(config: TrainingConfig, step: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine or constant.

    A pure function of the step, so a resumed run continues the schedule exactly.
    """
    base = config.lr
    if config.warmup_steps and step < config.warmup_steps:
        return base * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return base
    import math

    span = max(1, config.total_steps - config.warmup_steps)
    progress = min(1.0, max(0.0, (step - config.warmup_steps) / span))
    floor = config.final_lr_fraction
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
