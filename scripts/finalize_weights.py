"""Set the bundled model's usage metadata after training (normalisation, portable command).

Usage: python scripts/finalize_weights.py src/napari_addunet/weights/addunet-gray-blind.safetensors
"""

from __future__ import annotations

import re
import sys

import napari_addunet as na


def main(path: str) -> int:
    model = na.load_model(path)
    meta = dict(model.metadata)
    # Percentiles make the model usable on any dtype and range (microscopy uint16 included);
    # the benchmark protocol feeds [0, 1] images to the network directly.
    meta["normalization"] = {"method": "percentile", "low": 0.1, "high": 99.9}
    training = dict(meta.get("training", {}))
    if "command" in training:
        training["command"] = re.sub(
            r"--data (<Train400 folder>|\S+)", "--data <Train400 folder>", training["command"]
        )
    meta["training"] = training
    model.metadata = meta
    na.save_model(model, path)
    print(f"updated {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
