"""The state the plugin's widgets share in one napari viewer: the active model and the last results.

From napari's console (``Window > Console``), one line gives it::

    s = napari_addunet.session(viewer)

``s.model`` is the active model (load or train one in any widget and the others use it),
``s.last_run`` the last denoising run (:class:`~napari_addunet.engine.layer_run.RunRecord`:
time, megapixels per second, class probabilities ...), ``s.runs`` all of them,
``s.training`` the last training result (model, history), ``s.gates`` the values of the
Skip gates sliders, ``s.sweep`` the last gate sweep and ``s.device`` the chosen device.
Setting ``s.model = ...`` (or :meth:`Session.set_model`) updates every widget.

This module has no Qt and imports neither torch nor napari: the session is plain Python
(observers are plain callbacks), so scripts and tests can use it headless.
"""

from __future__ import annotations

import sys
import types
import weakref
from collections.abc import Callable
from typing import Any

Observer = Callable[[str], Any]
"""Called with the name of what changed: ``"model"``, ``"run"``, ``"training"``, ``"gates"``,
``"sweep"``, ``"device"`` or ``"busy"``."""


class SessionBusyError(RuntimeError):
    """A job of the same kind is already running in this viewer."""


class Session:
    """Shared state of the napari-addunet widgets in one viewer.

    Attributes
    ----------
    model
        The active model (None until one is loaded, trained or set).
    model_source
        Where it came from, e.g. ``"bundled addunet-gray-blind"``.
    device
        The device the widgets run on (``"auto"``, ``"cpu"``, ``"cuda:0"`` ...).
    last_run, runs
        The last denoising run and all runs of this session (newest last).
    training
        The last training result (:class:`~napari_addunet.engine.training.TrainingResult`).
    gates
        The Skip gates sliders' values (None: the model's learned gates).
    sweep
        The last gate sweep (:class:`~napari_addunet.engine.gate_preview.SweepResult`).
    """

    def __init__(self) -> None:
        self._model: Any = None
        self.model_source = ""
        self._device = "auto"
        self.last_run: Any = None
        self.runs: list[Any] = []
        self.training: Any = None
        self._gates: tuple[float, ...] | None = None
        self.sweep: Any = None
        self._info: Any = None
        self._observers: dict[int, Any] = {}
        self._next_token = 0
        self._jobs: dict[str, str] = {}

    def __repr__(self) -> str:
        model = f"{self._model.architecture} ({self.model_source})" if self._model is not None else "none"
        last = self.last_run.input_name if self.last_run is not None else "none"
        busy = f", running: {', '.join(self._jobs.values())}" if self._jobs else ""
        return f"<napari-addunet session: model {model}, device {self._device}, last run {last}{busy}>"

    # -- the model --------------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The active model (see :meth:`set_model`)."""
        return self._model

    @model.setter
    def model(self, model: Any) -> None:
        self.set_model(model, "set from the console")

    def set_model(self, model: Any, source: str = "") -> None:
        """Make ``model`` the active model of every widget in this viewer."""
        from napari_addunet.models import DenoiserModel

        if model is not None and not isinstance(model, DenoiserModel):
            raise TypeError(
                f"the active model must be a napari-addunet model (create_model, load_model), "
                f"got {type(model).__name__}"
            )
        self._model = model
        self.model_source = source if model is not None else ""
        self._info = None
        self._gates = None
        self.notify("model")

    def ensure_model(self) -> Any:
        """The active model, loading the bundled default first if there is none."""
        if self._model is None:
            from napari_addunet.engine.checkpoint import DEFAULT_MODEL, load_model

            self.set_model(load_model(DEFAULT_MODEL, device="cpu"), f"bundled {DEFAULT_MODEL}")
        return self._model

    def load(self, source: Any) -> Any:
        """Load a checkpoint file or a bundled model by name and make it active.

        Raises
        ------
        CheckpointError, FileNotFoundError
            The active model is then unchanged.
        """
        from napari_addunet.engine.checkpoint import DEFAULT_MODEL, bundled_models, load_model

        if source is None:  # as load_model(None): the bundled default
            source = DEFAULT_MODEL
        model = load_model(source, device="cpu")
        label = f"bundled {source}" if isinstance(source, str) and source in bundled_models() else str(source)
        self.set_model(model, label)
        return model

    @property
    def model_info(self) -> Any:
        """:class:`~napari_addunet.engine.readout.ModelInfo` of the active model (cached), or None."""
        if self._model is None:
            return None
        if self._info is None:
            from napari_addunet.engine.readout import model_info

            self._info = model_info(self._model, self.model_source)
        return self._info

    # -- settings shared by the widgets -------------------------------------------------------------
    @property
    def device(self) -> str:
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        from .engine.devices import resolve_device

        value = "auto" if value is None else str(value)
        resolve_device(value)  # DeviceError for a name that is unknown or not present here
        if value != self._device:
            self._device = value
            self.notify("device")

    @property
    def gates(self) -> tuple[float, ...] | None:
        return self._gates

    @gates.setter
    def gates(self, values: Any) -> None:
        """Gates chosen for the active AddUNet (None: its learned ones); checked against it."""
        from .engine.inference import check_gates

        if values is not None and self.model is None:
            raise ValueError("there is no active model to choose gates for; load or train one first")
        new = None if values is None else check_gates(self.model, values)
        if new != self._gates:
            self._gates = new
            self.notify("gates")

    # -- results ------------------------------------------------------------------------------------
    def record_run(self, record: Any) -> None:
        """Remember a finished run (a :class:`~napari_addunet.engine.layer_run.RunRecord`)."""
        self.last_run = record
        self.runs.append(record)
        self.notify("run")

    def record_training(self, result: Any) -> None:
        """Remember a training result."""
        self.training = result
        self.notify("training")

    def record_sweep(self, result: Any) -> None:
        self.sweep = result
        self.notify("sweep")

    # -- jobs ---------------------------------------------------------------------------------------
    @property
    def jobs(self) -> dict[str, str]:
        """Running jobs: kind (``"inference"``, ``"training"``, ``"sweep"``) -> description."""
        return dict(self._jobs)

    def claim(self, kind: str, description: str) -> None:
        """Mark a job of ``kind`` as running; :class:`SessionBusyError` if one already is."""
        if kind in self._jobs:
            raise SessionBusyError(
                f"{self._jobs[kind]} is still running; wait for it to finish or cancel it first"
            )
        self._jobs[kind] = description
        self.notify("busy")

    def release(self, kind: str) -> None:
        if self._jobs.pop(kind, None) is not None:
            self.notify("busy")

    # -- observers ----------------------------------------------------------------------------------
    def subscribe(self, callback: Observer) -> Callable[[], None]:
        """Call ``callback(what)`` after every change; returns a function that unsubscribes.

        Bound methods are held weakly, so a closed widget does not stay alive through its
        subscription.
        """
        token = self._next_token
        self._next_token += 1
        ref: Any
        if isinstance(callback, types.MethodType):
            ref = weakref.WeakMethod(callback)
        else:
            ref = lambda: callback  # noqa: E731 - a strong "reference" with the same interface
        self._observers[token] = ref

        def unsubscribe() -> None:
            self._observers.pop(token, None)

        return unsubscribe

    def notify(self, what: str) -> None:
        """Tell every observer that ``what`` changed.

        An observer whose Qt widget was deleted is dropped; any other exception of an observer
        propagates to the caller (and the observers after it are not called).
        """
        for token, ref in list(self._observers.items()):
            callback = ref()
            if callback is None:
                self._observers.pop(token, None)
                continue
            try:
                callback(what)
            except RuntimeError as exc:
                if "deleted" in str(exc):  # a Qt widget already destroyed
                    self._observers.pop(token, None)
                else:
                    raise


# -- one session per viewer ------------------------------------------------------------------------
_SESSIONS: dict[int, tuple[weakref.ref, Session]] = {}


def _unwrap(viewer: Any) -> Any:
    # napari hands plugin widgets a proxy of the viewer; key the session by the viewer itself
    return getattr(viewer, "__wrapped__", viewer)


def session(viewer: Any = None) -> Session:
    """The shared napari-addunet state of a napari viewer (created on first use).

    Parameters
    ----------
    viewer
        A ``napari.Viewer``; None: the current viewer (``napari.current_viewer()``).

    Examples
    --------
    In napari's console::

        s = napari_addunet.session(viewer)
        s.model, s.last_run, s.training
    """
    if viewer is None:
        import napari

        viewer = napari.current_viewer()
        if viewer is None:
            raise RuntimeError("no napari viewer is open; pass the viewer: napari_addunet.session(viewer)")
    viewer = _unwrap(viewer)
    key = id(viewer)
    hit = _SESSIONS.get(key)
    if hit is not None and hit[0]() is viewer:
        return hit[1]
    state = Session()
    try:
        ref = weakref.ref(viewer, lambda _r, key=key: _drop(key, _r))
    except TypeError:  # numbers, strings, ...
        raise TypeError(
            f"session() takes a napari viewer, got {type(viewer).__name__}: {viewer!r:.60}"
        ) from None
    _SESSIONS[key] = (ref, state)
    return state


def _drop(key: int, ref: weakref.ref) -> None:
    hit = _SESSIONS.get(key)
    if hit is not None and hit[0] is ref:
        del _SESSIONS[key]


class _CallableModule(types.ModuleType):
    """``napari_addunet.session(viewer)`` must work even after ``import napari_addunet.session``
    (which makes the package attribute ``session`` this module rather than the function)."""

    def __call__(self, viewer: Any = None) -> Session:
        return session(viewer)


sys.modules[__name__].__class__ = _CallableModule
