"""Base class shared by every architecture: input checks, padding, the optional head."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ClassificationHead
from .config import ModelConfig
from .outputs import ModelOutput


class InputShapeError(ValueError):
    """The tensor given to a model does not have the shape it needs."""


class DenoiserModel(nn.Module):
    """A denoising network with an optional classification head.

    Subclasses implement :meth:`forward_features`, which receives an input already
    padded to a multiple of :attr:`size_multiple` and returns the restored image and
    the deep feature map the classification head reads. ``forward`` accepts any
    image size: it pads (reflecting the border), runs the network, and crops back.

    Attributes
    ----------
    config
        The validated architecture configuration.
    metadata
        Free-form information saved with the model: ``normalization``, ``class_names``,
        ``training`` and anything else a user adds.
    size_multiple
        Height and width are padded to a multiple of this before the network runs.
    """

    architecture: ClassVar[str] = ""
    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.metadata: dict[str, Any] = {}
        self.size_multiple = 1
        self.head: ClassificationHead | None = None

    # -- helpers for subclasses ------------------------------------------------------------
    def _make_head(self, features: int) -> None:
        cfg = self.config
        if cfg.num_classes > 0:
            self.head = ClassificationHead(features, cfg.num_classes, cfg.head_hidden, cfg.head_dropout)

    # -- properties --------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def out_channels(self) -> int:
        return self.config.output_channels

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def class_names(self) -> list[str]:
        """Class names from the metadata, or ``class_0 ...`` when none were given."""
        names = self.metadata.get("class_names")
        if names:
            return list(names)
        return [f"class_{i}" for i in range(self.num_classes)]

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- input handling ------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputShapeError` unless ``x`` is ``(batch, in_channels, H, W)``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.architecture} expects a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise InputShapeError(
                f"{self.architecture} expects a 4-D tensor (batch, channels, height, width), "
                f"got shape {tuple(x.shape)}; for a single 2-D image use x[None, None]"
            )
        if x.shape[1] != self.in_channels:
            raise InputShapeError(
                f"{self.architecture} was built for {self.in_channels} input channel(s) but got "
                f"{x.shape[1]} (input shape {tuple(x.shape)}); expected "
                f"(batch, {self.in_channels}, height, width)"
            )
        if x.shape[2] < 1 or x.shape[3] < 1 or x.shape[0] < 1:
            raise InputShapeError(f"{self.architecture} got an empty tensor of shape {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise InputShapeError(f"{self.architecture} expects a floating-point tensor, got {x.dtype}")

    def pad_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Pad height and width up to :attr:`size_multiple`; return the padded tensor and the size."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return x, (h, w)

    @staticmethod
    def crop_output(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return y[..., : size[0], : size[1]]

    # -- forward ----------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network on a padded input; return ``(image, deep_features)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Denoise a batch ``(batch, in_channels, H, W)`` of any height and width."""
        self.check_input(x)
        xp, size = self.pad_input(x)
        image, features = self.forward_features(xp)
        logits = self.head(features) if self.head is not None else None
        return ModelOutput(self.crop_output(image, size), logits)

    def extra_repr(self) -> str:
        return f"architecture={self.architecture!r}"
