"""Pure torch/numpy engine: devices, checkpoints, receptive field, inference, training.

Its modules load on first access as attributes (``napari_addunet.engine.readout``), so a
script can reach any of them after ``import napari_addunet`` alone.
"""

from __future__ import annotations

from napari_addunet._lazy import submodule_loader

__getattr__ = submodule_loader(__name__)
