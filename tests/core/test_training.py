"""The training loop: it learns, stops cleanly, resumes exactly, repeats from a seed, explains bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from skimage import data as skdata

import napari_addunet as na
from napari_addunet.engine.datasets import DataError, clean_data, noisy_data, paired_data
from napari_addunet.engine.metrics import psnr
from napari_addunet.engine.training import TrainingError, _Run, cpu_has_bf16, train, train_events
from napari_addunet.engine.training_config import TrainingConfig, lr_at
from napari_addunet.engine.training_events import (
    CheckpointSaved,
    EpochDone,
    LossParts,
    StepDone,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
)
from napari_addunet.engine.training_state import TrainingStateError, load_state, loads, state_path_for

pytestmark = pytest.mark.usefixtures("one_thread")


def crops() -> list[np.ndarray]:
    cam, moon, coins = skdata.camera(), skdata.moon(), skdata.coins()
    return [
        cam[:128, :128],
        cam[128:256, 128:256],
        moon[:128, :128],
        coins[:128, :128],
        cam[300:428, 300:428],
    ]


def tiny(**kw) -> na.models.DenoiserModel:
    torch.manual_seed(0)
    return na.create_model("addunet", width=8, kernels=(3, 3, 3), **kw)


FAST = dict(batch_size=8, patch_size=32, lr=3e-3, warmup_steps=10, val_patches=16, device="cpu")


def weights(model) -> torch.Tensor:
    return torch.cat([v.detach().flatten().float() for v in model.state_dict().values()])


# -- it learns --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sup") / "model.safetensors"
    events = []
    result = train(
        clean_data(crops()),
        tiny(),
        dict(FAST, epochs=4, steps_per_epoch=40, sigma_min=25, sigma_max=25, val_fraction=0.2),
        output=out,
        callback=events.append,
        command="pytest",
    )
    return result, events, out


def test_supervised_run_lowers_the_loss_and_beats_the_noisy_input_on_held_out_images(supervised):
    result, events, _ = supervised
    epochs = [e for e in events if isinstance(e, EpochDone)]
    assert epochs[-1].train.total < 0.5 * epochs[0].train.total
    val = [e for e in events if isinstance(e, ValidationDone)]
    assert len(val) == 4
    assert val[-1].psnr > val[-1].input_psnr + 3  # sigma 25: noisy ~20.2 dB
    assert val[-1].ssim > val[-1].input_ssim
    assert result.reason == "completed" and result.step == 160
    assert result.best.psnr == pytest.approx(max(v.psnr for v in val), abs=0.3)


def test_events_are_typed_and_in_order(supervised):
    _, events, out = supervised
    assert isinstance(events[0], TrainingStarted) and events[0].total_steps == 160 and not events[0].resumed
    assert events[0].train_planes == 4 and events[0].val_planes == 1
    assert isinstance(events[-1], TrainingFinished) and events[-1].reason == "completed"
    steps = [e for e in events if isinstance(e, StepDone)]
    assert [s.step for s in steps] == list(range(1, 161))
    assert all(isinstance(s.loss, LossParts) and s.loss.classify == 0 for s in steps)
    assert all(len(s.gates) == 3 for s in steps) and steps[-1].samples_per_second > 0
    assert steps[-1].eta_seconds < steps[1].eta_seconds
    assert steps[0].lr == pytest.approx(3e-3 / 10)  # warm-up
    kinds = {e.kind for e in events if isinstance(e, CheckpointSaved)}
    assert kinds == {"best", "state"}
    epoch = [e for e in events if isinstance(e, EpochDone)][0]
    assert epoch.epoch == 1 and epoch.step == 40 and epoch.best.metric == "val_loss"
    assert epoch.validation is not None and epoch.elapsed_seconds > 0


def test_checkpoint_records_how_to_use_the_model(supervised):
    result, _, out = supervised
    loaded = na.load_model(out)
    torch.testing.assert_close(weights(loaded), weights(result.model))
    meta = loaded.metadata
    assert meta["normalization"] == {"method": "range", "low": 0.0, "high": 255.0}
    train_meta = meta["training"]
    assert train_meta["mode"] == "supervised" and train_meta["status"] == "completed"
    assert train_meta["noise"]["model"] == "gaussian" and train_meta["noise"]["sigma_255"] == [25.0, 25.0]
    assert train_meta["config"]["steps_per_epoch"] == 40 and train_meta["command"] == "pytest"
    assert train_meta["metrics"]["val_psnr"] > train_meta["metrics"]["val_input_psnr"]
    assert train_meta["data"]["train"]["planes"] == 4 and train_meta["steps"] == 160
    assert train_meta["seconds"] > 0 and "class_names" not in meta
    assert load_state(out)["step"] == 160


def test_noise2void_on_noisy_images_alone_beats_the_noisy_input():
    rng = np.random.default_rng(0)
    clean = [c.astype(np.float32) / 255 for c in crops()]
    noisy = [c + rng.normal(0, 25 / 255, c.shape).astype(np.float32) for c in clean]
    result = train(
        noisy_data(noisy[:4], normalization="none"),
        tiny(),
        dict(FAST, epochs=4, steps_per_epoch=50, mask_fraction=0.03, val_fraction=0.25),
    )
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.history[-1]["val_psnr"] is None  # no reference without clean images
    with torch.no_grad():
        out = result.model(torch.from_numpy(noisy[4])[None, None]).denoised[0, 0].numpy()
    assert psnr(clean[4], out) > psnr(clean[4], noisy[4]) + 2  # held-out image, never seen


def test_joint_denoise_and_classify_on_digits_beats_chance():
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = 500
    data = clean_data(
        list(digits.images[:n] / 16.0),
        labels=digits.target[:n],
        class_names=[str(i) for i in range(10)],
        normalization="none",
    )
    torch.manual_seed(0)
    model = na.create_model("addunet", width=16, kernels=(3, 3, 3), num_classes=10)
    result = train(
        data,
        model,
        dict(
            FAST,
            epochs=3,
            steps_per_epoch=100,
            batch_size=32,
            patch_size=8,
            lr=5e-3,
            sigma_min=10,
            sigma_max=10,
            lambda_cls=1.0,
            augment=False,
            val_fraction=0.2,
            val_patches=100,
        ),
    )
    assert result.best.accuracy > 0.3  # chance: 0.1
    assert result.history[-1]["train_classify"] < result.history[0]["train_classify"]
    assert result.model.metadata["class_names"] == [str(i) for i in range(10)]


def test_other_modes_noises_and_architectures_run(tmp_path):
    rng = np.random.default_rng(1)
    clean = [c.astype(np.float32) / 255 for c in crops()[:3]]
    shot1 = [c + rng.normal(0, 0.1, c.shape).astype(np.float32) for c in clean]
    shot2 = [c + rng.normal(0, 0.1, c.shape).astype(np.float32) for c in clean]
    short = dict(FAST, epochs=1, steps_per_epoch=3)
    n2n = train(paired_data(shot1, shot2, normalization="none"), tiny(), short)
    assert n2n.history[0]["val_psnr"] is not None  # against the other noisy shot
    pg = train(clean_data(clean), tiny(), dict(short, noise="poisson_gaussian", blur="motion", blur_size=5))
    assert pg.reason == "completed"
    torch.manual_seed(0)
    dncnn = na.create_model("dncnn", depth=3, width=8)
    res = train(clean_data(clean), dncnn, short, output=tmp_path / "d.safetensors")
    assert (
        res.history[0]["gates"] is None and na.load_model(tmp_path / "d.safetensors").architecture == "dncnn"
    )
    by_name = train(
        clean_data(clean, labels=[0, 1, 1]),
        "addunet",
        dict(short, lambda_cls=0.5),
        model_settings={"width": 4, "kernels": (3,)},
    )
    assert by_name.model.num_classes == 2 and by_name.best.accuracy is not None


def test_log_mse_is_minus_the_mean_psnr_and_weighs_each_patch_by_its_inverse_mse():
    from napari_addunet.engine.training import log_mse

    rng = np.random.default_rng(5)
    clean = rng.random((2, 1, 16, 16))
    noisy = clean + rng.normal(0, 1, clean.shape) * np.array([0.02, 0.2])[:, None, None, None]
    err = torch.tensor((noisy - clean) ** 2, requires_grad=True)
    loss = log_mse(err)
    expected = -np.mean([psnr(c, n) for c, n in zip(clean, noisy, strict=True)])
    assert float(loss.detach()) == pytest.approx(expected, abs=0.01)  # the 1e-6 floor: < 0.006 dB here
    loss.backward()
    mse = err.detach().flatten(1).mean(1)
    per_pixel = err.grad.flatten(1)[:, 0]  # the same for every pixel of a patch
    assert float(per_pixel[0] / per_pixel[1]) == pytest.approx(float((mse[1] + 1e-6) / (mse[0] + 1e-6)))
    assert float(mse[1] / mse[0]) > 50  # so the quiet patch's pixels weigh that much more
    # a mask keeps only its pixels: the same as the loss of those pixels alone
    mask = torch.zeros_like(err, dtype=torch.bool)
    mask[:, :, :8] = True
    assert float(log_mse(err.detach(), mask)) == pytest.approx(float(log_mse(err.detach()[:, :, :8])))
    # a patch with no masked pixel measures nothing: it was counted as a perfect 60 dB
    flat = torch.full((4, 1, 8, 8), 0.01, requires_grad=True)
    sparse = torch.zeros_like(flat, dtype=torch.bool)
    sparse[0, 0, 3, 3] = sparse[2, 0, 5, 1] = True
    assert float(log_mse(flat, sparse).detach()) == pytest.approx(-20.0, abs=1e-3)
    none = log_mse(flat, torch.zeros_like(sparse))
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_log_mse_training_learns_and_selects_the_best_epoch_by_it():
    result = train(
        clean_data(crops()),
        tiny(),
        dict(FAST, epochs=3, steps_per_epoch=30, sigma_min=5, sigma_max=50, val_fraction=0.2, loss="log_mse"),
    )
    h = result.history
    assert all(e["train_loss"] < 0 for e in h)  # minus a PSNR in dB
    assert h[-1]["train_loss"] < h[0]["train_loss"] - 3
    assert h[-1]["val_psnr"] > h[-1]["val_input_psnr"] + 3
    assert result.best.metric == "val_loss" and result.best.value == min(e["val_loss"] for e in h)


# -- stop, resume, repeat ---------------------------------------------------------------------------------
SMALL = dict(
    FAST,
    epochs=2,
    steps_per_epoch=5,
    patch_size=16,
    batch_size=4,
    val_patches=4,
    val_fraction=0.3,
    warmup_steps=3,
)


def small_data():
    rng = np.random.default_rng(2)
    return clean_data([rng.random((24, 24)).astype(np.float32) for _ in range(4)], normalization="none")


def test_stop_mid_epoch_leaves_a_loadable_model_and_the_last_state(tmp_path):
    stop = threading.Event()
    out = tmp_path / "m.safetensors"

    def on_event(e):
        if isinstance(e, StepDone) and e.step == 3:
            stop.set()

    result = train(small_data(), tiny(), SMALL, output=out, stop=stop, callback=on_event)
    assert result.reason == "stopped" and result.step == 3 and result.best is None
    loaded = na.load_model(out)
    assert loaded.metadata["training"]["status"] == "stopped" and loaded.metadata["training"]["steps"] == 3
    state = load_state(out)
    assert state["step"] == 3 and state["epoch"] == 0 and state["step_in_epoch"] == 3


def test_closing_the_generator_mid_epoch_leaves_files(tmp_path):
    out = tmp_path / "m.safetensors"
    gen = train_events(small_data(), tiny(), SMALL, output=out)
    for event in gen:
        if isinstance(event, StepDone) and event.step == 7:  # after the first epoch's best model
            break
    gen.close()
    assert load_state(out)["step"] == 7
    meta = na.load_model(out).metadata["training"]
    assert meta["status"] == "stopped" and meta["metrics"]["epoch"] == 1


def test_a_run_closed_or_dropped_before_it_starts_leaves_the_process_group_and_writes_nothing(
    tmp_path, monkeypatch
):
    from napari_addunet.engine import training

    left = []
    monkeypatch.setattr(training.ddp, "teardown", lambda ctx: left.append(ctx))
    out = tmp_path / "m.safetensors"
    gen = train_events(small_data(), tiny(), SMALL, output=out)
    gen.close()
    assert len(left) == 1 and not out.exists()
    gen.close()  # closing again does nothing more
    assert len(left) == 1
    with pytest.raises(StopIteration):
        next(gen)
    train_events(small_data(), tiny(), SMALL)  # dropped unstarted
    import gc

    gc.collect()
    assert len(left) == 2
    # a started run leaves the group once, when it ends, however it is iterated
    result = train(small_data(), tiny(), SMALL)
    assert result.reason == "completed" and len(left) == 3


def stop_at_step_7(output, config=SMALL) -> None:
    """Train the SMALL run (or ``config``) into ``output`` and stop it after step 7 (of 10)."""
    stop = threading.Event()
    train(
        small_data(),
        tiny(),
        config,
        output=output,
        stop=stop,
        callback=lambda e: stop.set() if isinstance(e, StepDone) and e.step == 7 else None,
    )


def test_resume_continues_the_step_count_and_schedule_exactly(tmp_path):
    full_events: list = []
    full = train(
        small_data(), tiny(), SMALL, output=tmp_path / "full.safetensors", callback=full_events.append
    )

    part = tmp_path / "part.safetensors"
    stop_at_step_7(part)
    resumed_events: list = []
    resumed = train(small_data(), resume=part, callback=resumed_events.append)

    assert resumed_events[0].resumed and resumed_events[0].step == 7
    steps = [e for e in resumed_events if isinstance(e, StepDone)]
    assert [s.step for s in steps] == [8, 9, 10]
    cfg = TrainingConfig.from_dict(SMALL)
    assert [s.lr for s in steps] == [lr_at(cfg, s - 1) for s in (8, 9, 10)]
    full_lrs = {e.step: e.lr for e in full_events if isinstance(e, StepDone)}
    assert [s.lr for s in steps] == [full_lrs[s.step] for s in steps]
    # same optimizer state, data and noise streams: the same weights as without interruption
    assert torch.equal(
        load_state(part)["model"]["beta"], load_state(tmp_path / "full.safetensors")["model"]["beta"]
    )
    assert torch.equal(weights(resumed.model), weights(full.model))
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    assert resumed.step == 10 and resumed.reason == "completed"


def test_a_run_stopped_during_validation_validates_that_epoch_on_resume(tmp_path, monkeypatch):
    from napari_addunet.engine import training as training_module

    full = train(small_data(), tiny(), SMALL, output=tmp_path / "full.safetensors")
    out = tmp_path / "part.safetensors"
    real = training_module._Run._validate
    calls = []

    def interrupted(self):
        calls.append(self.step)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the first epoch is being validated
        return real(self)

    monkeypatch.setattr(training_module._Run, "_validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(small_data(), tiny(), SMALL, output=out)
    state = load_state(out)
    assert state["epoch"] == 0 and state["step"] == 5 and state["step_in_epoch"] == 5  # not counted
    resumed = train(small_data(), resume=out)
    assert calls == [5, 5, 10]  # the first epoch validated again, then the second
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    assert resumed.best.epoch == full.best.epoch and torch.equal(weights(resumed.model), weights(full.model))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="the CPU layout needs oneDNN")
def test_cpu_training_uses_channels_last_and_resumes_a_state_written_without_it(tmp_path, monkeypatch):
    from napari_addunet.engine import devices

    full = train(small_data(), tiny(), SMALL, output=tmp_path / "full.safetensors")
    convs = [p for p in full.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)

    # a run stopped by a version that trained in the default layout ...
    part = tmp_path / "part.safetensors"
    with monkeypatch.context() as m:
        m.setattr(devices, "prefers_channels_last", lambda device: False)
        stop_at_step_7(part)
    assert all(v.is_contiguous() for v in load_state(part)["model"].values())
    # ... continues in the fast layout to (nearly) the weights of the uninterrupted run
    resumed = train(small_data(), resume=part)
    assert resumed.step == 10 and resumed.reason == "completed"
    assert all(
        p.is_contiguous(memory_format=torch.channels_last) for p in resumed.model.parameters() if p.dim() == 4
    )
    torch.testing.assert_close(weights(resumed.model), weights(full.model), rtol=1e-3, atol=1e-4)


def test_resume_with_more_epochs_extends_the_run(tmp_path):
    out = tmp_path / "m.safetensors"
    train(small_data(), tiny(), dict(SMALL, epochs=1), output=out)
    more = train(small_data(), resume=out, epochs=2)
    assert more.step == 10 and len(more.history) == 2


def test_resume_applies_new_training_settings_and_refuses_new_model_settings(tmp_path):
    out = tmp_path / "m.safetensors"
    train(small_data(), tiny(), dict(SMALL, epochs=1), output=out)
    before = out.read_bytes()
    with pytest.raises(DataError, match="cannot resume with model_settings: .*width"):
        train(small_data(), "addunet", resume=out, epochs=2, model_settings={"width": 8})
    assert out.read_bytes() == before
    more = train(small_data(), resume=out, epochs=2, lr=3e-4)
    assert more.step == 10
    assert loads(load_state(out)["config"])["lr"] == 3e-4  # saved with the state
    other = tmp_path / "n.safetensors"
    train(small_data(), tiny(), dict(SMALL, epochs=1), output=other)
    plain = train(small_data(), resume=other, epochs=2).history[-1]["lr"]
    assert more.history[-1]["lr"] == pytest.approx(plain * 3e-4 / SMALL["lr"])  # the schedule uses it


def test_resume_refuses_a_seed_that_would_pick_other_validation_images(tmp_path):
    out = tmp_path / "m.safetensors"
    data = clean_data([np.random.default_rng(i).random((24, 24)).astype(np.float32) for i in range(8)])
    config = dict(SMALL, epochs=1, val_fraction=0.25)
    train(data, tiny(), config, output=out)
    before = out.read_bytes(), state_path_for(out).read_bytes()
    with pytest.raises(DataError, match="cannot resume with seed 2 / val_seed -1: .* pass val_seed=0"):
        train(data, resume=out, epochs=2, seed=2)
    with pytest.raises(DataError, match="val_patches=8"):
        train(data, resume=out, epochs=2, val_patches=8)
    assert (out.read_bytes(), state_path_for(out).read_bytes()) == before
    assert train(data, resume=out, epochs=2, seed=2, val_seed=0).step == 10  # the same split


def test_resume_refuses_other_validation_images_with_the_same_counts(tmp_path):
    from skimage import io as skio

    rng = np.random.default_rng(3)
    for folder in ("first", "other"):
        (tmp_path / folder).mkdir()
        for i in range(4):
            skio.imsave(tmp_path / folder / f"{folder}{i}.png", (rng.random((24, 24)) * 255).astype(np.uint8))
    out = tmp_path / "m.safetensors"
    train(clean_data(tmp_path / "first"), tiny(), dict(SMALL, epochs=1, val_fraction=0.25), output=out)
    with pytest.raises(DataError, match="the validation images differ .* other"):
        train(clean_data(tmp_path / "other"), resume=out, epochs=2)
    assert train(clean_data(tmp_path / "first"), resume=out, epochs=2).step == 10


def test_a_resumed_run_keeps_its_first_command_and_lists_the_resumes(tmp_path):
    out = tmp_path / "m.safetensors"
    train(small_data(), tiny(), dict(SMALL, epochs=1), output=out, command="first --sigma 25")
    train(small_data(), resume=out, epochs=2, command="second --resume")
    training = na.load_model(out).metadata["training"]
    assert training["command"] == "first --sigma 25" and training["resumed_with"] == ["second --resume"]
    train(small_data(), resume=out, epochs=3, command="third --resume")
    training = na.load_model(out).metadata["training"]
    assert training["command"] == "first --sigma 25"
    assert training["resumed_with"] == ["second --resume", "third --resume"]


def test_resuming_into_a_new_file_holds_the_best_model_from_the_start(tmp_path, monkeypatch):
    first, moved = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    stop_at_step_7(first)  # epoch 1 validated: a best model in a.safetensors

    def crash(self):
        raise RuntimeError("the machine went away")  # a failure inside a step writes nothing

    monkeypatch.setattr(_Run, "_train_step", crash)
    with pytest.raises(RuntimeError, match="went away"):
        train(small_data(), resume=first, output=moved)
    assert moved.is_file()
    assert torch.equal(weights(na.load_model(moved)), weights(na.load_model(first)))
    meta = na.load_model(moved).metadata["training"]
    assert meta["metrics"]["epoch"] == na.load_model(first).metadata["training"]["metrics"]["epoch"] == 1


def test_same_seed_same_weights_other_seed_other_weights():
    a = train(small_data(), tiny(), SMALL)
    b = train(small_data(), tiny(), SMALL)
    c = train(small_data(), tiny(), dict(SMALL, seed=1))
    assert torch.equal(weights(a.model), weights(b.model))
    assert not torch.equal(weights(a.model), weights(c.model))
    # a model built by name is seeded too
    d = train(small_data(), "addunet", SMALL, model_settings={"width": 4, "kernels": (3,)})
    e = train(small_data(), "addunet", SMALL, model_settings={"width": 4, "kernels": (3,)})
    assert torch.equal(weights(d.model), weights(e.model))


def test_early_stopping_after_patience_epochs_without_improvement(monkeypatch):
    losses = iter([1.0, 0.5, 0.6, 0.7, 0.4])

    def fake_validate(self):
        return LossParts(0, 0, next(losses)), None, None, None

    monkeypatch.setattr(_Run, "_validate", fake_validate)
    result = train(small_data(), tiny(), dict(SMALL, epochs=5, steps_per_epoch=1, patience=2))
    assert result.reason == "early_stopping" and len(result.history) == 4 and result.best.epoch == 2
    # patience running out with the last epoch is a completed run, not an early stop
    losses = iter([1.0, 0.5, 0.6, 0.7])
    result = train(small_data(), tiny(), dict(SMALL, epochs=4, steps_per_epoch=1, patience=2))
    assert result.reason == "completed" and len(result.history) == 4
    assert result.model.metadata["training"]["status"] == "completed"


# -- bad input ------------------------------------------------------------------------------------------------
def labelled():
    return clean_data([np.zeros((24, 24), np.float32)] * 2, labels=["a", "b"], normalization="none")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(data="labelled", model="plain"),
            DataError,
            "labels were given but this addunet has no classification head",
        ),
        (
            dict(data="plain", model="plain", lambda_cls=1.0),
            DataError,
            r"lambda > 0 \(1\) weights a classification loss",
        ),
        (dict(data="plain", model="head", lambda_cls=1.0), DataError, r"lambda > 0 \(1\) needs labels"),
        (dict(data="labelled", model="head1"), DataError, "the labels have 2 classes .* head has 1"),
        (dict(data="plain", model="plain", patch_size=64), DataError, "smaller than the 64x64 patch"),
        (dict(data="plain", model="plain", lr=-1), na.ConfigError, "training.lr must be >= "),
        (dict(data="plain", model="plain", epoch=3), na.ConfigError, "unknown training setting 'epoch'"),
        (dict(data="array", model="plain"), TypeError, "data must be TrainingData"),
        (dict(data="plain", model="module"), TypeError, "not a napari-addunet model"),
    ],
)
def test_bad_input_gives_clear_messages(kwargs, error, match):
    kwargs = dict(kwargs)
    data = {"labelled": labelled(), "plain": small_data(), "array": np.zeros((24, 24))}[kwargs.pop("data")]
    model = {
        "plain": tiny(),
        "head": tiny(num_classes=2),
        "head1": tiny(num_classes=1),
        "module": torch.nn.Conv2d(1, 1, 3),
    }[kwargs.pop("model")]
    with pytest.raises(error, match=match):
        train_events(data, model, dict(SMALL, **kwargs))


def test_files_are_protected_and_resume_needs_a_state(tmp_path):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="m.safetensors exists; pass overwrite=True"):
        train_events(small_data(), tiny(), SMALL, output=out)
    with pytest.raises(TrainingStateError, match="no training state m.state.pt beside m.safetensors"):
        train_events(small_data(), resume=out)
    with pytest.raises(na.CheckpointError, match="must end in .safetensors"):
        train_events(small_data(), tiny(), SMALL, output=tmp_path / "m.pt")
    good = tmp_path / "g.safetensors"
    train(small_data(), tiny(), dict(SMALL, epochs=1, steps_per_epoch=1), output=good)
    assert state_path_for(good).exists()
    other = clean_data([np.zeros((24, 24), np.float32)] * 7, normalization="none")
    with pytest.raises(DataError, match="cannot resume: the data differ"):
        train_events(other, resume=good)
    # a state file left by an earlier run is protected like the model file
    orphan = tmp_path / "o.safetensors"
    state_path_for(orphan).write_bytes(b"earlier state")
    with pytest.raises(FileExistsError, match=r"o.state.pt \(the training state of an earlier run\) exists"):
        train_events(small_data(), tiny(), SMALL, output=orphan)
    assert state_path_for(orphan).read_bytes() == b"earlier state" and not orphan.exists()
    # a folder where the model or its state would go is refused before any training
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(na.CheckpointError, match="d.safetensors is a folder"):
        train_events(small_data(), tiny(), SMALL, output=tmp_path / "d.safetensors", overwrite=True)
    (tmp_path / "e.state.pt").mkdir()
    with pytest.raises(na.CheckpointError, match="e.state.pt is a folder"):
        train_events(small_data(), tiny(), SMALL, output=tmp_path / "e.safetensors", overwrite=True)


def test_validation_data_must_map_like_the_training_data():
    rng = np.random.default_rng(0)
    images = [rng.random((32, 32)).astype(np.float32) for _ in range(4)]
    data = clean_data(images[:2], labels=["a", "b"])
    with pytest.raises(DataError, match=r"validation classes \['b'\] differ .* class_names=\['a', 'b'\]"):
        train_events(data, tiny(num_classes=2), SMALL, validation=clean_data(images[2:], labels=["b", "b"]))
    as_bytes = clean_data([(i * 255).astype(np.uint8) for i in images[2:]], labels=["a", "b"])
    with pytest.raises(
        DataError, match="validation data are normalised as .*range.* but training data as .*percentile"
    ):
        train_events(data, tiny(num_classes=2), SMALL, validation=as_bytes)
    with pytest.raises(TypeError, match="validation must be built with clean_data.* got list"):
        train_events(data, tiny(num_classes=2), SMALL, validation=[images[2]])
    same = clean_data(images[2:], labels=["b", "a"], class_names=["a", "b"])
    assert train(data, tiny(num_classes=2), dict(SMALL, epochs=1, lambda_cls=1.0), validation=same).history
    # labels with lambda_cls 0: the head would not learn, and the run says so
    with pytest.warns(UserWarning, match="labels are given but lambda_cls is 0"):
        train_events(data, tiny(num_classes=2), dict(SMALL, epochs=1), validation=same)
    # labels on one side only: the validation would score the classification on nothing
    with pytest.raises(DataError, match="training data have class labels but the validation data do not"):
        train_events(data, tiny(num_classes=2), SMALL, validation=clean_data(images[2:]))
    with pytest.raises(DataError, match="validation data have class labels but the training data do not"):
        train_events(clean_data(images[:2]), tiny(num_classes=2), SMALL, validation=same)


def test_a_diverging_loss_stops_with_a_clear_message():
    huge = clean_data(np.full((24, 24), 1e30, np.float32), normalization="none")
    with pytest.raises(TrainingError, match="the loss became .* at step 1: lower the learning rate"):
        train(huge, tiny(), dict(SMALL, val_fraction=0))


# -- bfloat16 on the CPU ----------------------------------------------------------------------------
@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16")
def test_cpu_bf16_training_learns_and_computes_in_bfloat16(monkeypatch):
    seen = []
    real_conv = torch.nn.functional.conv2d

    def spy(x, w, *args, **kwargs):
        out = real_conv(x, w, *args, **kwargs)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    config = dict(FAST, epochs=2, steps_per_epoch=30, sigma_min=25, sigma_max=25, val_fraction=0.2)
    result = train(clean_data(crops()), tiny(), dict(config, cpu_bf16=True))
    assert torch.bfloat16 in seen  # the training steps ran in bfloat16 ...
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # ... on float32 weights
    last = result.history[-1]
    assert last["val_psnr"] > last["val_input_psnr"] + 3
    seen.clear()
    train(clean_data(crops()), tiny(), dict(config, epochs=1, steps_per_epoch=2))
    assert seen and torch.bfloat16 not in seen  # off by default


def test_cpu_bf16_is_refused_on_a_cpu_without_it(monkeypatch):
    import napari_addunet.engine.training as training

    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    with pytest.raises(TrainingError, match="native bfloat16"):
        train(small_data(), tiny(), dict(SMALL, cpu_bf16=True))
    train(small_data(), tiny(), SMALL)  # the default does not need it


# -- a run that starts from trained weights keeps their record ----------------------------------------
def test_a_run_from_trained_weights_records_the_earlier_run_through_a_resume(tmp_path):
    first = tmp_path / "first.safetensors"
    train(small_data(), tiny(), SMALL, output=first, command="first command")
    assert "started_from" not in na.load_model(first).metadata["training"]  # a new model has no past

    second = tmp_path / "second.safetensors"
    stop = threading.Event()
    train(
        small_data(),
        na.load_model(first),
        dict(SMALL, lr=1e-3),
        output=second,
        stop=stop,
        command="second command",
        callback=lambda e: stop.set() if isinstance(e, StepDone) and e.step == 4 else None,
    )
    train(small_data(), resume=second)  # the resumed run must keep the record too
    record = na.load_model(second).metadata["training"]
    assert record["command"] == "second command" and record["steps"] == 10
    earlier = record["started_from"]
    assert earlier["command"] == "first command" and earlier["steps"] == 10
    assert earlier["metrics"]["step"] == na.load_model(first).metadata["training"]["metrics"]["step"]
    assert "data" not in earlier  # the record, not the full file listing

    third = tmp_path / "third.safetensors"
    train(small_data(), na.load_model(second), SMALL, output=third, command="third command")
    chain = na.load_model(third).metadata["training"]
    assert chain["started_from"]["command"] == "second command"
    assert chain["started_from"]["started_from"]["command"] == "first command"


# -- weight average (ema_decay) -------------------------------------------------------------------
def test_ema_validates_and_saves_the_average_without_changing_the_trained_weights(tmp_path):
    plain = tmp_path / "plain.safetensors"
    averaged = tmp_path / "averaged.safetensors"
    one_epoch = dict(SMALL, epochs=1)
    run_plain = train(small_data(), tiny(), one_epoch, output=plain)
    run_avg = train(small_data(), tiny(), dict(one_epoch, ema_decay=0.9), output=averaged)
    # the average does not feed back into training: the same trained weights
    raw_plain, raw_avg = load_state(plain)["model"], load_state(averaged)["model"]
    assert all(torch.equal(raw_plain[k], raw_avg[k]) for k in raw_plain)
    # ... but the run validates and saves the average, which differs from them
    saved = na.load_model(averaged).state_dict()
    average = load_state(averaged)["weight_average"]["tensors"]
    assert all(torch.allclose(saved[k], average[k].float()) for k in saved)
    assert not all(torch.equal(saved[k], raw_avg[k]) for k in saved)
    assert run_avg.history[0]["val_loss"] != run_plain.history[0]["val_loss"]
    assert na.load_model(averaged).metadata["training"]["config"]["ema_decay"] == 0.9


def test_ema_resumes_exactly(tmp_path):
    cfg = dict(SMALL, ema_decay=0.8)
    full = train(small_data(), tiny(), cfg, output=tmp_path / "full.safetensors")
    part = tmp_path / "part.safetensors"
    stop_at_step_7(part, cfg)
    resumed = train(small_data(), resume=part)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    assert torch.equal(weights(resumed.model), weights(full.model))
    assert load_state(part)["weight_average"]["updates"] == 10


def test_ema_decay_out_of_range_is_refused():
    with pytest.raises(na.ConfigError, match="ema_decay"):
        TrainingConfig.from_dict(ema_decay=1.0)


def test_val_seed_fixes_the_validation_set_across_training_seeds():
    def first_validation(**kw):
        result = train(clean_data(crops()), tiny(), dict(SMALL, epochs=1, val_fraction=0.4, **kw))
        return result.history[0]["val_input_psnr"]

    assert first_validation(seed=1) != first_validation(seed=2)  # the seed draws the validation
    assert first_validation(seed=1, val_seed=7) == first_validation(seed=2, val_seed=7)
    assert first_validation(seed=7) == first_validation(seed=3, val_seed=7)
    assert TrainingConfig.from_dict(seed=4).validation_seed == 4
    with pytest.raises(na.ConfigError, match="val_seed"):
        TrainingConfig.from_dict(val_seed=-2)


def test_ema_switched_on_at_resume_starts_from_the_restored_weights(tmp_path):
    part = tmp_path / "part.safetensors"
    stop_at_step_7(part)  # a run without an average
    train(small_data(), resume=part, ema_decay=0.9)
    state = load_state(part)
    assert state["weight_average"]["updates"] == 3  # steps 8-10 only
    assert TrainingConfig.from_dict(loads(state["config"])).ema_decay == 0.9


def test_verbose_prints_one_line_per_epoch(capsys):
    train(small_data(), tiny(), SMALL)
    assert capsys.readouterr().out == ""  # quiet by default
    train(small_data(), tiny(), SMALL, verbose=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" step")[0].strip() for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("loss" in line for line in lines)


# -- percentiles meet synthetic noise ---------------------------------------------------------------
def test_clean_16_bit_data_train_on_pairs_mapped_as_inference_maps_the_noisy_image(monkeypatch):
    a = skdata.camera().astype(np.float64)
    raw = (100 + a / 255 * 2900).astype(np.uint16)  # a 16-bit image: percentile normalisation
    data = clean_data([raw, raw[::-1]])  # two sources, one held out: same percentiles
    seen = []
    real = _Run._batch

    def spy(self):
        out = real(self)
        seen.append(out)
        return out

    monkeypatch.setattr(_Run, "_batch", spy)
    cfg = dict(FAST, sigma_min=25, sigma_max=25, epochs=1, steps_per_epoch=3, batch_size=16, patch_size=64)
    result = train(data, tiny(), cfg, val_fraction=0.5)
    # inference maps a noisy image by its own percentiles, which the noise pushes apart
    lo, hi = np.percentile(raw, [0.1, 99.9])
    noisy = raw + 25 / 255 * (hi - lo) * np.random.default_rng(0).standard_normal(raw.shape)
    lo_n, hi_n = np.percentile(noisy, [0.1, 99.9])
    expected = 25 / 255 * (hi - lo) / (hi_n - lo_n)
    assert expected < 0.8 * 25 / 255  # the effect is large: training on clean percentiles misses it
    noise = torch.cat([inp - target for inp, target, _, _ in seen])
    assert float(noise.std()) == pytest.approx(expected, rel=0.03)
    # validation metrics stay in the clean image's units: the noisy input is at sigma 25
    assert result.history[0]["val_input_psnr"] == pytest.approx(20 * np.log10(255 / 25), abs=0.3)
    assert "percentiles" in result.model.metadata["training"]["noise"]


def test_a_resume_honours_weight_decay_and_chooses_the_best_anew_when_validation_changes(tmp_path):
    part = tmp_path / "part.safetensors"
    stop_at_step_7(part)
    assert load_state(part)["best"] != "null"
    with pytest.warns(UserWarning, match="other sigma_max: validation now measures something else"):
        result = train(small_data(), resume=part, config=dict(SMALL, weight_decay=0.5, sigma_max=40))
    state = load_state(part)
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0.5  # the saved 1e-4 came back
    resets = result.model.metadata["training"]["best_resets"]
    assert resets[0]["step"] == 7 and resets[0]["changed"] == ["sigma_max"]
    assert result.best.step == 10  # chosen among the epochs judged the new way only


def test_a_resume_keeps_the_earlier_best_file_until_a_new_best_is_validated(tmp_path):
    part = tmp_path / "part.safetensors"
    stop_at_step_7(part)
    earlier = na.load_model(part).state_dict()
    stop = threading.Event()
    stop.set()  # stopped before the next validation
    with pytest.warns(UserWarning, match="validation now measures something else"):
        result = train(small_data(), resume=part, config=dict(SMALL, sigma_max=40), stop=stop)
    assert result.reason == "stopped"
    kept = na.load_model(part).state_dict()  # was the last, never validated weights
    assert all(torch.equal(kept[k], earlier[k]) for k in earlier)


def test_a_resume_resets_the_best_only_for_settings_its_mode_validates_with(tmp_path):
    import warnings

    from napari_addunet.engine.training import judging_settings

    assert "sigma_max" in judging_settings("supervised") and "mask_fraction" not in judging_settings(
        "supervised"
    )
    assert "mask_fraction" in judging_settings("noise2void") and "sigma_max" not in judging_settings(
        "noise2void"
    )
    assert "sigma_max" not in judging_settings("pairs") and "loss" in judging_settings("pairs")
    part = tmp_path / "part.safetensors"
    stop_at_step_7(part)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a supervised run has no mask: nothing to reset
        result = train(small_data(), resume=part, config=dict(SMALL, mask_fraction=0.05))
    assert not result.model.metadata["training"].get("best_resets")


def test_a_resume_refuses_a_model_other_than_its_own(tmp_path):
    part = tmp_path / "part.safetensors"
    stop_at_step_7(part)
    wider = na.create_model("addunet", width=12, kernels=(3, 3, 3))
    for other in (wider, na.create_model("dncnn", depth=3, width=4)):  # was a raw torch error
        with pytest.raises(DataError, match="is not the one of the run being resumed"):
            train_events(small_data(), other, resume=part)


def test_a_resume_refuses_another_steps_per_epoch(tmp_path):
    part = tmp_path / "part.safetensors"
    stop_at_step_7(part)
    with pytest.raises(DataError, match="cannot resume with steps_per_epoch=10: .* epochs of 5"):
        train_events(small_data(), resume=part, config=dict(SMALL, steps_per_epoch=10))


def test_a_non_finite_validation_loss_stops_the_run_with_a_message(monkeypatch):
    from napari_addunet.engine import training as training_module

    real = training_module._Run._validate

    def broken(self):
        parts, psnr, ssim, acc = real(self)
        return LossParts(parts.denoise, parts.classify, float("nan")), psnr, ssim, acc

    monkeypatch.setattr(training_module._Run, "_validate", broken)
    with pytest.raises(TrainingError, match="validation loss became nan at epoch 1"):
        train(small_data(), tiny(), SMALL)  # the best stayed NaN and never improved


def test_batch_norm_on_a_single_deepest_value_is_explained():
    data = clean_data(
        [np.random.default_rng(0).random((32, 32)).astype(np.float32)] * 3, normalization="none"
    )
    cfg = dict(epochs=1, steps_per_epoch=1, batch_size=1, patch_size=16, device="cpu", val_fraction=0)
    with pytest.raises(
        TrainingError, match="use batch_size >= 2 or a larger patch_size"
    ):  # torch's own words before
        train(data, "unet", cfg, model_settings={"batch_norm": True, "depth": 4, "base_width": 4})
