"""Widen a trained AddUNet to more channels without changing what it computes.

Usage, from the repository root::

    python scripts/widen_addunet.py IN.safetensors OUT.safetensors --width 112 [--noise 1e-3]

Every feature map of an AddUNet has the same width ``C`` and the maps are added to one another
(``x - r``, ``u + alpha * s``), so one channel map serves them all: new channel ``k`` copies old
channel ``k`` for ``k < C`` and a randomly chosen old channel otherwise. Each convolution copies
its weights along that map, and divides the weights that read a copied channel by the number of
copies, so the sums are the same: the wider network computes the same function (up to float
rounding) and a run can continue from it with more capacity. Copies would stay equal under
gradient descent, so ``--noise`` (relative to each weight tensor's standard deviation) breaks the
tie; 0 keeps the function exactly. The output keeps the input's metadata, and its
``training.transformed`` records this step, so the chain of runs stays complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import napari_addunet as na
from napari_addunet.engine.training import record_transform


def channel_map(old: int, new: int, generator: torch.Generator) -> torch.Tensor:
    """Old channel of every new channel: the first ``old`` are themselves, the rest random."""
    if new < old:
        raise ValueError(f"cannot narrow an AddUNet: width {old} -> {new}")
    extra = torch.randint(0, old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


def widen_addunet(model: nn.Module, width: int, noise: float = 0.0, seed: int = 0) -> nn.Module:
    """A copy of ``model`` (an AddUNet) at ``width`` channels computing the same function.

    Parameters
    ----------
    model
        An ``addunet`` model without batch normalisation.
    width
        The new width, at least the old one.
    noise
        Gaussian noise added to the widened weights, relative to each tensor's standard
        deviation (0: the same function up to rounding).
    seed
        Seeds the channel map and the noise.
    """
    config = model.config
    if model.architecture != "addunet":
        raise ValueError(f"only AddUNet models can be widened, not {model.architecture!r}")
    if config.batch_norm:
        raise ValueError("widening a model with batch normalisation is not supported")
    if model.head is not None:
        raise ValueError("widening a model with a classification head is not supported")
    generator = torch.Generator().manual_seed(seed)
    mapping = channel_map(config.width, width, generator)
    copies = torch.bincount(mapping, minlength=config.width).float()
    wide = na.create_model("addunet", **{**config.to_dict(), "width": width})
    old_modules = dict(model.named_modules())
    with torch.no_grad():
        for name, module in wide.named_modules():
            if not isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                continue
            source = old_modules[name]
            weight = source.weight
            # Conv2d weights are (out, in, ...), ConvTranspose2d weights (in, out, ...).
            out_dim, in_dim = (1, 0) if isinstance(module, nn.ConvTranspose2d) else (0, 1)
            if weight.shape[out_dim] == config.width:
                weight = weight.index_select(out_dim, mapping)
            if weight.shape[in_dim] == config.width:
                weight = weight.index_select(in_dim, mapping)
                shape = [1] * weight.dim()
                shape[in_dim] = width
                weight = weight / copies[mapping].view(shape)
            module.weight.copy_(weight)
            if module.bias is not None:
                bias = source.bias
                module.bias.copy_(bias.index_select(0, mapping) if bias.shape[0] == config.width else bias)
            if noise:
                for p in (module.weight, module.bias):
                    if p is not None and p.numel() > 1:
                        p.add_(noise * p.std() * torch.randn(p.shape, generator=generator))
        wide.beta.copy_(model.beta)
    wide.metadata = dict(model.metadata)
    return wide.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--noise", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model = na.load_model(args.source)
    old_width = getattr(model.config, "width", None)
    try:
        wide = widen_addunet(model, args.width, args.noise, args.seed)
    except ValueError as exc:
        ap.error(str(exc))
    metadata = record_transform(
        wide.metadata,
        {
            "command": f"python scripts/widen_addunet.py {args.source.name} {args.dest.name} "
            f"--width {args.width} --noise {args.noise} --seed {args.seed}",
            "from_width": old_width,
            "to_width": args.width,
        },
    )
    wide.metadata = {}
    na.save_model(wide, args.dest, overwrite=False, **metadata)
    print(f"wrote {args.dest}: width {old_width} -> {args.width}, noise {args.noise}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
