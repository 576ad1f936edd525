"""An exponential moving average of a model's weights, for training.

The averaged weights are what the run validates and saves: they move less from step to step
than the trained weights, so that a run at a higher learning rate still ends on smooth weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class WeightAverage:
    """Exponential moving average of the floating-point tensors of a model's state.

    Parameters
    ----------
    model
        The model being trained; its current weights start the average.
    decay
        Weight of the average at each update, in (0, 1): 0.999 averages over about the last
        1,000 steps. The first updates use ``min(decay, (1 + n) / (10 + n))`` after ``n``
        updates, so that the average leaves its starting point quickly.

    Notes
    -----
    Buffers that are not floating point (counters) are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def rate(self) -> float:
        """The decay of the next update."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average toward the model's current weights."""
        d = self.rate()
        for key, value in model.state_dict().items():
            avg = self.tensors[key]
            if avg.is_floating_point():
                avg.mul_(d).add_(value.detach().to(avg.dtype), alpha=1.0 - d)
            else:
                avg.copy_(value)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """Give the model the averaged weights inside the block, its own ones again after it."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.tensors)
        try:
            yield
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict[str, object]:
        """What a training state file keeps of the average."""
        return {
            "decay": self.decay,
            "updates": self.updates,
            "tensors": {k: v.detach().cpu() for k, v in self.tensors.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Continue the average of a saved state.

        Raises
        ------
        ValueError
            If the saved tensors do not match the model's.
        """
        tensors = state["tensors"]
        if not isinstance(tensors, dict) or set(tensors) != set(self.tensors):
            raise ValueError("the saved weight average does not belong to this model")
        for key, value in tensors.items():
            if tuple(value.shape) != tuple(self.tensors[key].shape):
                raise ValueError(
                    f"the saved weight average of {key} has shape {tuple(value.shape)}, "
                    f"the model {tuple(self.tensors[key].shape)}"
                )
            self.tensors[key].copy_(value)
        self.updates = int(state["updates"])
