"""Receptive field of a model, computed from its real layers.

The model's image path (``forward_features``) is traced with ``torch.fx`` and the
notebook's formula is propagated along the graph::

    r_0 = 1,    r_l = r_{l-1} + (k_l - 1) * prod(s_1 .. s_l)

where ``k_l`` is a layer's (dilated) kernel size and ``s_l`` its stride. Up-sampling divides
the running stride product; where paths merge (skip additions or concatenations) the largest
receptive field wins. For stride-1 networks this is the exact receptive field; with strides
it is the notebook's convention, which counts the current layer's stride and so errs on the
large side.
"""

from __future__ import annotations

import math
import operator
import os
from typing import Any

import torch
import torch.fx
from torch import nn

_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
_UPS = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
_GLOBAL = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class _ImagePath(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)[0]


def _pair(v: Any) -> int:
    if isinstance(v, (tuple, list)):
        return int(max(v))
    return int(v)


def _scale_of(args: tuple, kwargs: dict) -> float:
    scale = kwargs.get("scale_factor")
    if scale is None and len(args) > 2:
        scale = args[2]
    if scale is None:
        return 1.0
    return float(max(scale)) if isinstance(scale, (tuple, list)) else float(scale)


def receptive_field(model: nn.Module | str | os.PathLike) -> int:
    """Receptive field (pixels along one axis) of a model's image output.

    Parameters
    ----------
    model
        A model from :func:`napari_addunet.create_model` (anything with ``forward_features``),
        a ``.safetensors`` file or a bundled model's name.

    Returns
    -------
    int
        The side of the square input region one output pixel depends on.

    Examples
    --------
    Three 3x3 stride-1 convolutions give ``1 + 3 * 2 = 7``.
    """
    from .checkpoint import resolve_module

    model = resolve_module(model)
    target = _ImagePath(model) if hasattr(model, "forward_features") else model
    # traced with gradients on: without them the models sum in place (``v.add_(u)``), which the
    # tracer records as a node nobody uses, and a whole branch would drop out of the graph
    with torch.enable_grad():
        graph = torch.fx.symbolic_trace(target).graph
    modules = dict(target.named_modules())
    state: dict[torch.fx.Node, tuple[float, float]] = {}  # node -> (receptive field, stride product)

    def inputs(node: torch.fx.Node) -> list[tuple[float, float]]:
        found: list[tuple[float, float]] = []

        def visit(a: Any) -> None:
            if isinstance(a, torch.fx.Node) and a in state:
                found.append(state[a])

        torch.fx.map_arg((node.args, node.kwargs), visit)
        return found

    def merged(node: torch.fx.Node) -> tuple[float, float] | None:
        ins = inputs(node)
        if not ins:
            return None
        return max(r for r, _ in ins), min(j for _, j in ins)

    result = None
    for node in graph.nodes:
        if node.op == "placeholder":
            state[node] = (1.0, 1.0)
            continue
        if node.op == "output":
            result = merged(node)
            continue
        base = merged(node)
        if base is None:
            continue
        r, j = base
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
                k = (_pair(mod.kernel_size) - 1) * _pair(mod.dilation) + 1
                j = j * _pair(mod.stride)
                r = r + (k - 1) * j
            elif isinstance(mod, _POOLS):
                j = j * _pair(mod.stride if mod.stride is not None else mod.kernel_size)
                r = r + (_pair(mod.kernel_size) - 1) * j
            elif isinstance(mod, (nn.ConvTranspose2d, nn.ConvTranspose1d, nn.ConvTranspose3d)):
                s = _pair(mod.stride)
                taps = math.ceil(_pair(mod.kernel_size) / s)
                r = r + (taps - 1) * j
                j = j / s
            elif isinstance(mod, _UPS):
                if mod.scale_factor is None:
                    raise ValueError(
                        f"{type(mod).__name__} to a fixed size has no fixed scale: the receptive "
                        "field depends on the input size"
                    )
                s = float(
                    mod.scale_factor if not isinstance(mod.scale_factor, tuple) else max(mod.scale_factor)
                )
                if mod.mode != "nearest":
                    r = r + j
                j = j / s
            elif isinstance(mod, _GLOBAL):
                r = math.inf
        elif node.op == "call_function" and node.target in (torch.nn.functional.interpolate,):
            mode = node.kwargs.get("mode", "nearest")
            if mode != "nearest":
                r = r + j
            j = j / _scale_of(node.args, node.kwargs)
        elif node.op == "call_function" and node.target in (
            torch.nn.functional.max_pool2d,
            torch.nn.functional.avg_pool2d,
        ):
            k = _pair(node.args[1] if len(node.args) > 1 else node.kwargs["kernel_size"])
            s = node.args[2] if len(node.args) > 2 else node.kwargs.get("stride")
            j = j * _pair(s if s is not None else k)
            r = r + (k - 1) * j
        elif node.op == "call_function" and node.target in (operator.getitem,):
            pass
        state[node] = (r, j)
    if result is None:
        raise ValueError("could not follow the model's image path to compute its receptive field")
    if not math.isfinite(result[0]):
        raise ValueError("the receptive field is the whole image (global pooling on the image path)")
    return int(round(result[0]))
