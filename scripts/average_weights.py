"""Average the weights of several trained runs of one network (a uniform "model soup").

Usage, from the repository root::

    python scripts/average_weights.py A.safetensors B.safetensors [C.safetensors ...] -o OUT.safetensors

Runs that start from one another (a restarted schedule from earlier weights) stay in one basin
of the loss, where the average of their weights can score above each of them; score the result
with ``scripts/compare_on_split.py`` before using it. Every input must be the same architecture
with the same configuration. The output keeps the last input's metadata; its
``training.transformed`` records the command and each input's training record, so the lineage
stays complete. Floating-point tensors are averaged in float64; integer buffers must agree.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

import napari_addunet as na
from napari_addunet.engine.training import earlier_training, record_transform


def average_models(models: Sequence[nn.Module], weights: Sequence[float] | None = None) -> nn.Module:
    """A new model whose floating-point tensors are the weighted mean of ``models``'.

    Parameters
    ----------
    models
        Two or more models of one architecture and configuration.
    weights
        One non-negative weight per model (normalised to sum 1); equal weights if None.

    Raises
    ------
    ValueError
        Fewer than two models, architectures or configurations that differ, bad weights, or
        integer buffers that differ.
    """
    if len(models) < 2:
        raise ValueError(f"averaging needs at least two models, got {len(models)}")
    first = models[0]
    for index, other in enumerate(models[1:], start=1):
        if other.architecture != first.architecture:
            raise ValueError(
                f"model {index} is {other.architecture!r}, model 0 is {first.architecture!r}: "
                "only runs of one network can be averaged"
            )
        if other.config.to_dict() != first.config.to_dict():
            changed = sorted(
                key
                for key, value in other.config.to_dict().items()
                if first.config.to_dict().get(key) != value
            )
            raise ValueError(f"model {index}'s configuration differs from model 0's in: {', '.join(changed)}")
    if weights is None:
        weights = [1.0] * len(models)
    weights = [float(w) for w in weights]
    if len(weights) != len(models):
        raise ValueError(f"{len(models)} models but {len(weights)} weights")
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative numbers with a positive sum, got {weights}")
    total = sum(weights)
    states = [m.state_dict() for m in models]
    averaged: dict[str, torch.Tensor] = {}
    for key, reference in states[0].items():
        if reference.is_floating_point():
            acc = torch.zeros(reference.shape, dtype=torch.float64)
            for w, state in zip(weights, states, strict=True):
                acc += (w / total) * state[key].detach().to(torch.float64)
            averaged[key] = acc.to(reference.dtype)
        else:
            if any(not torch.equal(state[key], reference) for state in states[1:]):
                raise ValueError(f"integer tensor {key!r} differs between the models; it cannot be averaged")
            averaged[key] = reference.clone()
    out = na.create_model(first.architecture, **first.config.to_dict())
    out.load_state_dict(averaged)
    out.metadata = dict(models[-1].metadata)
    return out.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", type=Path, nargs="+")
    ap.add_argument("--output", "-o", type=Path, required=True)
    ap.add_argument("--weights", type=float, nargs="+", help="one weight per input (default: equal)")
    args = ap.parse_args(argv)
    if len(args.sources) < 2:
        ap.error("give at least two model files to average")
    resolved = {s.resolve() for s in args.sources}
    if args.output.resolve() in resolved:
        ap.error(f"the output {args.output} is one of the inputs; write to a new file")
    if args.output.exists():
        ap.error(f"{args.output} exists; choose a new name (no model file is overwritten)")
    missing = [str(s) for s in args.sources if not s.is_file()]
    if missing:
        ap.error(f"no such model file: {', '.join(missing)}")
    models = [na.load_model(s) for s in args.sources]
    try:
        averaged = average_models(models, args.weights)
    except ValueError as exc:
        ap.error(str(exc))
    weights = args.weights or [1.0] * len(models)
    metadata = record_transform(
        averaged.metadata,
        {
            "command": "python scripts/average_weights.py "
            + " ".join(s.name for s in args.sources)
            + (" --weights " + " ".join(f"{w:g}" for w in args.weights) if args.weights else "")
            + f" -o {args.output.name}",
            "averaged": [
                {"file": s.name, "weight": w, "training": earlier_training(m.metadata)}
                for s, w, m in zip(args.sources, weights, models, strict=True)
            ],
        },
    )
    averaged.metadata = {}
    na.save_model(averaged, args.output, overwrite=False, **metadata)
    print(f"wrote {args.output}: the average of {len(models)} models, weights {weights}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
