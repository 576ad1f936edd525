"""Deepen a trained AddUNet (more convolutions per level) without changing what it computes.

Usage, from the repository root::

    python scripts/deepen_addunet.py IN.safetensors OUT.safetensors --level-convs 2,4,4,4 [--noise 1e-3]

A new convolution is inserted as an identity (a centred unit kernel per channel, zero bias)
followed by a ReLU, right after a convolution + ReLU of the same level: its input is already
non-negative, so the ReLU changes nothing and the deeper network computes the same function (up
to float rounding). The deeper levels of a multi-scale AddUNet run at 1/4, 1/16, ... of the
pixels, so capacity added there is cheap per pixel. ``--noise`` (relative to the standard
deviation of the level's own weights) moves the new convolutions off the identity; 0 keeps the
function exactly. The output keeps the input's metadata, and its ``training.transformed``
records this step, so the chain of runs stays complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import napari_addunet as na
from napari_addunet.engine.training import record_transform


def _first_relu_index(block: nn.Sequential) -> int | None:
    """Index of the first convolution + ReLU block of a level, whose output is non-negative."""
    for index, layer in enumerate(block):
        if isinstance(layer, nn.Sequential) and isinstance(layer[-1], nn.ReLU):
            return index
    return None


def _deepen_block(old: nn.Sequential, new: nn.Sequential, noise: float, generator: torch.Generator) -> None:
    """Fill ``new`` (longer) with ``old``'s layers and identities inserted after its first ReLU."""
    extra = len(new) - len(old)
    if not extra:
        new.load_state_dict(old.state_dict())
        return
    at = _first_relu_index(old)
    if at is None:
        raise ValueError("a level whose convolutions end without a ReLU cannot be deepened as an identity")
    for index, layer in enumerate(new):
        if at < index <= at + extra:
            convolution = layer[0]
            nn.init.dirac_(convolution.weight)
            nn.init.zeros_(convolution.bias)
            if noise:
                scale = noise * old[at][0].weight.std()
                convolution.weight.add_(scale * torch.randn(convolution.weight.shape, generator=generator))
            continue
        layer.load_state_dict(old[index - extra if index > at + extra else index].state_dict())


def deepen_addunet(
    model: nn.Module, level_convs: tuple[int, ...], noise: float = 0.0, seed: int = 0
) -> nn.Module:
    """A copy of ``model`` (an AddUNet) with ``level_convs`` convolutions per level, same function.

    Parameters
    ----------
    model
        An ``addunet`` model without batch normalisation.
    level_convs
        Convolutions per level, shallow to deep, each at least the model's own.
    noise
        Gaussian noise added to the new convolutions' weights, relative to the standard
        deviation of the convolution they follow (0: the same function up to rounding).
    seed
        Seeds the noise.
    """
    if model.architecture != "addunet":
        raise ValueError(f"only AddUNet models can be deepened, not {model.architecture!r}")
    config = model.config
    if config.batch_norm:
        raise ValueError("deepening a model with batch normalisation is not supported")
    level_convs = tuple(int(n) for n in level_convs)
    if len(level_convs) != config.depth:
        raise ValueError(f"the model has {config.depth} levels, got {len(level_convs)} counts: {level_convs}")
    for level, (old, new) in enumerate(zip(config.convs, level_convs, strict=True)):
        if new < old:
            raise ValueError(f"cannot make level {level} shallower: {old} -> {new} convolutions")
    deep = na.create_model("addunet", **{**config.to_dict(), "level_convs": level_convs})
    generator = torch.Generator().manual_seed(seed)
    levels = ("encoders.", "decoders.")  # filled block by block; the rest is copied as it is
    with torch.no_grad():
        for part in ("encoders", "decoders"):
            for old_block, new_block in zip(getattr(model, part), getattr(deep, part), strict=True):
                _deepen_block(old_block, new_block, noise, generator)
        rest = {key: value for key, value in model.state_dict().items() if not key.startswith(levels)}
        missing, unexpected = deep.load_state_dict(rest, strict=False)
        left = [key for key in missing if not key.startswith(levels)]
        if left or unexpected:
            raise RuntimeError(f"parameters did not carry over: missing {left}, unexpected {unexpected}")
    deep.metadata = dict(model.metadata)
    return deep.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--level-convs", required=True, help="convolutions per level, shallow to deep: 2,4,4,4")
    ap.add_argument("--noise", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        counts = tuple(int(v) for v in args.level_convs.split(","))
    except ValueError:
        ap.error(f"--level-convs must be integers separated by commas, got {args.level_convs!r}")
    model = na.load_model(args.source)
    before = tuple(model.config.convs) if model.architecture == "addunet" else None
    try:
        deep = deepen_addunet(model, counts, args.noise, args.seed)
    except ValueError as exc:
        ap.error(str(exc))
    metadata = record_transform(
        deep.metadata,
        {
            "command": f"python scripts/deepen_addunet.py {args.source.name} {args.dest.name} "
            f"--level-convs {args.level_convs} --noise {args.noise} --seed {args.seed}",
            "from_level_convs": list(before),
            "to_level_convs": list(counts),
        },
    )
    deep.metadata = {}
    na.save_model(deep, args.dest, overwrite=False, **metadata)
    print(f"wrote {args.dest}: convolutions per level {before} -> {counts}, noise {args.noise}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
