"""Pure torch/numpy engine: devices, checkpoints, receptive field, inference, training."""
