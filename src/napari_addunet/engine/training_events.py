"""What the training loop reports: one small frozen dataclass per kind of event.

The loop (:func:`~napari_addunet.engine.training.train_events`) yields, in order:
one :class:`TrainingStarted`, then a :class:`StepDone` per optimizer step and, at the end of
each epoch, a :class:`ValidationDone` (when there is validation data), a
:class:`CheckpointSaved` per file written and an :class:`EpochDone`; last a
:class:`TrainingFinished`. A consumer matches on the type (``isinstance`` or ``match``).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class LossParts:
    """The parts of the objective ``total = denoise_weight * denoise + lambda * classify``.

    ``classify`` is the unweighted cross-entropy (0 without labels).
    """

    denoise: float
    classify: float
    total: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Best:
    """The best validation result so far.

    Attributes
    ----------
    epoch, step
        When it was reached.
    metric
        What is compared: ``"val_loss"`` (validation objective, lower is better) or
        ``"train_loss"`` when there is no validation data.
    value
        Its value.
    psnr, ssim, accuracy
        Validation metrics at that point (None where not measured).
    """

    epoch: int
    step: int
    metric: str
    value: float
    psnr: float | None = None
    ssim: float | None = None
    accuracy: float | None = None


@dataclasses.dataclass(frozen=True)
class TrainingStarted:
    """Training begins (or resumes at ``step``)."""

    epoch: int
    step: int
    total_steps: int
    epochs: int
    steps_per_epoch: int
    mode: str
    device: str
    world_size: int
    train_planes: int
    val_planes: int
    parameters: int
    resumed: bool


@dataclasses.dataclass(frozen=True)
class StepDone:
    """One optimizer step done.

    Attributes
    ----------
    epoch
        0-based epoch the step belongs to.
    step
        Steps done so far in the whole run (1 after the first step).
    loss
        Loss parts of this step's batch.
    lr
        Learning rate used for this step.
    samples_per_second
        Training patches per second (all processes), smoothed.
    eta_seconds
        Estimated time to the end of the run.
    gates
        AddUNet skip gates after the step (shallow to deep), or None.
    """

    epoch: int
    step: int
    total_steps: int
    loss: LossParts
    lr: float
    samples_per_second: float
    eta_seconds: float
    gates: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class ValidationDone:
    """Validation on the held-out images after an epoch.

    Attributes
    ----------
    loss
        Validation objective (same parts as training; for blind-spot training, the loss on
        masked pixels).
    psnr, ssim
        Of the output (not clipped) against the clean (or target) patches, in the clean
        image's normalised units with a data range of 1; None for blind-spot training,
        which has no reference.
    input_psnr, input_ssim
        The same for the network's input: what denoising has to beat.
    accuracy
        Classification accuracy on the validation patches, or None without labels.
    improved
        Whether this is the best result so far.
    """

    epoch: int
    step: int
    loss: LossParts
    psnr: float | None
    ssim: float | None
    input_psnr: float | None
    input_ssim: float | None
    accuracy: float | None
    improved: bool
    seconds: float


@dataclasses.dataclass(frozen=True)
class CheckpointSaved:
    """A file was written: ``kind`` is ``"best"`` (the model) or ``"state"`` (resumable state)."""

    epoch: int
    step: int
    path: str
    kind: str


@dataclasses.dataclass(frozen=True)
class EpochDone:
    """An epoch ended.

    Attributes
    ----------
    epoch
        Epochs completed (1 after the first).
    train
        Mean loss parts over the epoch's steps.
    validation
        The validation of this epoch, or None.
    best
        Best result so far.
    gates
        AddUNet gates, or None.
    """

    epoch: int
    step: int
    epochs: int
    train: LossParts
    validation: ValidationDone | None
    best: Best | None
    lr: float
    samples_per_second: float
    eta_seconds: float
    elapsed_seconds: float
    gates: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class TrainingFinished:
    """Training ended.

    Attributes
    ----------
    reason
        ``"completed"``, ``"early_stopping"`` or ``"stopped"`` (asked to stop).
    checkpoint, state
        Paths of the best model and of the training state, or None without an output.
    history
        One dict per epoch (epoch, step, lr, train and validation numbers, seconds).
    """

    epoch: int
    step: int
    reason: str
    best: Best | None
    elapsed_seconds: float
    checkpoint: str | None
    state: str | None
    history: list[dict[str, Any]]


TrainingEvent = TrainingStarted | StepDone | ValidationDone | CheckpointSaved | EpochDone | TrainingFinished
