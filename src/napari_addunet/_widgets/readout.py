"""**Readout**: the active model, the device, the last run, image quality, class probabilities.

Engine calls (see ``docs/scripting.md``): :func:`napari_addunet.engine.readout.model_info`,
:func:`napari_addunet.engine.readout.compare` (PSNR/SSIM),
:func:`napari_addunet.engine.noise_estimate.estimate_sigma`,
:func:`napari_addunet.engine.readout.probabilities_at` and
:class:`napari_addunet.engine.readout.Report` (text and CSV).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QApplication,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)

from napari_addunet.engine.axes import AxesError, resolve_axes
from napari_addunet.engine.devices import available_devices
from napari_addunet.engine.layer_run import LayerError, check_image_layer
from napari_addunet.engine.noise_estimate import estimate_sigma
from napari_addunet.engine.readout import (
    METADATA_KEY,
    Report,
    SliceProbabilities,
    compare,
    model_rows,
    probabilities_at,
)
from napari_addunet.session import session as get_session

from ._common import (
    DockWidget,
    LayerCombo,
    axes_edit,
    axes_of,
    call_when_destroyed,
    layer_view_point,
    real_viewer,
    set_status,
    show_error,
    show_info,
    status_label,
    without_alpha,
)
from ._jobs import JobRunner, Outcome
from ._plots import COLORS, PlotCanvas


def _quality(image: Any, reference: Any, rgb: bool, axes: str | None = None) -> dict[str, Any]:
    """Worker body of Compare: PSNR/SSIM and the noise estimate of both layers."""
    image, reference = np.asarray(image), np.asarray(reference)
    flag = rgb if axes is None else None
    q = compare(image, reference, axes=axes, rgb=flag)
    return {
        "psnr": q.psnr,
        "ssim": q.ssim,
        "data_range": q.data_range,
        "sigma": estimate_sigma(image, axes, rgb=flag),
        "sigma_reference": estimate_sigma(reference, axes, rgb=flag),
    }


def _quality_job(image: Any, reference: Any, rgb: bool, axes: str | None = None) -> Any:
    yield None
    return _quality(image, reference, rgb, axes)


def recorded_axes(layer: Any) -> str | None:
    """The axes a denoising run recorded in a result layer's metadata, if they fit its shape."""
    record = (getattr(layer, "metadata", None) or {}).get(METADATA_KEY)
    axes = record.get("axes") if isinstance(record, dict) else None
    return axes if isinstance(axes, str) and len(axes) == len(layer.data.shape) else None


class ReadoutWidget(DockWidget):
    """Dock widget: a report of the session, quality against a reference, probabilities of the slice."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)
        self.session = get_session(self.viewer)
        layout = QVBoxLayout(self)

        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMinimumHeight(180)
        layout.addWidget(self.text)

        box = QGroupBox("Image quality against a reference")
        form = QFormLayout(box)
        self.layer_combo = LayerCombo(self.viewer)
        self.reference_combo = LayerCombo(self.viewer, none_text="(choose a clean reference)")
        form.addRow("layer", self.layer_combo)
        form.addRow("reference", self.reference_combo)
        self.axes_edit = axes_edit()
        self.axes_edit.setPlaceholderText("auto (as recorded by the run, or detected)")
        form.addRow("axes", self.axes_edit)
        self.compare_button = QPushButton("Compare")
        form.addRow(self.compare_button)
        self.quality_label = QLabel("")
        self.quality_label.setWordWrap(True)
        form.addRow(self.quality_label)
        layout.addWidget(box)

        prob_box = QGroupBox("Class probabilities of the slice on screen")
        prob_layout = QVBoxLayout(prob_box)
        self.prob_label = QLabel("")
        self.prob_label.setWordWrap(True)
        prob_layout.addWidget(self.prob_label)
        self.prob_canvas = PlotCanvas(rows=1, height=1.6)
        prob_layout.addWidget(self.prob_canvas)
        layout.addWidget(prob_box)

        buttons = QHBoxLayout()
        self.copy_text_button = QPushButton("Copy as text")
        self.copy_csv_button = QPushButton("Copy as CSV")
        buttons.addWidget(self.copy_text_button)
        buttons.addWidget(self.copy_csv_button)
        layout.addLayout(buttons)
        self.status = status_label()
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.quality: dict[str, Any] | None = None
        self.probabilities: SliceProbabilities | None = None
        self._bars: Any = None
        self.runner = JobRunner(self.session, "readout", None, self.status, parent=self)

        self.compare_button.clicked.connect(self.compare)
        self.copy_text_button.clicked.connect(self.copy_text)
        self.copy_csv_button.clicked.connect(self.copy_csv)
        self.viewer.dims.events.current_step.connect(self.update_probabilities)
        self.viewer.layers.selection.events.active.connect(self.update_probabilities)
        self.viewer.layers.events.removed.connect(self.update_probabilities)
        self._unsubscribe = self.session.subscribe(self._on_session)
        call_when_destroyed(self, self._unsubscribe)
        self.refresh()

    # -- the report --------------------------------------------------------------------------------
    def report(self) -> Report:
        """Everything shown, as rows (also what the copy buttons copy)."""
        report = Report()
        info = self.session.model_info
        if info is None:
            report.add("model", "active model", "none yet (load one in Denoise & classify, or train one)")
        else:
            report.extend("model", model_rows(info))
        labels = {d.name: d.label for d in available_devices()}
        device = self.session.device
        report.add("device", "chosen", device if device == "auto" else labels.get(device, device))
        report.add("device", "present", "; ".join(labels.values()))
        run = self.session.last_run
        if run is None:
            report.add("last run", "run", "none yet")
        else:
            report.extend("last run", run.rows())
        if self.quality is not None:
            q = self.quality
            report.extend(
                "quality",
                [
                    ("layer", q["layer"]),
                    ("reference", q["reference"]),
                    ("PSNR (dB)", q["psnr"]),
                    ("SSIM", q["ssim"]),
                    ("data range", q["data_range"]),
                    ("noise sigma of the layer", q["sigma"]),
                    ("noise sigma of the reference", q["sigma_reference"]),
                ],
            )
        p = self.probabilities
        if p is not None:
            report.add("class probabilities", "slice", p.label)
            report.extend(
                "class probabilities", [(n, float(v)) for n, v in zip(p.names, p.values, strict=True)]
            )
        return report

    def refresh(self) -> None:
        """Rebuild the text from the session (called on every change)."""
        self._show_probabilities()
        self.text.setPlainText(self.report().text())

    def _on_session(self, what: str) -> None:
        if what in ("model", "run", "device", "training"):
            if what == "run" and self.session.last_run is not None:
                name = self.session.last_run.output_names[0]
                if name in self.viewer.layers:
                    self.layer_combo.set_layer(name)
            self.refresh()

    def copy_text(self) -> str:
        text = self.report().text()
        QApplication.clipboard().setText(text)
        set_status(self.status, "Copied the readout as text")
        return text

    def copy_csv(self) -> str:
        text = self.report().csv()
        QApplication.clipboard().setText(text)
        set_status(self.status, "Copied the readout as CSV")
        return text

    # -- quality -----------------------------------------------------------------------------------
    def compare(self) -> bool:
        """PSNR and SSIM of the chosen layer against the reference (in a worker)."""
        layer, reference = self.layer_combo.layer(), self.reference_combo.layer()
        if layer is None or reference is None:
            show_error("Choose a layer and a clean reference layer to compare")
            return False
        try:
            check_image_layer(layer, "compare")
            check_image_layer(reference, "compare")
        except LayerError as exc:
            show_error(str(exc))
            return False
        if tuple(layer.data.shape) != tuple(reference.data.shape):
            show_error(
                f"{layer.name!r} has shape {tuple(layer.data.shape)} but the reference {reference.name!r} has "
                f"shape {tuple(reference.data.shape)}; compare layers of the same size"
            )
            return False
        names = (layer.name, reference.name)
        rgb = bool(layer.rgb)
        axes = axes_of(self.axes_edit) or recorded_axes(layer) or recorded_axes(reference)
        # RGBA: the colours are compared, as denoising leaves alpha alone
        data = without_alpha(layer, axes)
        ref = reference.data[..., :3] if data.shape != layer.data.shape else reference.data
        try:
            resolve_axes(tuple(data.shape), axes, rgb if axes is None else None)
        except AxesError as exc:
            text = str(exc).strip()
            show_error(
                f"{text}{'' if text.endswith('.') else '.'} Type the axes in the Axes box (e.g. TZYX)."
            )
            return False
        changed: list[str] = []  # new data in either layer during the job: its numbers are stale
        watched = list({id(x): x for x in (layer, reference)}.values())

        def on_data(event: Any = None) -> None:
            source = getattr(event, "source", None)
            changed.append(getattr(source, "name", "a layer"))

        for one in watched:
            one.events.data.connect(on_data)

        def done(outcome: Outcome) -> None:
            for one in watched:
                one.events.data.disconnect(on_data)
            cancelled = self.runner.cancel_event is not None and self.runner.cancel_event.is_set()
            if cancelled and outcome.ok:  # the comparison cannot stop midway: its result is dropped
                set_status(self.status, "Comparison cancelled; nothing was shown")
                return
            if changed and outcome.ok:
                message = (
                    f"The data of {changed[0]!r} changed during the comparison: nothing was shown; "
                    "compare again"
                )
                show_info(message)
                set_status(self.status, message)
                return
            self._on_quality(outcome, names)

        started = self.runner.start(
            lambda: _quality_job(data, ref, rgb, axes),
            f"Comparing {names[0]!r} with {names[1]!r}",
            on_done=done,
            progress=lambda _e: None,
        )
        if not started:
            for one in watched:
                one.events.data.disconnect(on_data)
        return started

    def _on_quality(self, outcome: Outcome, names: tuple[str, str]) -> None:
        if not outcome.ok:
            return
        q = dict(outcome.value, layer=names[0], reference=names[1])
        self.quality = q
        self.quality_label.setText(
            f"{names[0]} vs {names[1]}: PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.4f} "
            f"(data range {q['data_range']:g}); noise sigma {q['sigma']:.4g} (reference {q['sigma_reference']:.4g})"
        )
        set_status(self.status, "")
        self.refresh()

    # -- class probabilities -------------------------------------------------------------------------
    def _probability_layer(self) -> Any:
        active = self.viewer.layers.selection.active
        candidates = [active]
        run = self.session.last_run
        if run is not None and run.output_names and run.output_names[0] in self.viewer.layers:
            candidates.append(self.viewer.layers[run.output_names[0]])
        for layer in candidates:
            record = getattr(layer, "metadata", {}).get(METADATA_KEY) if layer is not None else None
            if record and record.get("probabilities") is not None:
                return layer
        return None

    def update_probabilities(self, *_: Any) -> None:
        """Show the probabilities of the slice at napari's dims position (bars, label and text)."""
        self._show_probabilities()
        self.text.setPlainText(self.report().text())  # its slice section follows too

    def _show_probabilities(self) -> None:
        layer = self._probability_layer()
        if layer is None:
            self.probabilities = None
            self.prob_label.setText(
                "No class probabilities: denoise with a model that classifies (Denoise & classify)."
            )
            self._draw_bars(None)
            return
        index = layer_view_point(self.viewer, layer)
        p = probabilities_at(layer.metadata[METADATA_KEY], index)
        self.probabilities = p
        if p is None:
            self._draw_bars(None)
            return
        self.prob_label.setText(f"{layer.name}, {p.label}: {p.best} ({p.values.max():.2f})")
        self._draw_bars(p)

    def _draw_bars(self, p: SliceProbabilities | None) -> None:
        canvas = self.prob_canvas
        canvas.setVisible(p is not None)
        ax = canvas.axes[0]
        if p is None:
            if self._bars is not None:
                canvas.clear()
                self._bars = None
                canvas.draw_idle()
            return
        if self._bars is not None and self._bars[0] == p.names:
            for bar, v in zip(self._bars[1], p.values, strict=True):
                bar.set_width(float(v))
        else:
            canvas.clear()
            y = np.arange(len(p.names))
            bars = ax.barh(y, p.values, color=[COLORS[i % len(COLORS)] for i in range(len(p.names))])
            ax.set_yticks(y, p.names)
            ax.set_xlim(0, 1)
            ax.invert_yaxis()
            ax.set_xlabel("probability")
            self._bars = (list(p.names), list(bars))
        ax.set_title(p.label)
        canvas.draw_idle()
