"""The training loop: a generator of typed events, and a blocking wrapper.

:func:`train_events` prepares a run (model, data split, optimizer, resume) and returns a
generator of :mod:`~napari_addunet.engine.training_events`. Whoever drives it (the
command line, the napari widget's thread worker, a script) may stop it at any time,
by setting the ``stop`` event or by calling the generator's ``close()``: the loop finishes
the step in progress, writes the training state and makes sure the output holds a valid
model. :func:`train` drives the generator to the end and returns a
:class:`TrainingResult`.

Objective: ``L = w * L_den + lambda * L_cls`` (``w``: ``denoise_weight``, 1 by default;
``lambda``: ``lambda_cls``). ``L_den`` is the MSE (or L1) between output and target: the
clean patch (supervised, synthetic noise), the other image of a pair, or, for blind-spot
training on noisy images alone, the original values at the masked pixels only. ``L_cls`` is
the cross-entropy of the classification head. With ``w = 0`` only the classifier learns:
``L_den`` is still computed and reported, but no gradient flows from it, so the weights that
only the denoising loss reaches (an AddUNet's decoder, output layer and gates) stay as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import threading
import time
import warnings
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_addunet._version import __version__
from napari_addunet.models import DenoiserModel, create_model, create_model_from_config, make_config

from . import distributed as ddp
from .blindspot import blindspot_mask
from .checkpoint import SUFFIX, CheckpointError, save_model
from .datasets import DataError, PatchSampler, TrainingData, fixed_patch_planes, fixed_patches, split_data
from .devices import resolve_device, use_fast_layout
from .metrics import accuracy, batch_psnr_ssim
from .noise import NoiseModel
from .noisy_percentiles import NoisyPercentiles
from .training_config import TrainingConfig, lr_at
from .training_events import (
    Best,
    CheckpointSaved,
    EpochDone,
    LossParts,
    StepDone,
    TrainingEvent,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
)
from .training_state import dumps, load_state, loads, model_path_for, save_state, state_path_for
from .weight_average import WeightAverage


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclasses.dataclass
class TrainingResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model
        The trained model with the best weights, in eval mode, its ``metadata`` filled in.
    history
        One dict per epoch: ``epoch``, ``step``, ``lr``, ``train_loss``, ``train_denoise``,
        ``train_classify``, ``val_loss``, ``val_psnr``, ``val_ssim``, ``val_input_psnr``,
        ``val_accuracy``, ``seconds``, ``gates``.
    best
        The best result (None if stopped before the first epoch ended).
    reason
        ``"completed"``, ``"early_stopping"`` or ``"stopped"``.
    checkpoint, state
        The model file and its training-state file, or None without an output.
    step
        Optimizer steps done in total.
    """

    model: DenoiserModel
    history: list[dict[str, Any]]
    best: Best | None
    reason: str
    checkpoint: Path | None
    state: Path | None
    step: int


# -- checks ---------------------------------------------------------------------------------------
def check_compatible(model: DenoiserModel, data: TrainingData, config: TrainingConfig) -> None:
    """Raise :class:`DataError` when the model, the data and the config do not fit together."""
    if model.in_channels != 1 or model.out_channels != 1:
        raise DataError(
            f"training takes single-channel images; this {model.architecture} has "
            f"{model.in_channels} input and {model.out_channels} output channels"
        )
    k = len(data.class_names)
    if data.labels is not None and model.num_classes == 0:
        raise DataError(
            f"labels were given but this {model.architecture} has no classification head; "
            f"build it with num_classes={k} to train denoising and classification together"
        )
    if config.denoise_weight == 0 and (model.num_classes == 0 or data.labels is None):
        missing = "a classification head (num_classes > 0)" if model.num_classes == 0 else "labels"
        raise DataError(
            f"denoise_weight 0 trains the classifier alone, which needs {missing}; give labels and "
            "a model with a head, or set denoise_weight > 0"
        )
    if config.lambda_cls > 0 and model.num_classes == 0:
        raise DataError(
            f"lambda > 0 ({config.lambda_cls:g}) weights a classification loss, but this "
            f"{model.architecture} has no classification head (num_classes=0); set lambda to 0 "
            "or build the model with num_classes > 0"
        )
    if config.lambda_cls > 0 and data.labels is None:
        raise DataError(
            f"lambda > 0 ({config.lambda_cls:g}) needs labels (one class per image or per plane); "
            "give labels or set lambda to 0"
        )
    if data.labels is not None and k > model.num_classes:
        raise DataError(
            f"the labels have {k} classes ({', '.join(data.class_names[:8])}) but the model's head has "
            f"{model.num_classes}; build it with num_classes={k}"
        )
    if len(data) == 0:
        raise DataError("no images to train on")
    if data.labels is not None and config.lambda_cls == 0:
        warnings.warn(
            "labels are given but lambda_cls is 0, so the classification head does not learn (its "
            "accuracy stays at chance); set lambda_cls > 0, e.g. 1, to train it with the denoiser",
            stacklevel=4,
        )


_LINEAGE_KEYS = (
    "command",
    "steps",
    "seconds",
    "date",
    "status",
    "metrics",
    "data_description",
    "started_from",
    "resumed_with",
    "best_resets",
    "transformed",
)


def check_same_mapping(data: TrainingData, validation: TrainingData) -> None:
    """Refuse validation data whose intensities or class indices mean something else than the
    training data's (each builder maps them on its own)."""
    if validation.normalization != data.normalization:
        raise DataError(
            f"validation data are normalised as {validation.normalization} but training data as "
            f"{data.normalization}; build both with the same normalization= (and the same kind of "
            "images)"
        )
    if (data.labels is None) != (validation.labels is None):
        have, lack = ("training", "validation") if data.labels is not None else ("validation", "training")
        raise DataError(
            f"the {have} data have class labels but the {lack} data do not, so validation would "
            "measure the classification on nothing (or on images it was never trained for); give "
            "both labels, or neither"
        )
    if (
        data.labels is not None
        and validation.labels is not None
        and validation.class_names != data.class_names
    ):
        raise DataError(
            f"validation classes {validation.class_names} differ from the training classes "
            f"{data.class_names}, so their label numbers mean other classes; pass "
            f"class_names={data.class_names} when building the validation data"
        )


def earlier_training(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The training record of a model that a new run starts from, to keep in the new run's metadata.

    Holds the earlier run's command, steps, time, date, status and best metrics (and, nested, the
    runs before it), without its full data listing; None if the model was never trained here.
    """
    prior = metadata.get("training") if isinstance(metadata, Mapping) else None
    if not isinstance(prior, Mapping):
        return None
    return {k: prior[k] for k in _LINEAGE_KEYS if k in prior}


def record_transform(metadata: Mapping[str, Any], step: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``metadata`` whose ``training.transformed`` records ``step``.

    For a model changed outside training (widened, deepened) without changing its function:
    ``step`` describes the change (its command, what it changed); a transformation recorded
    before is kept under ``earlier``, so the lineage stays complete.
    """
    out = dict(metadata)
    training = dict(out.get("training") or {})
    entry = dict(step)
    if training.get("transformed"):
        entry["earlier"] = training["transformed"]
    training["transformed"] = entry
    out["training"] = training
    return out


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (so ``cpu_bf16`` training is worth it)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


LOG_MSE_FLOOR = 1e-6  # log_mse: squared errors below this (60 dB on [0, 1]) stop mattering


def log_mse(squared_error: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over patches of ``10 log10(MSE + 1e-6)``: minus the mean PSNR of a [0, 1] batch, in dB.

    Each patch's gradient is divided by its own MSE, so a patch at low noise weighs as much as
    one at high noise in dB, where plain MSE lets the high-noise patches dominate.

    Parameters
    ----------
    squared_error
        ``(N, C, H, W)`` squared differences.
    mask
        Optional pixels that count (blind-spot training), same shape.
    """
    err = squared_error.flatten(1)
    if mask is None:
        per_patch = err.mean(dim=1)
    else:
        m = mask.to(err.dtype).flatten(1)
        counted = m.sum(dim=1)
        per_patch = (err * m).sum(dim=1) / counted.clamp(min=1.0)
        scored = counted > 0  # a patch with no masked pixel measures nothing (it is not 60 dB)
        if not bool(scored.all()):
            if not bool(scored.any()):
                return (err * 0.0).sum()
            per_patch = per_patch[scored]
    return (10.0 * torch.log10(per_patch + LOG_MSE_FLOOR)).mean()


def _class_names(model: DenoiserModel, data: TrainingData) -> list[str]:
    if model.num_classes == 0:
        return []
    names = list(data.class_names) if data.labels is not None else list(model.class_names)
    return names + [f"class_{i}" for i in range(len(names), model.num_classes)]


def _in_clean_units(x: torch.Tensor, to_clean: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Patches mapped back from noisy-percentile units to the clean image's (or as they are)."""
    if to_clean is None:
        return x
    lo, scale = to_clean
    return x * scale + lo


JUDGING_SETTINGS = (
    "patch_size",
    "noise",
    "sigma_min",
    "sigma_max",
    "photons_min",
    "photons_max",
    "blur",
    "blur_size",
    "blur_sigma_min",
    "blur_sigma_max",
    "mask_fraction",
    "mask_radius",
    "loss",
    "lambda_cls",
    "denoise_weight",
)
"""Training settings that can change what the validation value measures (see resume)."""

_SYNTHETIC_NOISE = JUDGING_SETTINGS[1:10]
_MASKING = ("mask_fraction", "mask_radius")


def judging_settings(mode: str) -> tuple[str, ...]:
    """The settings that change what validation measures in a run of ``mode``.

    Synthetic noise and blur only in supervised runs, the blind-spot mask only in
    Noise2Void runs; patch size and the loss in every run.
    """
    unused = {"supervised": _MASKING, "noise2void": _SYNTHETIC_NOISE}.get(mode, _SYNTHETIC_NOISE + _MASKING)
    return tuple(k for k in JUDGING_SETTINGS if k not in unused)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


# -- the run ----------------------------------------------------------------------------------------
class _Run:
    """Everything one training run holds; :meth:`events` is the loop."""

    def __init__(
        self,
        data: TrainingData,
        model: DenoiserModel | str | None,
        config: TrainingConfig | Mapping[str, Any] | None,
        validation: TrainingData | None,
        output: str | os.PathLike | None,
        resume: str | os.PathLike | None,
        overwrite: bool,
        stop: threading.Event | None,
        command: str | None,
        model_settings: Mapping[str, Any] | None,
        overrides: dict[str, Any],
    ) -> None:
        if not isinstance(data, TrainingData):
            raise TypeError(
                "data must be TrainingData; build it with clean_data(...), noisy_data(...), "
                f"paired_data(...) or class_folder_data(...), got {type(data).__name__}"
            )
        self.state_in = load_state(resume) if resume is not None else None
        self.resumed_from = model_path_for(resume) if resume is not None else None
        self.cfg = self._config(config, overrides)
        cfg = self.cfg
        if self.state_in is not None:
            self._check_same_validation(loads(self.state_in["config"]))
        self.stop = stop
        # a resumed run keeps the command that started it and lists the ones that resumed it
        earlier = self._earlier_command()
        self.command = earlier or command or "napari_addunet.train(...)"
        self.resumed_with: list[str] = []
        self.best_resets: list[dict[str, Any]] = []
        if self.state_in is not None:
            self.resumed_with = list(loads(self.state_in.get("resumed_with", "[]")))
            self.best_resets = list(loads(self.state_in.get("best_resets", "[]")))
            if command and earlier:
                self.resumed_with.append(command)
        self.t_start = time.perf_counter()

        # where to write
        if output is None and resume is not None:
            output = model_path_for(resume)
        self.output = Path(output) if output is not None else None
        self.state_file = state_path_for(self.output) if self.output is not None else None
        if self.output is not None:
            if self.output.suffix != SUFFIX:
                raise CheckpointError(f"the output model file must end in {SUFFIX}, got {self.output.name!r}")
            if not self.output.parent.is_dir():
                raise CheckpointError(f"folder {self.output.parent} does not exist")
            resuming_here = (
                resume is not None and Path(model_path_for(resume)).resolve() == self.output.resolve()
            )
            for target in (self.output, self.state_file):
                if target.is_dir():
                    raise CheckpointError(f"{target} is a folder; the run writes a file there")
            if self.output.exists() and not overwrite and not resuming_here:
                raise FileExistsError(
                    f"{self.output} exists; pass overwrite=True (--overwrite) or resume from it"
                )
            if self.state_file.exists() and not overwrite and not resuming_here:
                raise FileExistsError(
                    f"{self.state_file} (the training state of an earlier run) exists; pass "
                    "overwrite=True (--overwrite) to replace it, or resume from it"
                )

        # devices and processes
        self.ctx, self.device = ddp.setup(resolve_device(cfg.device))
        try:
            self._prepare(data, model, validation, model_settings)
        except BaseException:
            ddp.teardown(self.ctx)
            raise

    def _prepare(
        self,
        data: TrainingData,
        model: DenoiserModel | str | None,
        validation: TrainingData | None,
        model_settings: Mapping[str, Any] | None,
    ) -> None:
        cfg = self.cfg
        self.rank = self.ctx.rank
        self.use_amp = bool(cfg.amp and self.device.type == "cuda")
        self.use_bf16 = bool(cfg.cpu_bf16 and self.device.type == "cpu")
        if self.use_bf16 and not cpu_has_bf16():
            raise TrainingError(
                "training.cpu_bf16 needs a CPU with native bfloat16 (AVX512-BF16 or AMX); "
                "this one would emulate it slowly: set cpu_bf16 to false"
            )

        # data
        for name, value in (("data", data), ("validation", validation)):
            if value is not None and not isinstance(value, TrainingData):
                raise TypeError(
                    f"{name} must be built with clean_data, noisy_data, paired_data or "
                    f"class_folder_data, got {type(value).__name__}"
                )
        if validation is not None:
            self.train_data, self.val_data = data, validation
            if validation.mode != data.mode:
                raise DataError(f"validation data are {validation.mode!r} but training data {data.mode!r}")
            check_same_mapping(data, validation)
        else:
            self.train_data, self.val_data = split_data(data, cfg.val_fraction, cfg.validation_seed)
        self.train_data.check_patch_size(cfg.patch_size)
        if self.val_data is not None:
            self.val_data.check_patch_size(cfg.patch_size)
        self.mode = data.mode
        self.noise = NoiseModel.from_config(cfg) if self.mode == "supervised" else None
        self.renorm = self._noisy_percentiles(self.train_data)
        self.val_renorm = self._noisy_percentiles(self.val_data)

        # model (seeded, so a model built here is repeatable; the same on every process, so a
        # weight average starts alike everywhere), then each process's own stream for dropout
        torch.manual_seed(_seed(cfg.seed, 0, 0))
        self.model = self._model(model, data, model_settings).to(self.device)
        torch.manual_seed(_seed(cfg.seed, self.rank, 0))
        if not self.ctx.enabled:  # DDP's gradient buckets expect the default layout
            use_fast_layout(self.model, self.device)
        if self.state_in is not None:
            self.started_from = loads(self.state_in.get("started_from", "null"))
        elif isinstance(model, DenoiserModel):
            self.started_from = earlier_training(model.metadata)
        else:
            self.started_from = None
        check_compatible(self.model, data, cfg)
        self.class_names = _class_names(self.model, data)

        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim >= 2]
        rest = [p for p in self.model.parameters() if p.requires_grad and p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)

        # random generators: patches (numpy), noise and masks (torch), global torch (dropout)
        self.rng = np.random.default_rng([cfg.seed, self.rank, 1])
        self.gen = torch.Generator().manual_seed(_seed(cfg.seed, self.rank, 2))

        # progress
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.sums = [0.0, 0.0, 0.0, 0]  # denoise, classify, total, steps
        self.best: Best | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.since_best = 0
        self.history: list[dict[str, Any]] = []
        self.elapsed_before = 0.0
        self.step_time: float | None = None
        self.val_time = 0.0
        self.best_saved = False
        self.in_step = False
        if self.state_in is not None:
            self._restore(self.state_in)
        # the average starts from the (restored) weights, or continues the one the state kept
        self.average = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if self.average is not None and self.state_in is not None and self.state_in.get("weight_average"):
            self.average.load_state_dict(self.state_in["weight_average"])

        self.sampler = PatchSampler(self.train_data, cfg.patch_size, self.rng, augment=cfg.augment)
        self.val = self._validation_set()
        self.net: torch.nn.Module = self.model
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                self.model,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                # classification only: the decoder gets no gradient
                find_unused_parameters=cfg.denoise_weight == 0,
            )

    # -- preparation ------------------------------------------------------------------------------
    def _config(
        self, config: TrainingConfig | Mapping[str, Any] | None, overrides: dict[str, Any]
    ) -> TrainingConfig:
        if config is None and self.state_in is not None:
            config = loads(self.state_in["config"])
        if config is None:
            return TrainingConfig.from_dict(overrides)
        if isinstance(config, TrainingConfig):
            return config.replace(**overrides) if overrides else config
        if isinstance(config, Mapping):
            return TrainingConfig.from_dict(config, **overrides)
        raise TypeError(f"config must be a TrainingConfig or a dict, got {type(config).__name__}")

    def _check_same_validation(self, earlier: Mapping[str, Any]) -> None:
        """Refuse a resume whose settings would pick other validation images or patches: the
        best model so far was chosen on the earlier ones (and held-out images would be trained on)."""
        before = TrainingConfig.from_dict(dict(earlier))
        now = self.cfg
        if before.validation_seed != now.validation_seed:
            raise DataError(
                f"cannot resume with seed {now.seed} / val_seed {now.val_seed}: the run being resumed "
                f"chose its validation images and patches with seed {before.validation_seed}, and "
                "another would train on held-out images and judge the best model on others; keep "
                f"the seed, or pass val_seed={before.validation_seed} to keep that split"
            )
        if before.steps_per_epoch != now.steps_per_epoch:
            raise DataError(
                f"cannot resume with steps_per_epoch={now.steps_per_epoch}: the run being resumed "
                f"counted its steps and learning-rate schedule in epochs of {before.steps_per_epoch}; "
                "keep that number (change epochs to make the run longer or shorter)"
            )
        if before.val_patches != now.val_patches:
            raise DataError(
                f"cannot resume with val_patches={now.val_patches}: the best model so far was chosen "
                f"on {before.val_patches} validation patches; keep that number"
            )

    def _reset_best_if_judged_otherwise(self, earlier: Mapping[str, Any]) -> None:
        """Settings that change what validation measures (noise, patches, loss) make the best
        value so far incomparable: the resumed run chooses its best model anew, and says so."""
        changed = [
            k for k in judging_settings(self.mode) if k in earlier and earlier[k] != getattr(self.cfg, k)
        ]
        if not changed or self.best is None:
            return
        self.best_resets.append(
            {"step": self.step, "changed": changed, "earlier_best": dataclasses.asdict(self.best)}
        )
        self.best, self.since_best = None, 0
        warnings.warn(
            f"resuming with other {', '.join(changed)}: validation now measures something else, so "
            f"the best model is chosen anew from step {self.step} (the earlier best is recorded)",
            stacklevel=3,
        )

    def _earlier_command(self) -> str | None:
        """A resumed run keeps the command of the run it continues."""
        return None if self.state_in is None else self.state_in.get("command")

    def _model(
        self, model: DenoiserModel | str | None, data: TrainingData, settings: Mapping[str, Any] | None
    ) -> DenoiserModel:
        if isinstance(model, DenoiserModel):
            if settings:
                raise TypeError("model_settings are for a model built by name; this model is already built")
            if self.state_in is not None:
                arch, saved = self.state_in["architecture"], loads(self.state_in["model_config"])
                if model.architecture != arch or dumps(model.config.to_dict()) != dumps(saved):
                    raise DataError(
                        f"the model passed ({model.architecture}) is not the one of the run being resumed "
                        f"({arch}, with its saved settings); pass no model to continue that run's own"
                    )
            return model
        if isinstance(model, torch.nn.Module):
            raise TypeError(
                f"{type(model).__name__} is not a napari-addunet model; build one with create_model"
            )
        if self.state_in is not None:
            arch = self.state_in["architecture"]
            if model is not None and str(model).lower() != arch:
                raise DataError(f"cannot resume a {arch} run with architecture {model!r}")
            if settings:
                raise DataError(
                    "cannot resume with model_settings: a resume continues the saved model "
                    f"(got {', '.join(sorted(settings))}); start a new run to change the model"
                )
            built = create_model_from_config(make_config(arch, loads(self.state_in["model_config"])))
            built.metadata = loads(self.state_in["metadata"])
            return built
        settings = dict(settings or {})
        if data.labels is not None and "num_classes" not in settings:
            settings["num_classes"] = len(data.class_names)
        return create_model(model or "addunet", **settings)

    def _restore(self, state: dict[str, Any]) -> None:
        shape = loads(state["data"])
        here = {
            "mode": self.mode,
            "train_planes": len(self.train_data),
            "val_planes": len(self.val_data) if self.val_data is not None else 0,
        }
        held_then = shape.pop("val_names", None)
        if shape != here:
            raise DataError(
                f"cannot resume: the data differ from the run being resumed (then {shape}, now {here}); "
                "give the same images and val_fraction"
            )
        held_now = list(self.val_data.names) if self.val_data is not None else []
        if held_then is not None and held_then != held_now:  # states that keep the names
            other = next(n for n, m in zip(held_now, held_then, strict=True) if n != m)
            raise DataError(
                f"cannot resume: the validation images differ from the run being resumed (e.g. {other} "
                "is held out now but was not then); give the same images, in the same order"
            )
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.sums = [float(v) for v in state["epoch_sums"]]
        self.sums[3] = int(self.sums[3])
        best = loads(state["best"])
        self.best = Best(**best) if best else None
        self.since_best = int(state["since_best"])
        self.history = loads(state["history"])
        self.elapsed_before = float(state["elapsed"])
        self.best_saved = bool(state.get("best_saved", False))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.optimizer.param_groups[0]["weight_decay"] = self.cfg.weight_decay  # a resume may change it
        had_best = self.best is not None
        self._reset_best_if_judged_otherwise(loads(state["config"]))
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        rng = state["rng"]
        if self.rank == 0 and int(state.get("world_size", 1)) == self.ctx.world_size:
            self.rng.bit_generator.state = loads(rng["numpy"])
            self.gen.set_state(rng["noise"])
            torch.set_rng_state(rng["torch"])
            if self.device.type == "cuda" and "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        else:  # other ranks: a fresh, distinct stream from this step on
            self.rng = np.random.default_rng([self.cfg.seed, self.rank, 1, self.step])
            self.gen = torch.Generator().manual_seed(_seed(self.cfg.seed, self.rank, 2, self.step))
        best_file = self.resumed_from
        # after a reset too: until a new best is validated, the file keeps the earlier one (a
        # stop before then would otherwise write the last, never validated weights over it)
        if had_best and best_file is not None and best_file.exists():
            from .checkpoint import load_model

            self.best_weights = {k: v.clone() for k, v in load_model(best_file).state_dict().items()}
            moved = self.output is not None and self.output.resolve() != best_file.resolve()
            if moved and self.ctx.is_main:
                # resumed into a new file: it holds the best model from the start, so a crash
                # before the next improvement cannot leave a state file without its best model
                import shutil

                from .atomic import atomic_write

                with atomic_write(self.output) as tmp:
                    shutil.copyfile(best_file, tmp)
                self.best_saved = True

    def _noisy_percentiles(self, data: TrainingData | None) -> NoisyPercentiles | None:
        """Clean images by percentiles with noise: map pairs as inference maps noisy images."""
        if data is None or self.noise is None or self.noise.kind == "none" or data.pixel_samples is None:
            return None
        norm = data.normalization
        return NoisyPercentiles(
            data.pixel_samples, data.percentile_points, norm["low"], norm["high"], self.noise.kind
        )

    def _degrade(
        self, clean: torch.Tensor, planes: Any, renorm: NoisyPercentiles | None, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Noisy input and target; with percentiles, in the noisy image's percentile units.

        The third item maps those units back to the clean image's (offset, scale), or None.
        """
        noisy, sigma, photons = self.noise.degrade_with_levels(clean, gen)
        if renorm is None:
            return noisy, clean, None
        lo, scale = renorm.batch(planes, sigma, photons)
        return (noisy - lo) / scale, (clean - lo) / scale, (lo, scale)

    def _validation_set(self) -> dict[str, Any] | None:
        if self.val_data is None:
            return None
        cfg = self.cfg
        x, y, labels = fixed_patches(self.val_data, cfg.patch_size, cfg.val_patches, cfg.validation_seed)
        gen = torch.Generator().manual_seed(_seed(cfg.validation_seed, 3))
        x_t = torch.from_numpy(x)
        out: dict[str, Any] = {
            "labels": None if labels is None else torch.from_numpy(labels),
            "mask": None,
            "to_clean": None,
        }
        if self.mode == "supervised":
            planes = fixed_patch_planes(len(self.val_data), cfg.val_patches)
            out["input"], out["target"], out["to_clean"] = self._degrade(x_t, planes, self.val_renorm, gen)
        elif self.mode == "pairs":
            out["input"], out["target"] = x_t, torch.from_numpy(y)
        else:
            out["input"], out["mask"] = blindspot_mask(x_t, cfg.mask_fraction, cfg.mask_radius, gen)
            out["target"] = x_t
        if self.mode != "noise2void":  # metrics in the clean image's units
            target, noisy = (
                _in_clean_units(out["target"], out["to_clean"]),
                _in_clean_units(out["input"], out["to_clean"]),
            )
            out["input_metrics"] = batch_psnr_ssim(target.numpy(), noisy.numpy())
        else:
            out["input_metrics"] = (None, None)
        return out

    # -- one step ---------------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        cfg = self.cfg
        x, y, labels, planes = self.sampler.sample_with_planes(cfg.batch_size)
        xt = torch.from_numpy(x)
        mask = None
        if self.mode == "supervised":
            inp, target, _ = self._degrade(xt, planes, self.renorm, self.gen)
        elif self.mode == "pairs":
            inp, target = xt, torch.from_numpy(y)
        else:
            inp, mask = blindspot_mask(xt, cfg.mask_fraction, cfg.mask_radius, self.gen)
            target = xt
        dev = self.device
        lab = None if labels is None else torch.from_numpy(labels).to(dev)
        return inp.to(dev), target.to(dev), None if mask is None else mask.to(dev), lab

    def _losses(
        self, out: Any, target: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pred = out.denoised.float()
        diff = pred - target
        err = diff.abs() if self.cfg.loss == "l1" else diff.pow(2)
        if self.cfg.loss == "log_mse":
            den = log_mse(err, mask)
        elif mask is not None:
            m = mask.to(err.dtype)
            den = (err * m).sum() / m.sum().clamp(min=1.0)
        else:
            den = err.mean()
        if out.logits is not None and labels is not None:
            cls = F.cross_entropy(out.logits.float(), labels)
        else:
            cls = torch.zeros((), device=pred.device)
        weight = self.cfg.denoise_weight
        # weight 0: leave L_den out of the graph, so that the weights only it reaches get no
        # gradient at all (grad None: AdamW skips them, weight decay included)
        total = self.cfg.lambda_cls * cls if weight == 0 else weight * den + self.cfg.lambda_cls * cls
        if out.logits is not None and labels is None:
            total = total + 0.0 * out.logits.float().sum()  # keeps every parameter in the graph (DDP)
        return den, cls, total

    def _train_step(self) -> LossParts:
        cfg = self.cfg
        lr = lr_at(cfg, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.train()
        inp, target, mask, labels = self._batch()
        try:
            if self.use_bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = self.net(inp)
                out = type(out)(*(None if t is None else t.float() for t in out))
            else:
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                    out = self.net(inp)
        except ValueError as exc:
            if "more than 1 value per channel" not in str(exc):
                raise
            raise TrainingError(
                f"batch normalisation has a single value per channel at the deepest level ({cfg.batch_size} "
                f"patch(es) of {cfg.patch_size} px): use batch_size >= 2 or a larger patch_size"
            ) from exc
        den, cls, total = self._losses(out, target, mask, labels)
        if not torch.isfinite(total):
            where = (
                f"; the best model so far is in {self.output.name}" if self.best_saved and self.output else ""
            )
            raise TrainingError(
                f"the loss became {float(total.detach())} at step {self.step + 1}: lower the learning rate "
                f"(now {lr:.3g}) or check the data{where}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average is not None:
            self.average.update(self.model)
        parts = LossParts(float(den.detach()), float(cls.detach()), float(total.detach()))
        self.sums[0] += parts.denoise
        self.sums[1] += parts.classify
        self.sums[2] += parts.total
        self.sums[3] += 1
        return parts

    # -- validation -------------------------------------------------------------------------------
    def _validate(self) -> tuple[LossParts, float | None, float | None, float | None]:
        v, cfg, model = self.val, self.cfg, self.model
        model.eval()
        outs, logits = [], []
        with torch.no_grad():
            for i in range(0, len(v["input"]), max(cfg.batch_size, 1)):
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                    out = model(v["input"][i : i + cfg.batch_size].to(self.device))
                outs.append(out.denoised.float().cpu())
                if out.logits is not None:
                    logits.append(out.logits.float().cpu())
            pred = torch.cat(outs)
            out_all = type(out)(pred, torch.cat(logits) if logits else None)
            den, cls, total = self._losses(out_all, v["target"], v["mask"], v["labels"])
        parts = LossParts(float(den), float(cls), float(total))
        psnr = ssim = None
        if self.mode != "noise2void":
            back = v["to_clean"]
            psnr, ssim = batch_psnr_ssim(
                _in_clean_units(v["target"], back).numpy(), _in_clean_units(pred, back).numpy()
            )
        acc = (
            accuracy(out_all.logits.numpy(), v["labels"].numpy())
            if logits and v["labels"] is not None
            else None
        )
        return parts, psnr, ssim, acc

    # -- files ------------------------------------------------------------------------------------
    def _noise_description(self) -> dict[str, Any]:
        if self.noise is None:
            return {"model": "real (from the data)"}
        out = self.noise.describe()
        if self.renorm is not None:
            out["percentiles"] = (
                "each pair mapped by the percentiles its noisy image would have, as inference maps it"
            )
        return out

    def _metadata(self, reason: str | None) -> dict[str, Any]:
        cfg, best = self.cfg, self.best
        metrics: dict[str, Any] = {}
        if best is not None:
            metrics = {best.metric: best.value, "epoch": best.epoch, "step": best.step}
            for key in ("psnr", "ssim", "accuracy"):
                value = getattr(best, key)
                if value is not None:
                    metrics[f"val_{key}"] = value
            if self.val is not None and self.val["input_metrics"][0] is not None:
                metrics["val_input_psnr"], metrics["val_input_ssim"] = self.val["input_metrics"]
        data = {
            "train": self.train_data.describe(),
            "validation": self.val_data.describe() if self.val_data is not None else None,
        }
        training = {
            "mode": self.mode,
            "noise": self._noise_description(),
            "data": data,
            "config": cfg.to_dict(),
            "command": self.command,
            "steps": self.step,
            "epochs": self.epoch,
            "seconds": round(self._elapsed(), 1),
            "metrics": metrics,
            "status": reason or "in progress",
            "device": str(self.device),
            "processes": self.ctx.world_size,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "package_version": __version__,
        }
        if self.resumed_with:
            training["resumed_with"] = list(self.resumed_with)
        if self.best_resets:
            training["best_resets"] = list(self.best_resets)
        if self.started_from is not None:
            training["started_from"] = self.started_from
        meta: dict[str, Any] = {"normalization": dict(self.train_data.normalization), "training": training}
        if self.class_names:
            meta["class_names"] = self.class_names
        return meta

    def _save_best(self, reason: str | None = None) -> CheckpointSaved | None:
        if self.output is None or not self.ctx.is_main:
            return None
        save_model(self.model, self.output, overwrite=True, **self._metadata(reason))
        self.best_saved = True
        return CheckpointSaved(self.epoch, self.step, str(self.output), "best")

    def _save_state(self) -> CheckpointSaved | None:
        if self.state_file is None or not self.ctx.is_main:
            return None
        rng: dict[str, Any] = {
            "numpy": dumps(self.rng.bit_generator.state),
            "noise": self.gen.get_state(),
            "torch": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.use_amp else {},
            "weight_average": self.average.state_dict() if self.average is not None else {},
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "epoch_sums": [float(s) for s in self.sums],
            "rng": rng,
            "best": dumps(dataclasses.asdict(self.best) if self.best else None),
            "best_saved": self.best_saved,
            "since_best": self.since_best,
            "history": dumps(self.history),
            "elapsed": self._elapsed(),
            "world_size": self.ctx.world_size,
            "architecture": self.model.architecture,
            "model_config": dumps(self.model.config.to_dict()),
            "metadata": dumps(self.model.metadata),
            "started_from": dumps(self.started_from),
            "command": self.command,
            "resumed_with": dumps(self.resumed_with),
            "best_resets": dumps(self.best_resets),
            "config": dumps(self.cfg.to_dict()),
            "data": dumps(
                {
                    "mode": self.mode,
                    "train_planes": len(self.train_data),
                    "val_planes": len(self.val_data) if self.val_data is not None else 0,
                    "val_names": list(self.val_data.names) if self.val_data is not None else [],
                }
            ),
            "package_version": __version__,
        }
        save_state(self.state_file, state)
        return CheckpointSaved(self.epoch, self.step, str(self.state_file), "state")

    # -- bookkeeping ------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def _gates(self) -> tuple[float, ...] | None:
        gates = getattr(self.model, "gates", None)
        return tuple(gates) if gates is not None else None

    def _eta(self) -> float:
        cfg = self.cfg
        left = max(0, cfg.total_steps - self.step)
        validations_left = max(0, cfg.epochs - self.epoch)
        return left * (self.step_time or 0.0) + validations_left * self.val_time

    def _rate(self) -> float:
        if not self.step_time:
            return 0.0
        return self.cfg.batch_size * self.ctx.world_size / self.step_time

    def _stop_requested(self) -> bool:
        flag = bool(self.stop is not None and self.stop.is_set())
        return ddp.any_true(flag, self.ctx, self.device)

    # -- the loop ---------------------------------------------------------------------------------
    def events(self) -> Generator[TrainingEvent, None, TrainingResult]:
        cfg = self.cfg
        reason = "completed"
        try:
            yield TrainingStarted(
                epoch=self.epoch,
                step=self.step,
                total_steps=cfg.total_steps,
                epochs=cfg.epochs,
                steps_per_epoch=cfg.steps_per_epoch,
                mode=self.mode,
                device=str(self.device),
                world_size=self.ctx.world_size,
                train_planes=len(self.train_data),
                val_planes=len(self.val_data) if self.val_data is not None else 0,
                parameters=self.model.num_parameters(),
                resumed=self.state_in is not None,
            )
            while self.epoch < cfg.epochs and reason == "completed":
                while self.step_in_epoch < cfg.steps_per_epoch:
                    if self._stop_requested():
                        reason = "stopped"
                        break
                    t0 = time.perf_counter()
                    self.in_step = True
                    parts = self._train_step()
                    self.step += 1
                    self.step_in_epoch += 1
                    self.in_step = False
                    dt = time.perf_counter() - t0
                    self.step_time = dt if self.step_time is None else 0.9 * self.step_time + 0.1 * dt
                    yield StepDone(
                        epoch=self.epoch,
                        step=self.step,
                        total_steps=cfg.total_steps,
                        loss=parts,
                        lr=lr_at(cfg, self.step - 1),
                        samples_per_second=self._rate(),
                        eta_seconds=self._eta(),
                        gates=self._gates(),
                    )
                if reason != "completed":
                    break
                for event in self._end_epoch():
                    yield event
                if cfg.patience and self.since_best >= cfg.patience and self.epoch < cfg.epochs:
                    reason = "early_stopping"
        except (GeneratorExit, KeyboardInterrupt):
            # Interrupted inside a step, the weights may be half-updated: keep the state
            # file of the last finished epoch rather than write an inconsistent one.
            self._finish("stopped", write_state=not self.in_step)
            raise
        except BaseException:
            ddp.teardown(self.ctx)
            raise
        saved, result = self._finish(reason)
        for event in saved:
            yield event
        yield TrainingFinished(
            epoch=self.epoch,
            step=self.step,
            reason=reason,
            best=self.best,
            elapsed_seconds=self._elapsed(),
            checkpoint=str(result.checkpoint) if result.checkpoint else None,
            state=str(result.state) if result.state else None,
            history=list(self.history),
        )
        return result

    def _averaged(self) -> contextlib.AbstractContextManager[None]:
        """The model holds the averaged weights inside this block (``ema_decay`` > 0)."""
        return contextlib.nullcontext() if self.average is None else self.average.applied(self.model)

    def _end_epoch(self) -> list[TrainingEvent]:
        cfg = self.cfg
        n = max(1, int(self.sums[3]))
        train = LossParts(self.sums[0] / n, self.sums[1] / n, self.sums[2] / n)
        events: list[TrainingEvent] = []
        validation = None
        with self._averaged():  # validate and keep the averaged weights, if any
            if self.val is not None:
                t0 = time.perf_counter()
                parts, psnr, ssim, acc = self._validate()
                self.val_time = time.perf_counter() - t0
                metric, value = "val_loss", parts.total
                if not math.isfinite(value):
                    raise TrainingError(
                        f"the validation loss became {value} at epoch {self.epoch + 1}: lower the learning "
                        "rate or check the validation data"
                    )
            else:
                parts = psnr = ssim = acc = None
                metric, value = "train_loss", train.total
            # Counted only now: a run stopped during validation resumes by validating this epoch.
            self.epoch += 1
            self.step_in_epoch = 0
            self.sums = [0.0, 0.0, 0.0, 0]
            improved = self.best is None or value < self.best.value
            if improved:
                self.best = Best(self.epoch, self.step, metric, value, psnr, ssim, acc)
                self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.since_best = 0
            else:
                self.since_best += 1
            if parts is not None:
                ip, iss = self.val["input_metrics"]
                validation = ValidationDone(
                    self.epoch, self.step, parts, psnr, ssim, ip, iss, acc, improved, self.val_time
                )
                events.append(validation)
            lr = lr_at(cfg, max(0, self.step - 1))
            self.history.append(
                {
                    "epoch": self.epoch,
                    "step": self.step,
                    "lr": lr,
                    "train_loss": train.total,
                    "train_denoise": train.denoise,
                    "train_classify": train.classify,
                    "val_loss": parts.total if parts else None,
                    "val_psnr": psnr,
                    "val_ssim": ssim,
                    "val_input_psnr": self.val["input_metrics"][0] if self.val is not None else None,
                    "val_accuracy": acc,
                    "seconds": round(self._elapsed(), 2),
                    "gates": self._gates(),
                }
            )
            if improved:
                saved = self._save_best()
                if saved:
                    events.append(saved)
        saved = self._save_state()
        if saved:
            events.append(saved)
        events.append(
            EpochDone(
                epoch=self.epoch,
                step=self.step,
                epochs=cfg.epochs,
                train=train,
                validation=validation,
                best=self.best,
                lr=lr,
                samples_per_second=self._rate(),
                eta_seconds=self._eta(),
                elapsed_seconds=self._elapsed(),
                gates=self._gates(),
            )
        )
        return events

    def _finish(self, reason: str, write_state: bool = True) -> tuple[list[CheckpointSaved], TrainingResult]:
        """Write the state (last weights) and the best model with the final metadata."""
        saved = [s for s in (self._save_state() if write_state else None,) if s]
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        best = self._save_best(reason)
        if best:
            saved.append(best)
        else:  # nothing written (no output, or not rank 0): the model still carries its record
            self.model.metadata = {**self.model.metadata, **self._metadata(reason)}
        self.model.eval()
        ddp.teardown(self.ctx)
        result = TrainingResult(
            model=self.model,
            history=list(self.history),
            best=self.best,
            reason=reason,
            checkpoint=self.output if self.output is not None else None,
            state=self.state_file if self.state_file is not None else None,
            step=self.step,
        )
        return saved, result


# -- public API ---------------------------------------------------------------------------------
def train_events(
    data: TrainingData,
    model: DenoiserModel | str | None = None,
    config: TrainingConfig | Mapping[str, Any] | None = None,
    *,
    validation: TrainingData | None = None,
    output: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    overwrite: bool = False,
    stop: threading.Event | None = None,
    command: str | None = None,
    model_settings: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Generator[TrainingEvent, None, TrainingResult]:
    """Prepare a training run and return the generator of its events.

    Everything that can be checked before training starts is checked here, so bad input
    fails at this call, not at the first ``next()``.

    Parameters
    ----------
    data
        From :func:`~napari_addunet.engine.datasets.clean_data` (supervised, synthetic noise),
        :func:`~napari_addunet.engine.datasets.noisy_data` (blind-spot), ``paired_data`` or
        ``class_folder_data``.
    model
        A model to train (e.g. ``create_model("addunet", num_classes=3)``), an architecture
        name (built here with ``model_settings``; ``num_classes`` follows the labels), or
        None: ``"addunet"``, or the resumed run's model.
    config
        A :class:`TrainingConfig` or a dict of its settings; None: defaults (or the resumed
        run's config).
    validation
        Explicit validation data (same kind as ``data``); otherwise ``val_fraction`` of the
        images is held out.
    output
        The ``.safetensors`` file of the best model; the training state goes beside it
        (``.state.pt``). None: nothing is written (the result still holds the best model).
    resume
        A model file (or its state file) written by an earlier run: continue from its last
        step with the same optimizer, schedule and random streams. ``output`` defaults to it.
    overwrite
        Replace an existing ``output`` (not needed when resuming into it).
    stop
        Set this event to stop after the current step.
    command
        How the run was started, recorded in the checkpoint.
    model_settings
        Architecture settings when ``model`` is a name.
    **overrides
        Training settings that replace those of ``config`` (e.g. ``epochs=5``).

    Returns
    -------
    Generator
        Yields :mod:`~napari_addunet.engine.training_events`; its return value (the
        ``StopIteration.value``) is a :class:`TrainingResult`. Closing it once it has
        started stops the run and still writes the files; closed before the first ``next()``,
        nothing ran and nothing is written.

    Raises
    ------
    DataError
        Data and model do not fit (labels without a head, lambda > 0 without a head or
        labels, denoise_weight 0 without a head or labels, images smaller than a patch, ...).
    ConfigError
        A setting is unknown or out of range, or denoise_weight and lambda_cls are both 0.
    FileExistsError
        ``output`` exists and neither ``overwrite`` nor ``resume`` was given.
    """
    run = _Run(
        data, model, config, validation, output, resume, overwrite, stop, command, model_settings, overrides
    )
    return _RunEvents(run)


class _RunEvents(Generator):
    """The events of a prepared run, as a generator that also cleans up if never started.

    A plain generator closed (or dropped) before its first ``next()`` runs none of its code,
    so the process group that :class:`_Run` joined while preparing would stay open. This
    wrapper leaves it in that case; once started, the run's own generator does.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._events = run.events()
        self._started = False
        self._closed = False

    def send(self, value: Any) -> TrainingEvent:
        self._started = True
        return self._events.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> TrainingEvent:
        if not self._started:
            self.close()
        if val is None and tb is None:
            return self._events.throw(typ)
        return self._events.throw(typ, val, tb)

    def close(self) -> None:
        if not self._started and not self._closed:
            ddp.teardown(self._run.ctx)
        self._closed = True
        self._events.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._started:
                self.close()


def train(
    data: TrainingData,
    model: DenoiserModel | str | None = None,
    config: TrainingConfig | Mapping[str, Any] | None = None,
    *,
    callback: Any = None,
    verbose: bool = False,
    **kwargs: Any,
) -> TrainingResult:
    """Train to the end (or until stopped) and return the trained model and its history.

    Takes the arguments of :func:`train_events`, plus ``callback``, called with every event,
    and ``verbose``: print one line per epoch (losses, validation PSNR, ...; as the command
    line does).

    Examples
    --------
    >>> from skimage import data as skdata                       # doctest: +SKIP
    >>> images = clean_data([skdata.camera(), skdata.moon()])    # doctest: +SKIP
    >>> result = train(images, "addunet", epochs=5, sigma_min=25, sigma_max=25,
    ...                output="camera.safetensors")              # doctest: +SKIP
    >>> result.model, result.history[-1]["val_psnr"]             # doctest: +SKIP
    """
    gen = train_events(data, model, config, **kwargs)
    try:
        while True:
            event = next(gen)
            if verbose and isinstance(event, EpochDone):
                print(summarize(event), flush=True)
            if callback is not None:
                callback(event)
    except StopIteration as done:
        return done.value
    finally:
        gen.close()


def summarize(event: EpochDone) -> str:
    """A one-line summary of an epoch, as printed by the command line."""
    parts = [f"epoch {event.epoch}/{event.epochs}", f"step {event.step}", f"loss {event.train.total:.5g}"]
    if event.train.classify:
        parts.append(f"(den {event.train.denoise:.4g}, cls {event.train.classify:.4g})")
    v = event.validation
    if v is not None:
        parts.append(f"val loss {v.loss.total:.5g}")
        if v.psnr is not None:
            vs = f"PSNR {v.psnr:.2f} dB" + (
                f" (input {v.input_psnr:.2f})" if v.input_psnr is not None else ""
            )
            parts.append(vs)
        if v.ssim is not None:
            parts.append(f"SSIM {v.ssim:.4f}")
        if v.accuracy is not None:
            parts.append(f"acc {v.accuracy:.3f}")
        if v.improved:
            parts.append("*")
    if event.gates:
        parts.append("gates " + ",".join(f"{g:.2f}" for g in event.gates))
    parts.append(f"{event.samples_per_second:.0f} patches/s")
    if event.eta_seconds and math.isfinite(event.eta_seconds) and event.epoch < event.epochs:
        parts.append(f"ETA {_duration(event.eta_seconds)}")
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
