"""Turn a trained denoiser into the bundled model: usage metadata and a self-check.

Usage, from the repository root::

    python scripts/finalize_weights.py training/step5/ms-real-c64.safetensors \
        src/napari_addunet/weights/addunet-gray-blind.safetensors

Copies the weights and the training metadata (data, noise range, steps, time, command), sets
percentile normalisation (so that the model works on any dtype and range; the benchmark
protocol bypasses it and feeds [0, 1] images), refuses metadata that names a machine path,
and records ``self_check``: the protocol's PSNR on a crop of scikit-image's camera at sigma
15, 25 and 50, which ``tests/core/test_bundled_models.py`` recomputes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import napari_addunet as na
from napari_addunet.engine.checkpoint import local_paths
from napari_addunet.engine.evaluation import self_check


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    source, dest = Path(argv[0]), Path(argv[1])
    model = na.load_model(source)
    meta = dict(model.metadata)
    meta["normalization"] = {"method": "percentile", "low": 0.1, "high": 99.9}
    training = dict(meta.get("training", {}))
    if not isinstance(training.get("data"), str):  # the engine's record: names and sizes
        training["data_description"] = (
            "DnCNN Train400 (400 BSD images, 180x180 grey); 380 trained, every 20th held out for validation"
        )
    training["noise_description"] = "blind Gaussian, sigma uniform in [0, 55] on [0, 255]"
    meta["training"] = training
    bad = local_paths(meta)
    if bad:
        raise SystemExit("metadata names machine paths:\n" + "\n".join(bad))
    meta["self_check"] = self_check(model)  # recomputed by the tests
    model.metadata = meta
    na.save_model(model, dest)
    print(f"wrote {dest}; self-check {json.dumps(meta['self_check'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
