"""Load what torch imports lazily on first use, ahead of time and off the UI thread.

The first optimizer torch builds imports its compiler stack (``torch._dynamo``, about a
thousand modules, seconds on a small CPU), and the first receptive-field computation imports
``torch.fx``. In a napari worker this happens while the viewer runs, and importing holds
the interpreter lock for long stretches, so the viewer would stutter at the start of the
first training run. The Train widget calls :func:`warm_up` in a worker when it opens.
"""

from __future__ import annotations

import time

import torch


def warm_up(training: bool = True) -> float:
    """Import torch's lazily loaded parts now; return the seconds it took.

    Parameters
    ----------
    training
        Also build a throw-away AdamW optimizer (what the training loop uses).
    """
    t0 = time.perf_counter()
    from .receptive_field import receptive_field  # noqa: F401 - imports torch.fx

    if training:
        weight = torch.zeros(1, requires_grad=True)
        torch.optim.AdamW([weight], lr=1e-3)
    return time.perf_counter() - t0
