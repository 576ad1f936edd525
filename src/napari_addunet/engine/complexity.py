"""Cost of a model: multiply-accumulates per pixel, counted on its real layers."""

from __future__ import annotations

import torch
from torch import nn


def macs_per_pixel(model: nn.Module | str, size: int = 128) -> float:
    """Multiply-accumulates per input pixel of one forward pass (convolutions and linear layers).

    Parameters
    ----------
    model
        A model taking ``(1, in_channels, size, size)``, a ``.safetensors`` file or a bundled
        model's name.
    size
        Side of the square test input (rounded up to the model's ``size_multiple``).

    Notes
    -----
    Counts the architecture's layers on a whole-map pass (run with gradients on, as a
    no-gradient pass may compute large maps in bands of rows without calling the layer
    modules); banded inference recomputes a few rows of context per band on top of this.
    """
    from .checkpoint import resolve_module

    model = resolve_module(model)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    multiple = getattr(model, "size_multiple", 1)
    size += (-size) % multiple
    total = 0

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            inp = _inputs[0]
            total += inp.numel() * (module.out_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    in_ch = model.in_channels if hasattr(model, "in_channels") else 1
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():  # the whole-map pass, which calls every layer module
            model(torch.zeros(1, in_ch, size, size, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total / (size * size)
