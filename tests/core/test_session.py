"""The per-viewer session: shared model, results, observers, job claims; no Qt, no napari."""

from __future__ import annotations

import gc

import pytest

import napari_addunet
from napari_addunet.session import Session, SessionBusyError, session


class FakeViewer:
    pass


def test_one_session_per_viewer_and_proxies_unwrapped():
    a, b = FakeViewer(), FakeViewer()
    assert session(a) is session(a) is napari_addunet.session(a)
    assert session(a) is not session(b)

    class Proxy:
        __wrapped__ = a

    assert session(Proxy()) is session(a)


def test_sessions_die_with_their_viewer():
    from napari_addunet import session as module_or_function  # noqa: F401

    viewer = FakeViewer()
    state = session(viewer)
    state.record_run(object())
    import napari_addunet.session as module

    key = id(viewer)
    assert key in module._SESSIONS
    del viewer
    gc.collect()
    assert key not in module._SESSIONS


def test_model_changes_notify_observers(tmp_path):
    from napari_addunet import create_model, save_model

    state = Session()
    seen = []
    unsubscribe = state.subscribe(seen.append)
    model = create_model("addunet", width=4, kernels=(3,))
    state.set_model(model, "made here")
    assert state.model is model and seen == ["model"]
    assert state.model_info.architecture == "addunet"
    state.gates = (0.5,)
    state.gates = (0.5,)  # unchanged: no second event
    assert seen == ["model", "gates"]
    state.set_model(model, "again")
    assert state.gates is None  # a new model resets the chosen gates
    with pytest.raises(TypeError, match="napari-addunet model"):
        state.model = object()
    unsubscribe()
    state.device = "cpu"
    assert seen == ["model", "gates", "model"]
    with pytest.raises(napari_addunet.DeviceError, match="unknown device 'gpu'"):
        state.device = "gpu"
    assert state.device == "cpu"
    with pytest.raises(TypeError, match="takes a napari viewer, got int"):
        session(42)
    # load from a file; a broken file leaves the active model alone
    path = save_model(model, tmp_path / "m.safetensors")
    assert state.load(path) is state.model and state.model_source == str(path)
    before = state.model
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(napari_addunet.CheckpointError):
        state.load(tmp_path / "bad.safetensors")
    assert state.model is before


def test_bound_method_observers_are_weak():
    state = Session()

    class Widget:
        def __init__(self):
            self.seen = []

        def on_change(self, what):
            self.seen.append(what)

    widget = Widget()
    state.subscribe(widget.on_change)
    state.notify("run")
    assert widget.seen == ["run"]
    del widget
    gc.collect()
    state.notify("run")
    assert state._observers == {}


def test_dead_qt_objects_are_dropped():
    state = Session()

    def dead(_what):
        raise RuntimeError("wrapped C/C++ object of type QLabel has been deleted")

    state.subscribe(dead)
    state.notify("model")
    assert state._observers == {}


def test_jobs_are_claimed_once():
    state = Session()
    state.claim("inference", "Denoising 'a'")
    with pytest.raises(SessionBusyError, match="Denoising 'a' is still running"):
        state.claim("inference", "Denoising 'b'")
    state.claim("training", "Training")
    assert state.jobs == {"inference": "Denoising 'a'", "training": "Training"}
    state.release("inference")
    state.claim("inference", "Denoising 'b'")
    assert "running" in repr(state)


def test_ensure_model_loads_the_bundled_default():
    state = Session()
    model = state.ensure_model()
    assert model.architecture == "addunet" and state.model_source == "bundled addunet-gray-blind"
    assert state.ensure_model() is model
    state.load(None)  # as load_model(None): the bundled default, named as such
    assert state.model_source == "bundled addunet-gray-blind"


def test_chosen_gates_are_checked_against_the_active_model():
    from napari_addunet import create_model
    from napari_addunet.models.addunet import GateError

    state = Session()
    with pytest.raises(ValueError, match="no active model"):
        state.gates = (1.0, 1.0)
    state.set_model(create_model("addunet", width=4, kernels=(3, 3)), "made here")
    for bad, message in (
        ((-1, 1), "must be non-negative"),
        ((1, float("nan")), "must be finite"),
        ("12", "must be a sequence of 2 numbers"),
        ((1.0,), "has 2 gates"),
        (1.0, "must be a sequence"),
    ):
        with pytest.raises(GateError, match=message):
            state.gates = bad
        assert state.gates is None
    state.gates = [0.5, 2]
    assert state.gates == (0.5, 2.0)
    state.set_model(create_model("dncnn", depth=3, width=4), "no gates")
    with pytest.raises(GateError, match="no skip gates"):
        state.gates = (1.0,)
    state.device = None  # None means "auto", as everywhere else
    assert state.device == "auto"
