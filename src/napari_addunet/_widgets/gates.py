"""**Skip gates**: one slider per AddUNet gate, a live preview of the slice on screen, Apply, Sweep.

Engine calls (see ``docs/scripting.md``): :class:`napari_addunet.engine.gate_preview.SlicePreview`
(``update`` for the preview, ``sweep`` for the PSNR/SSIM curve) and
:func:`napari_addunet.engine.layer_run.iter_layer_denoise` with ``gates=`` for Apply.

The preview: a slider move restarts a short debounce timer; when it fires, a request for
the current slice, view centre and gates goes to one worker. While it computes, newer
requests replace each other, and the newest runs next (the result of a superseded request
is not shown). The encoder's output for the slice is cached, so a request only re-runs the
decoder from the deepest gate that changed.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
import weakref
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)
from superqt import QLabeledDoubleSlider

from napari_addunet.engine.axes import AxesError, resolve_axes
from napari_addunet.engine.gate_preview import (
    DEFAULT_MAX_SIDE,
    PreviewRequest,
    SlicePreview,
    gate_slider_max,
    has_gates,
)
from napari_addunet.engine.layer_run import LayerError, check_image_layer
from napari_addunet.session import session as get_session

from ._common import (
    DockWidget,
    LayerCombo,
    axes_edit,
    axes_of,
    call_when_destroyed,
    camera_of,
    is_deleted,
    layer_forward,
    layer_view_point,
    real_viewer,
    set_status,
    show_error,
    start_worker,
    status_label,
    without_alpha,
)
from ._jobs import JobRunner, Outcome
from ._plots import COLORS, PlotCanvas, legend
from ._run import LayerRun

PREVIEW = "{name} [gate preview]"
DEBOUNCE_MS = 40


def _render(preview: SlicePreview, request: PreviewRequest) -> Outcome:
    """Worker body of one preview request (never raises)."""
    t0 = time.perf_counter()
    try:
        return Outcome("done", value=preview.update(request), seconds=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - shown in the status line
        return Outcome("error", error=exc, seconds=time.perf_counter() - t0)


def _remove_layer(viewer_ref: Any, shown: list[Any]) -> None:
    """Take the preview layer out of the viewer when the widget is closed (nothing updates it then)."""
    viewer = viewer_ref()
    layer = shown[0]() if shown[0] is not None else None
    if viewer is None or layer is None:
        return
    try:
        if layer in viewer.layers:
            viewer.layers.remove(layer)
    except Exception:  # noqa: BLE001 - the viewer itself may be closing
        pass


def preview_translate(layer: Any, offset: Any, shown: Any) -> np.ndarray:
    """The ``translate`` that draws a block cut from ``layer`` at ``offset`` where it was cut.

    The block gets the layer's scale, rotation, shear and affine. napari draws the axes on
    screen (``shown``, layer axis indices) through their own part of the transform and picks
    the slice of the others through theirs (see ``layer_view_point``), so with a shear or
    rotation that ties them together the block's first slice must land on the slice
    on screen, and its first pixel on ``offset``'s, each in its own part: a linear solve.
    Without such ties this is the layer's transform applied to ``offset``.
    """
    n = layer.ndim
    offset = np.asarray(offset, dtype=float)
    _, forward = layer_forward(layer)
    inverse = np.linalg.inv(forward)
    on = np.asarray(list(shown), dtype=int)
    off = np.asarray([i for i in range(n) if i not in set(on.tolist())], dtype=int)
    shift = np.zeros(n)
    shift[on] = forward[np.ix_(on, on)] @ offset[on]
    if off.size:
        rhs = offset[off] - inverse[np.ix_(off, on)] @ shift[on]
        shift[off] = np.linalg.solve(inverse[np.ix_(off, off)], rhs)
    outer = np.asarray(layer.affine.affine_matrix, dtype=float)[-n - 1 : -1, -n - 1 : -1]
    return np.asarray(layer.translate, dtype=float) + np.linalg.solve(outer, shift)


class GatesWidget(DockWidget):
    """Dock widget: gate sliders with a live preview layer, Reset, Apply to layer, Sweep."""

    preview_updated = Signal(object)  # the PreviewFrame shown

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)
        self.session = get_session(self.viewer)
        layout = QVBoxLayout(self)

        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        layout.addWidget(self.model_label)

        form = QFormLayout()
        self.layer_combo = LayerCombo(self.viewer)
        form.addRow("image", self.layer_combo)
        self.axes_edit = axes_edit()
        form.addRow("axes", self.axes_edit)
        self.live_check = QCheckBox("live preview of the slice on screen")
        self.live_check.setChecked(True)
        form.addRow(self.live_check)
        layout.addLayout(form)

        self.gate_box = QGroupBox("Gates (shallow to deep)")
        self.gate_grid = QGridLayout(self.gate_box)
        layout.addWidget(self.gate_box)
        self.sliders: list[QLabeledDoubleSlider] = []
        self.learned: tuple[float, ...] = ()

        buttons = QHBoxLayout()
        self.reset_button = QPushButton("Reset")
        self.reset_button.setToolTip("Back to the learned gates")
        self.apply_button = QPushButton("Apply to layer")
        self.apply_button.setToolTip(
            "Denoise the whole layer with these gates (a new layer; the gates go in its metadata)"
        )
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.reset_button)
        buttons.addWidget(self.apply_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.timing_label = QLabel("")
        self.timing_label.setWordWrap(True)
        layout.addWidget(self.timing_label)

        sweep_box = QGroupBox("Sweep one gate against a clean reference")
        sweep = QFormLayout(sweep_box)
        self.reference_combo = LayerCombo(self.viewer, none_text="(choose a clean reference)")
        sweep.addRow("reference", self.reference_combo)
        self.sweep_gate_combo = QComboBox()
        sweep.addRow("gate", self.sweep_gate_combo)
        span = QHBoxLayout()
        self.sweep_from = QDoubleSpinBox()
        self.sweep_to = QDoubleSpinBox()
        for spin in (self.sweep_from, self.sweep_to):
            spin.setRange(0.0, 1000.0)
            spin.setDecimals(3)
            spin.setSingleStep(0.1)
        self.sweep_steps = QSpinBox()
        self.sweep_steps.setRange(2, 201)
        self.sweep_steps.setValue(11)
        span.addWidget(self.sweep_from)
        span.addWidget(QLabel("to"))
        span.addWidget(self.sweep_to)
        span.addWidget(QLabel("steps"))
        span.addWidget(self.sweep_steps)
        sweep.addRow("range", span)
        self.sweep_button = QPushButton("Sweep")
        sweep.addRow(self.sweep_button)
        self.sweep_canvas = PlotCanvas(rows=1, height=2.0)
        sweep.addRow(self.sweep_canvas)
        layout.addWidget(sweep_box)

        self.progress = QProgressBar()
        layout.addWidget(self.progress)
        self.status = status_label()
        layout.addWidget(self.status)
        layout.addStretch(1)

        # state
        self._shown: list[Any] = [None]  # a weak reference to the preview layer, for closing
        self.last_frame: Any = None
        self.last_latency: float | None = None
        self.preview_count = 0
        self._preview_error = False  # the status line shows why there is no preview
        self._preview: SlicePreview | None = None
        self._pending: PreviewRequest | None = None
        self._pending_layer: Any = None
        self._running_layer: Any = None
        self._running_preview: Any = None
        self._sweep_model: Any = None
        self._pending_since: float | None = None
        self._running_since: float | None = None
        self._preview_worker: Any = None
        self._data_version = 0  # bumped when the layer's data change: cached encodings are stale
        self._watched: Any = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.request_preview)

        self.runner = JobRunner(self.session, "inference", self.progress, self.status, parent=self)
        self.apply_control = LayerRun(self.viewer, self.session, self.runner, parent=self)
        self.sweep_runner = JobRunner(self.session, "sweep", self.progress, self.status, parent=self)

        self.reset_button.clicked.connect(self.reset)
        self.apply_button.clicked.connect(self.apply)
        self.cancel_button.clicked.connect(self._cancel)
        self.sweep_button.clicked.connect(self.sweep)
        self.sweep_gate_combo.currentIndexChanged.connect(self._on_sweep_gate)
        self.layer_combo.layer_changed.connect(self._on_layer)
        self.layer_combo.data_changed.connect(self._on_data_changed)
        self.axes_edit.editingFinished.connect(self._on_layer)
        self.live_check.toggled.connect(self._on_live)
        for runner in (self.runner, self.sweep_runner):
            runner.started.connect(self._update_buttons)
            runner.done.connect(lambda _o: self._update_buttons())
        self.viewer.dims.events.current_step.connect(self._on_view_changed)
        self.viewer.dims.events.ndisplay.connect(self._on_view_changed)
        camera_of(self.viewer).events.center.connect(self._on_view_changed)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self._unsubscribe = self.session.subscribe(self._on_session)
        call_when_destroyed(self, self._unsubscribe)
        call_when_destroyed(self, functools.partial(_remove_layer, weakref.ref(self.viewer), self._shown))
        self._build_sliders()
        self._watch(self.layer_combo.layer())

    @property
    def preview_layer(self) -> Any:
        """The preview layer on screen, or None."""
        ref = self._shown[0]
        return ref() if ref is not None else None

    @preview_layer.setter
    def preview_layer(self, layer: Any) -> None:
        self._shown[0] = weakref.ref(layer) if layer is not None else None

    # -- model and sliders ------------------------------------------------------------------------
    def _build_sliders(self) -> None:
        for slider in self.sliders:
            slider.setParent(None)
            slider.deleteLater()
        while self.gate_grid.count():
            item = self.gate_grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.sliders = []
        self._preview = None
        model = self.session.model
        self.sweep_gate_combo.clear()
        if model is None:
            self.model_label.setText("No active model: load one in Denoise & classify, or train one.")
            self.learned = ()
            self._update_buttons()
            return
        if not has_gates(model):
            self.model_label.setText(
                f"The active model ({model.architecture}) has no skip gates; gates belong to AddUNet models."
            )
            self.learned = ()
            self._update_buttons()
            return
        self.learned = tuple(float(g) for g in model.gates)
        kernels = getattr(model.config, "kernels", None) or [None] * len(self.learned)
        current = self.session.gates if self.session.gates is not None else self.learned
        for j, (alpha, k) in enumerate(zip(self.learned, kernels, strict=True)):
            name = f"gate {j}" + (f" ({k}x{k})" if k else "")
            slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
            value = float(current[j]) if j < len(current) else alpha
            # a gate set beyond the usual range (from the console) widens it rather than being cut
            slider.setRange(0.0, max(gate_slider_max(alpha), value))
            slider.setDecimals(3)
            slider.setSingleStep(0.01)
            slider.setValue(value)
            slider.setToolTip(f"learned {alpha:.4g}; 0 removes this level's skip")
            slider.valueChanged.connect(self._on_slider)
            self.gate_grid.addWidget(QLabel(name), j, 0)
            self.gate_grid.addWidget(slider, j, 1)
            # 4 significant digits: a nearly closed gate (1e-4) does not read as a closed one
            self.gate_grid.addWidget(QLabel(f"learned {alpha:.4g}"), j, 2)
            self.sliders.append(slider)
            self.sweep_gate_combo.addItem(name, j)
        self.model_label.setText(
            f"{model.architecture} with {len(self.learned)} gates ({self.session.model_source or 'active model'})"
        )
        self._preview = SlicePreview(model)
        self._on_sweep_gate()
        self._update_buttons()

    def gates(self) -> tuple[float, ...]:
        """The slider values, shallow to deep."""
        return tuple(float(s.value()) for s in self.sliders)

    def set_gates(self, values: Any) -> None:
        """Move the sliders (each change schedules a preview)."""
        values = list(values)
        if len(values) != len(self.sliders):
            raise ValueError(f"the active model has {len(self.sliders)} gates, got {len(values)} values")
        for slider, v in zip(self.sliders, values, strict=True):
            if float(v) > slider.maximum():
                slider.setMaximum(float(v))
            slider.setValue(float(v))

    def reset(self) -> None:
        """Back to the learned gates."""
        if self.learned:
            self.set_gates(self.learned)

    def _on_slider(self, *_: Any) -> None:
        self.session.gates = self.gates()
        if self._pending_since is None:
            self._pending_since = time.perf_counter()
        if self.live_check.isChecked():
            self._timer.start()

    def _on_session(self, what: str) -> None:
        if what == "model":
            shown = self.preview_layer is not None or self.preview_busy  # on screen, or on its way
            self._drop_preview_layer()
            self._build_sliders()
            if shown:  # a preview was on screen: show the new model's
                self._preview_if_live()
        elif what == "gates" and self.session.gates is not None and self.session.gates != self.gates():
            self.set_gates(self.session.gates)

    def _on_sweep_gate(self, *_: Any) -> None:
        j = self.sweep_gate_combo.currentData()
        if j is None or not self.learned:
            return
        self.sweep_from.setValue(0.0)
        self.sweep_to.setValue(gate_slider_max(self.learned[j]))

    def _update_buttons(self) -> None:
        busy = self.runner.running or self.sweep_runner.running
        has = bool(self.sliders)
        for w in (self.reset_button, self.apply_button, self.sweep_button):
            w.setEnabled(has and not busy)
        self.cancel_button.setEnabled(busy)

    def _cancel(self) -> None:
        self.runner.cancel()
        self.sweep_runner.cancel()

    # -- the preview ------------------------------------------------------------------------------
    def _on_live(self, on: bool) -> None:
        if on:
            self.request_preview()

    def _on_layer(self, *_: Any) -> None:
        self._watch(self.layer_combo.layer())
        self._drop_preview_layer()
        self._preview_if_live()

    def _watch(self, layer: Any) -> None:
        """Follow refreshes of the chosen layer (napari's way to show data edited in place)."""
        if layer is self._watched:
            return
        if self._watched is not None:
            self._watched.events.set_data.disconnect(self._on_refreshed)
        self._watched = layer
        if layer is not None:
            layer.events.set_data.connect(self._on_refreshed)

    def _on_refreshed(self, *_: Any) -> None:
        # the data may have been edited in place: the next preview encodes the slice again
        self._data_version += 1

    def _on_data_changed(self, *_: Any) -> None:
        """New data in the chosen layer: preview them (live) or drop the stale preview."""
        if is_deleted(self):
            return
        self._data_version += 1
        if self.live_check.isChecked():
            if self.preview_layer is not None or self.preview_busy:
                self._timer.start()
        else:
            self._drop_preview_layer()

    def _preview_if_live(self) -> None:
        """Schedule a preview when live preview is on and there is something to preview."""
        if self.live_check.isChecked() and self.sliders and self.layer_combo.layer() is not None:
            self._timer.start()

    def _on_layer_removed(self, event: Any) -> None:
        if event.value is self.preview_layer:
            self.preview_layer = None

    def _on_view_changed(self, *_: Any) -> None:
        # also while the first preview computes: it would land on the slice it was asked for
        if self.live_check.isChecked() and (self.preview_layer is not None or self.preview_busy):
            self._timer.start()

    def _drop_preview_layer(self) -> None:
        layer, self.preview_layer = self.preview_layer, None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _slice_of(self, layer: Any, axes: str) -> tuple[dict[str, int], tuple[float, float]]:
        """Position along T/Z of the slice on screen and the view centre, in the layer's pixels."""
        dims = self.viewer.dims
        if dims.ndisplay != 2:
            raise ValueError("the gate preview works in the 2D view; switch the viewer to 2D")
        spatial = axes[:-1] if layer.rgb and axes.endswith("C") else axes
        if len(spatial) != layer.ndim:
            colour = " plus its colour channels (end the axes with C, e.g. YXC)" if layer.rgb else ""
            raise ValueError(
                f"the axes {axes} do not fit {layer.name!r}: napari shows it with {layer.ndim} "
                f"dimensions{colour}"
            )
        center = list(camera_of(self.viewer).center)[-len(dims.displayed) :]
        point = layer_view_point(self.viewer, layer, center)[-len(spatial) :]
        offset = dims.ndim - len(spatial)
        shown = {spatial[d - offset] for d in dims.displayed if d - offset >= 0}
        if shown != {"Y", "X"}:
            raise ValueError(
                f"the preview shows Y-X planes, but the view shows {''.join(sorted(shown))}; "
                "reset the dimension order (napari's 'transpose' and 'roll' buttons)"
            )
        position = {a: int(np.round(point[i])) for i, a in enumerate(spatial) if a in "TZ"}
        for a in list(position):
            n = layer.data.shape[axes.index(a)]
            position[a] = min(max(position[a], 0), n - 1)
        return position, (float(point[spatial.index("Y")]), float(point[spatial.index("X")]))

    def make_request(self) -> PreviewRequest | None:
        """The preview request for the slice on screen, or None (with the reason in the status line)."""
        layer = self.layer_combo.layer()
        if self._preview is None or layer is None:
            return None
        typed = axes_of(self.axes_edit)
        try:
            check_image_layer(layer, "preview")
            axes = resolve_axes(tuple(layer.data.shape), typed, bool(layer.rgb) if typed is None else None)
            position, center = self._slice_of(layer, axes)
        except (AxesError, LayerError, ValueError) as exc:
            hint = " Type the axes in the Axes box (e.g. TZYX)." if isinstance(exc, AxesError) else ""
            set_status(self.status, f"No preview: {exc}{hint}", error=True)
            self._preview_error = True
            return None
        return PreviewRequest(
            data=without_alpha(layer, typed),
            axes=axes,
            position=position,
            gates=self.gates(),
            center=center,
            max_side=DEFAULT_MAX_SIDE,
            data_key=(id(layer), id(layer.data), self._data_version),
        )

    def request_preview(self) -> bool:
        """Ask for a preview of the current gates (the newest request supersedes waiting ones)."""
        self._timer.stop()
        request = self.make_request()
        if request is None:
            return False
        self._pending, self._pending_layer = request, self.layer_combo.layer()
        if self._preview_worker is None:
            self._launch()
        return True

    @property
    def preview_busy(self) -> bool:
        """Whether a preview is computing or waiting."""
        return self._preview_worker is not None or self._pending is not None or self._timer.isActive()

    def _launch(self) -> None:
        from napari.qt.threading import create_worker

        request, self._pending = self._pending, None
        self._running_layer, self._pending_layer = self._pending_layer, None
        self._running_preview = self._preview  # a result of another model's preview is dropped
        self._running_since, self._pending_since = self._pending_since, None
        worker = create_worker(_render, self._preview, request, _start_thread=False)
        worker.returned.connect(self._on_preview)
        worker.finished.connect(self._on_preview_finished)
        self._preview_worker = worker
        start_worker(worker)

    def _on_preview(self, outcome: Outcome) -> None:
        if is_deleted(self):
            return
        if self._pending is not None:
            return  # superseded by a newer request, which runs next
        if not outcome.ok:
            set_status(self.status, f"No preview: {outcome.message}", error=True)
            self._preview_error = True
            return
        if self._running_preview is not self._preview:
            return  # the active model changed meanwhile
        frame = outcome.value
        layer = self.layer_combo.layer()
        if layer is None or layer is not self._running_layer:
            return  # the image was changed meanwhile
        self._show(layer, frame)
        if self._preview_error:  # the reason there was no preview is gone
            set_status(self.status, "")
            self._preview_error = False
        now = time.perf_counter()
        self.last_latency = now - self._running_since if self._running_since is not None else None
        self.last_frame = frame
        self.preview_count += 1
        encode = f"encoder {frame.encode_seconds * 1e3:.0f} ms + " if frame.encode_seconds is not None else ""
        levels = f"{frame.levels} of {frame.depth} decoder levels"
        latency = (
            f"; {self.last_latency * 1e3:.0f} ms from the slider" if self.last_latency is not None else ""
        )
        kept = [a for a in frame.axes if a not in frame.position]
        h, w = frame.block.shape[kept.index("Y")], frame.block.shape[kept.index("X")]
        self.timing_label.setText(
            f"preview {h}x{w}: {encode}{levels} in {frame.decode_seconds * 1e3:.0f} ms{latency}"
        )
        self.preview_updated.emit(frame)

    def _on_preview_finished(self) -> None:
        if is_deleted(self):
            return
        self._preview_worker = None
        if self._pending is not None:
            self._launch()

    def _show(self, layer: Any, frame: Any) -> None:
        """Put the frame in the preview layer (created once, then updated in place)."""
        axes = frame.axes
        lead = sorted(axes.index(a) for a in frame.position)
        data = np.expand_dims(frame.block, axis=lead) if lead else frame.block
        spatial = axes[:-1] if layer.rgb and axes.endswith("C") else axes
        offset = np.zeros(len(spatial))
        for i, a in enumerate(spatial):
            if a in frame.position:
                offset[i] = frame.position[a]
            elif a == "Y":
                offset[i] = frame.origin[0]
            elif a == "X":
                offset[i] = frame.origin[1]
        shown = [spatial.index("Y"), spatial.index("X")]
        translate = preview_translate(layer, offset, shown)
        meta = {
            "napari_addunet": {"preview_of": layer.name, "gates": list(frame.gates), "origin": frame.origin}
        }
        target = self.preview_layer
        if target is None or target not in self.viewer.layers or target.ndim != layer.ndim:
            self._drop_preview_layer()
            kwargs: dict[str, Any] = {
                "name": PREVIEW.format(name=layer.name),
                "scale": layer.scale,
                "translate": translate,
                "rotate": layer.rotate,
                "shear": layer.shear,
                "affine": layer.affine.affine_matrix,
                "rgb": layer.rgb,
                "metadata": meta,
                "blending": "opaque",
            }
            for key in ("units", "axis_labels"):  # the viewer keeps showing the source's units
                value = getattr(layer, key, None)
                if value is not None:
                    kwargs[key] = value
            kwargs["contrast_limits"] = layer.contrast_limits  # the source's, RGB too
            if not layer.rgb:
                kwargs["colormap"] = layer.colormap.name
            active = self.viewer.layers.selection.active
            self.preview_layer = self.viewer.add_image(data, **kwargs)
            if active is not None:  # keep the user's selection
                self.viewer.layers.selection.active = active
        else:
            target.data = data
            # the source may have been moved or rescaled since (from the console, a plugin)
            target.scale, target.rotate, target.shear = layer.scale, layer.rotate, layer.shear
            target.affine = layer.affine.affine_matrix
            target.translate = translate
            target.metadata = meta

    # -- apply and sweep --------------------------------------------------------------------------
    def apply(self) -> bool:
        """Denoise the whole chosen layer with the slider gates (a new ``[denoised]`` layer)."""
        if not self.sliders:
            show_error(
                "No active model: load one in Denoise & classify, or train one"
                if self.session.model is None
                else "The active model has no skip gates; gates belong to AddUNet models"
            )
            return False
        return self.apply_control.start(
            self.layer_combo.layer(),
            axes=axes_of(self.axes_edit),
            gates=self.gates(),
            device=self.session.device,
        )

    def sweep(self) -> bool:
        """Plot PSNR and SSIM against the chosen gate, on the previewed region, against the reference."""
        reference = self.reference_combo.layer()
        if reference is None:
            show_error("Choose a clean reference layer for the sweep")
            return False
        request = self.make_request()
        if request is None:
            show_error("No slice to sweep: choose an image layer (2D view)")
            return False
        ref_data = without_alpha(reference, axes_of(self.axes_edit))
        if tuple(ref_data.shape) != tuple(request.data.shape):
            show_error(
                f"The reference {reference.name!r} has shape {tuple(ref_data.shape)} but the image has "
                f"shape {tuple(request.data.shape)}"
            )
            return False
        gate = int(self.sweep_gate_combo.currentData())
        values = np.linspace(self.sweep_from.value(), self.sweep_to.value(), self.sweep_steps.value())
        model = self.session.model
        cancel = threading.Event()

        def factory() -> Any:
            return SlicePreview(model).sweep(
                dataclasses.replace(request, data_key=None), ref_data, gate, values, cancel=cancel
            )

        self._sweep_model = model
        return self.sweep_runner.start(
            factory,
            f"Sweeping gate {gate}",
            cancel_event=cancel,
            on_done=self._on_sweep_done,
        )

    def _on_sweep_done(self, outcome: Outcome) -> None:
        swept, self._sweep_model = self._sweep_model, None
        if not outcome.ok:
            return
        if swept is not self.session.model:
            set_status(
                self.status, "The sweep's result was dropped: the active model changed during the sweep"
            )
            return
        result = outcome.value
        self.session.record_sweep(result)
        self.plot_sweep(result)
        set_status(
            self.status,
            f"Sweep of gate {result.gate}: best PSNR {np.nanmax(result.psnr):.2f} dB at {result.best_value:.3g} "
            f"(learned {self.learned[result.gate]:.3g})",
        )

    def plot_sweep(self, result: Any) -> None:
        canvas = self.sweep_canvas
        canvas.clear()
        ax = canvas.axes[0]
        (p,) = ax.plot(result.values, result.psnr, "o-", color=COLORS[0], ms=3, label="PSNR (dB)")
        ax.set_xlabel(f"gate {result.gate}")
        ax.set_ylabel("PSNR (dB)")
        twin = ax.twinx()
        (s,) = twin.plot(result.values, result.ssim, "s--", color=COLORS[1], ms=3, label="SSIM")
        twin.set_ylabel("SSIM")
        from ._plots import style

        style(twin)
        if self.learned:
            ax.axvline(self.learned[result.gate], color=COLORS[2], lw=1, ls=":")
        legend(ax, [p, s])
        canvas.draw_idle()
