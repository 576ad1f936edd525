"""Turn a trained denoiser into the bundled model: usage metadata and a self-check.

Usage, from the repository root::

    python scripts/finalize_weights.py training/step5/ms-real-c64.safetensors \
        src/napari_addunet/weights/addunet-gray-blind.safetensors [--started-from EARLIER.safetensors]

Copies the weights and the training metadata (data, noise range, steps, time, command), sets
percentile normalisation (so that the model works on any dtype and range; the benchmark
protocol bypasses it and feeds [0, 1] images), refuses metadata that names a machine path,
refuses a model that does not beat the noisy input,
and records ``self_check``: the protocol's PSNR on a crop of scikit-image's camera at sigma
15, 25 and 50, which ``tests/core/test_bundled_models.py`` recomputes. ``--started-from``
names the weights the earliest recorded run started from, for runs whose metadata does not
record them (the training loop records them itself since it learned to, but a run started from
weights made before then records that run without its own origin): it completes the chain of
``training.started_from`` records at its end. ``--weights-dtype float16`` stores the weights at
half the size (they load as float32).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import napari_addunet as na
from napari_addunet.engine.checkpoint import STORAGE_DTYPES, local_paths, round_weights
from napari_addunet.engine.evaluation import self_check
from napari_addunet.engine.training import earlier_training


def attach_origin(training: dict, earlier: dict) -> int:
    """Set ``earlier`` as the origin of the last record in ``training``'s ``started_from`` chain.

    Copies the records it walks through (the caller's dicts are not changed) and returns the
    depth at which ``earlier`` was attached (1: the run itself started from it).
    """
    depth, record = 1, training
    while isinstance(record.get("started_from"), dict):
        record["started_from"] = dict(record["started_from"])
        record, depth = record["started_from"], depth + 1
    record["started_from"] = earlier
    return depth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--started-from", type=Path, help="the weights the run started from")
    ap.add_argument(
        "--weights-dtype",
        choices=sorted(STORAGE_DTYPES),
        default="float32",
        help="store the weights at this precision (float16: half the file); the self-check is "
        "measured on the rounded weights, so it holds for the file",
    )
    args = ap.parse_args(argv)
    source, dest = args.source, args.dest
    model = na.load_model(source)
    meta = dict(model.metadata)
    meta["normalization"] = {"method": "percentile", "low": 0.1, "high": 99.9}
    training = dict(meta.get("training", {}))
    if not isinstance(training.get("data"), str):  # the engine's record: names and sizes
        training["data_description"] = (
            "DnCNN Train400 (400 BSD images, 180x180 grey); 380 trained, every 20th held out for validation"
        )
    if args.started_from is not None:
        earlier = earlier_training(na.load_model(args.started_from).metadata)
        if earlier is None:
            raise SystemExit(f"{args.started_from} has no training record")
        attach_origin(training, earlier)
    training["noise_description"] = "blind Gaussian, sigma uniform in [0, 55] on [0, 255]"
    meta["training"] = training
    bad = local_paths(meta)
    if bad:
        raise SystemExit("metadata names machine paths:\n" + "\n".join(bad))
    round_weights(model, args.weights_dtype)
    meta["self_check"] = self_check(model)  # recomputed by the tests
    worse = [s for s, r in meta["self_check"].items() if r["psnr"] <= r["input_psnr"]]
    if worse:
        raise SystemExit(f"refused: the model does not beat the noisy input at sigma {', '.join(worse)}")
    model.metadata = meta
    na.save_model(model, dest, overwrite=True, weights_dtype=args.weights_dtype)
    print(f"wrote {dest}; self-check {json.dumps(meta['self_check'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
