"""Small Qt pieces shared by the dock widgets: layer and device choosers, messages."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, Signal
from qtpy.QtWidgets import QComboBox, QLabel, QLineEdit, QSizePolicy, QWidget

from napari_addunet.engine.devices import available_devices


class DockWidget(QWidget):
    """A dock widget that goes as soon as napari takes it out of its dock.

    napari's close button only detaches the widget (``setParent(None)``); held in reference
    cycles, it would live on until a garbage collection, its job running and its callbacks
    acting on the session. Deleted at once instead, its jobs stop and its clean-ups run now.
    """

    _docked = False

    def event(self, e: QEvent) -> bool:
        if e.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self._docked = False
                run_when_destroyed_now(self)  # its jobs stop and its clean-ups run now
                self.deleteLater()
        return super().event(e)


def real_viewer(viewer: Any) -> Any:
    """The viewer behind napari's plugin proxy (the widgets key shared state by it)."""
    return getattr(viewer, "__wrapped__", viewer)


def start_worker(worker: Any, spare: int = 2) -> None:
    """Start a napari thread worker, keeping threads free in Qt's global thread pool.

    napari's workers run in ``QThreadPool.globalInstance()``, whose size is the number of
    CPU cores. Qt also uses that pool for short tasks that the UI thread waits for (e.g.
    scaling an image for a widget). If long workers (training, a big run) hold every
    thread, the UI thread waits for a free one, freezing the viewer, and deadlocks when a
    worker needs Python's interpreter lock, which the waiting UI thread holds. So the pool
    may grow to the running workers plus ``spare``.
    """
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    needed = pool.activeThreadCount() + 1 + spare
    if pool.maxThreadCount() < needed:
        pool.setMaxThreadCount(needed)
    worker.start()


def is_deleted(obj: Any) -> bool:
    """Whether the C++ side of a Qt object is gone (its Python wrapper may outlive it)."""
    try:
        from qtpy import sip

        return bool(sip.isdeleted(obj))
    except ImportError:  # PySide
        from qtpy import shiboken

        return not shiboken.isValid(obj)


def camera_of(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def show_error(message: str) -> None:
    from napari.utils.notifications import show_error as _show

    _show(message)


def show_info(message: str) -> None:
    from napari.utils.notifications import show_info as _show

    _show(message)


def is_image_layer(layer: Any) -> bool:
    """An image layer that can be an input: not the Skip gates widget's own preview layer."""
    from napari.layers import Image

    if not isinstance(layer, Image):
        return False
    record = (layer.metadata or {}).get("napari_addunet")
    return not (isinstance(record, dict) and "preview_of" in record)


def axes_edit() -> QLineEdit:
    """The Axes box: empty for the axes inferred from the shape, else one letter per dimension."""
    edit = QLineEdit()
    edit.setPlaceholderText("auto (as detected)")
    edit.setToolTip(
        "Override the axes: letters T (time), Z (depth), C (channel), Y, X, one per dimension, e.g. ZYX, CYX, TZYX"
    )
    return edit


def layer_world_point(viewer: Any, layer: Any, point: Any) -> list[float]:
    """A world point of the viewer in the layer's own units, ready for ``layer.world_to_data``.

    With layers in different units (e.g. a stack in um beside one in nm), napari's world
    coordinates are in the viewer's units, and ``world_to_data`` alone would read them in
    the layer's: napari slices with the ratio of the two, and so does this.
    """
    out = [float(v) for v in point]
    world_units = getattr(viewer.dims, "units", None)
    layer_units = getattr(layer, "units", None)
    if not world_units or not layer_units or len(world_units) < len(layer_units):
        return out
    offset = len(out) - len(layer_units)
    for i, (w, u) in enumerate(zip(tuple(world_units)[-len(layer_units) :], layer_units, strict=True)):
        if offset + i < 0:
            continue
        try:
            factor = float((1 * w).to(u).magnitude)
        except Exception:  # units of other kinds (pixels beside micrometres): napari keeps them as they are
            continue
        out[offset + i] *= factor
    return out


def layer_view_point(viewer: Any, layer: Any, on_screen: Any = None) -> np.ndarray:
    """A point of the view in ``layer``'s data coordinates, as napari draws the layer.

    napari takes the slice of the axes off screen from their own part of the layer's
    transform, and draws the axes on screen with theirs: a shear or rotation that ties the
    two together is left out of both (the slice from the inverse transform, the drawing
    from the forward one). The numbers are computed the same way, so that a sheared stack
    reads the slice and the place on screen.

    Parameters
    ----------
    viewer
        The napari viewer.
    layer
        An image layer.
    on_screen
        World coordinates of the axes on screen (e.g. the camera centre), one per displayed
        dimension; None: the viewer's dims point.

    Returns
    -------
    numpy.ndarray
        One number per axis of the layer: the slice napari shows along the axes off screen,
        the point ``on_screen`` along the others.
    """
    dims = viewer.dims
    point = [float(v) for v in dims.point]
    if on_screen is not None:
        for d, c in zip(dims.displayed, list(on_screen), strict=True):
            point[d] = float(c)
    off = list(point)
    for d in dims.displayed:
        off[d] = 0.0
    out = np.asarray(layer.world_to_data(layer_world_point(viewer, layer, off)), dtype=float)
    lead = len(point) - len(out)
    on = np.asarray([d - lead for d in dims.displayed if d - lead >= 0], dtype=int)
    if on.size:
        world = np.asarray(layer_world_point(viewer, layer, point), dtype=float)[lead:]
        base, forward = layer_forward(layer)
        out[on] = np.linalg.solve(forward[np.ix_(on, on)], world[on] - base[on])
    return out


def layer_forward(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """The layer's data-to-world transform as ``world = base + forward @ data`` (layer axes)."""
    base = np.asarray(layer.data_to_world(np.zeros(layer.ndim)), dtype=float)
    columns = [np.asarray(layer.data_to_world(e), dtype=float) - base for e in np.eye(layer.ndim)]
    return base, np.stack(columns, axis=1)


def without_alpha(layer: Any, axes: str | None) -> Any:
    """The layer's array without the alpha channel of an RGBA layer (denoising leaves alpha
    alone, and it carries no noise); a view, not a copy. The same rule as a run's
    (:func:`~napari_addunet.engine.layer_run.iter_layer_denoise`): ``axes`` None or ending
    in C (e.g. ``YXC``, typed or recorded by a run); other axes keep every channel."""
    data = layer.data
    colour_last = axes is None or axes.upper().endswith("C")
    if colour_last and getattr(layer, "rgb", False) and data.shape[-1] == 4:
        return data[..., :3]
    return data


def axes_of(edit: QLineEdit) -> str | None:
    """The axes typed in an Axes box, or None (infer them)."""
    return edit.text().strip().upper() or None


def status_label() -> QLabel:
    label = QLabel("")
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
    return label


def set_status(label: QLabel, text: str, error: bool = False) -> None:
    label.setText(text)
    label.setStyleSheet("color: #ff6b6b;" if error else "")


class LayerCombo(QComboBox):
    """The viewer's layers of one kind, kept in sync with the layer list (inserts, removals, renames).

    Parameters
    ----------
    viewer
        The napari viewer.
    accept
        Which layers to list (default: image layers).
    none_text
        If given, a first entry meaning "no layer".
    """

    layer_changed = Signal(object)
    #: the selected layer's data were replaced (its shape may differ)
    data_changed = Signal(object)

    def __init__(
        self,
        viewer: Any,
        accept: Callable[[Any], bool] = is_image_layer,
        none_text: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._accept = accept
        self._none_text = none_text
        self._layers: list[Any] = []
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self.refresh)
        events.moved.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
            layer.events.data.connect(self._on_data)
        self.currentIndexChanged.connect(self._emit)
        self.refresh()

    def _on_inserted(self, event: Any = None) -> None:
        if event is not None and getattr(event, "value", None) is not None:
            event.value.events.name.connect(self.refresh)
            event.value.events.data.connect(self._on_data)
        self.refresh()

    def _on_data(self, event: Any = None) -> None:
        layer = self.layer()
        if layer is not None and getattr(event, "source", None) is layer:
            self.data_changed.emit(layer)

    def refresh(self, *_: Any) -> None:
        """Rebuild the entries, keeping the selected layer when it is still there."""
        current = self.layer()
        layers = [layer for layer in self.viewer.layers if self._accept(layer)]
        self.blockSignals(True)
        self.clear()
        self._layers = ([None] if self._none_text is not None else []) + layers
        if self._none_text is not None:
            self.addItem(self._none_text)
        for layer in layers:
            self.addItem(layer.name)
        if current is not None and current in layers:
            self.setCurrentIndex(self._layers.index(current))
        self.blockSignals(False)
        if self.layer() is not current:
            self._emit()

    def _emit(self, *_: Any) -> None:
        self.layer_changed.emit(self.layer())

    def layer(self) -> Any:
        """The selected layer, or None."""
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_layer(self, layer: Any) -> None:
        """Select a layer (object or name)."""
        if isinstance(layer, str):
            layer = self.viewer.layers[layer]
        if layer not in self._layers:
            raise ValueError(f"layer {getattr(layer, 'name', layer)!r} is not offered here")
        self.setCurrentIndex(self._layers.index(layer))


class DeviceCombo(QComboBox):
    """``auto`` and the devices really present (CUDA devices with their names and memory, MPS, CPU)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.addItem("auto (best available)", "auto")
        for info in available_devices():
            self.addItem(info.label, info.name)
        self.setToolTip(
            "Where the network runs; 'auto' takes the CUDA device with most free memory, then MPS, then the CPU"
        )

    def device(self) -> str:
        return str(self.currentData())

    def set_device(self, name: str) -> None:
        i = self.findData(name)
        if i < 0:
            present = ", ".join(str(self.itemData(k)) for k in range(self.count()))
            raise ValueError(f"device {name!r} is not present here (present: {present})")
        self.setCurrentIndex(i)


#: Callbacks waiting for a Qt object's destruction, reachable from here: a callback reachable
#: only from an object that the garbage collector is collecting can be cleared (its bound
#: arguments dropped) before Qt calls it.
_WHEN_DESTROYED: dict[int, Callable[..., None]] = {}


_OWNERS: dict[int, list[int]] = {}
"""The callbacks of each object still waiting (by ``id``), for :func:`run_when_destroyed_now`."""


def _destroyed(key: int, owner: int, fn: Callable[[], Any], *_args: Any) -> None:
    keys = _OWNERS.get(owner)
    if keys is not None and key in keys:
        keys.remove(key)
        if not keys:
            del _OWNERS[owner]
    if _WHEN_DESTROYED.pop(key, None) is not None:  # once, whichever way comes first
        fn()


def run_when_destroyed_now(obj: QObject) -> None:
    """Run now what :func:`call_when_destroyed` holds for ``obj`` and its child objects."""
    for o in [obj, *obj.findChildren(QObject)]:
        for key in list(_OWNERS.get(id(o), [])):
            callback = _WHEN_DESTROYED.get(key)
            if callback is not None:
                callback()


def call_when_destroyed(obj: QObject, fn: Callable[[], Any]) -> None:
    """Call ``fn()`` once when ``obj`` goes (``fn`` must not use ``obj``).

    Either Qt destroys it (e.g. with its parent), or its Python side is collected: napari takes
    a closed dock's widget out of the dock, and the widget then goes with its last Python
    reference, a deletion whose ``destroyed`` signal no longer reaches Python callbacks.
    """
    key = id(fn)
    _WHEN_DESTROYED[key] = functools.partial(_destroyed, key, id(obj), fn)
    _OWNERS.setdefault(id(obj), []).append(key)
    obj.destroyed.connect(_WHEN_DESTROYED[key])
    weakref.finalize(obj, _WHEN_DESTROYED[key])
