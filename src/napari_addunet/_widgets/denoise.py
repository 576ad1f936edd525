"""**Denoise & classify**: run the active model over an image layer; results are new layers.

Engine calls (see ``docs/scripting.md``): ``napari_addunet.load_model`` for the model
chooser, :func:`napari_addunet.engine.axes.infer_axes` for the detected axes and
:func:`napari_addunet.engine.layer_run.iter_layer_denoise` (over
:func:`napari_addunet.engine.inference.iter_denoise`) for Run.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from napari_addunet.engine.axes import AxesError, infer_axes
from napari_addunet.engine.checkpoint import CheckpointError, bundled_models
from napari_addunet.engine.ensemble import ENSEMBLE_SIZES
from napari_addunet.session import session as get_session

from ._common import (
    DeviceCombo,
    DockWidget,
    LayerCombo,
    axes_edit,
    axes_of,
    call_when_destroyed,
    real_viewer,
    set_status,
    show_error,
    status_label,
)
from ._jobs import JobRunner
from ._run import LayerRun

ACTIVE = "__active__"


class DenoiseWidget(DockWidget):
    """Dock widget: model, image layer, axes, tile, device; Run and Cancel."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)
        self.session = get_session(self.viewer)
        layout = QVBoxLayout(self)

        # -- model
        model_box = QGroupBox("Model")
        model_layout = QVBoxLayout(model_box)
        row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.setToolTip(
            "Bundled models by name, or the active model (loaded from a file or trained)"
        )
        self.open_button = QPushButton("Open file...")
        self.open_button.setToolTip("Load a .safetensors model saved by napari-addunet")
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.open_button)
        model_layout.addLayout(row)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        model_layout.addWidget(self.model_label)
        layout.addWidget(model_box)

        # -- input and settings
        form_box = QGroupBox("Image")
        form = QFormLayout(form_box)
        self.layer_combo = LayerCombo(self.viewer)
        form.addRow("layer", self.layer_combo)
        self.axes_label = QLabel()
        self.axes_label.setWordWrap(True)
        form.addRow("detected axes", self.axes_label)
        self.axes_edit = axes_edit()
        form.addRow("axes", self.axes_edit)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("auto")
        self.tile_spin.setToolTip(
            "Largest tile side in pixels; 'auto' picks it from the device's memory. Tiles overlap by the "
            "receptive field, so the result does not depend on the tile size."
        )
        form.addRow("tile", self.tile_spin)
        self.ensemble_combo = QComboBox()
        for n in ENSEMBLE_SIZES:
            self.ensemble_combo.addItem("off" if n == 1 else f"{n} orientations ({n}x the time)", n)
        self.ensemble_combo.setToolTip(
            "Self-ensemble: denoise flipped and transposed copies of the image and average the results "
            "back in place, at that many times the compute and the same memory. The bundled denoiser "
            "gains 0.03-0.04 dB PSNR on BSD68 and Set12 with 2 (the image and its mirror) and "
            "0.06-0.08 dB with 8."
        )
        form.addRow("self-ensemble", self.ensemble_combo)
        self.device_combo = DeviceCombo()
        form.addRow("device", self.device_combo)
        self.residual_check = QCheckBox("add the residual (input - denoised)")
        form.addRow(self.residual_check)
        self.classify_check = QCheckBox("classify each slice")
        self.classify_check.setToolTip("Class probabilities per slice (models with a classification head)")
        form.addRow(self.classify_check)
        layout.addWidget(form_box)

        # -- run
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        layout.addWidget(self.progress)
        self.status = status_label()
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.runner = JobRunner(self.session, "inference", self.progress, self.status, parent=self)
        self.run_control = LayerRun(self.viewer, self.session, self.runner, parent=self)

        self.model_combo.activated.connect(self._on_model_chosen)
        self.open_button.clicked.connect(self._open_file)
        self.layer_combo.layer_changed.connect(self._update_axes)
        self.layer_combo.data_changed.connect(self._update_axes)
        self.axes_edit.textChanged.connect(lambda _t: self._update_axes())
        self.device_combo.currentIndexChanged.connect(self._on_device)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.runner.started.connect(lambda: self._set_running(True))
        self.runner.done.connect(lambda _o: self._set_running(False))
        self._unsubscribe = self.session.subscribe(self._on_session)
        call_when_destroyed(self, self._unsubscribe)

        try:
            self.device_combo.set_device(self.session.device)
        except ValueError:
            pass
        self._refresh_models()
        self._update_axes()

    # -- model ------------------------------------------------------------------------------------
    def _refresh_models(self) -> None:
        bundled = list(bundled_models())
        model = self.session.model
        source = self.session.model_source
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        active_bundled = next((n for n in bundled if source == f"bundled {n}"), None)
        if model is not None and active_bundled is None:
            self.model_combo.addItem(
                f"active: {model.architecture} ({source or 'set in this session'})", ACTIVE
            )
        for name in bundled:
            self.model_combo.addItem(f"bundled: {name}", name)
        if model is None:
            self.model_combo.insertItem(0, "none loaded (Run loads the bundled default)", None)
        index = self.model_combo.findData(active_bundled if active_bundled is not None else ACTIVE)
        self.model_combo.setCurrentIndex(max(0, index))
        self.model_combo.blockSignals(False)
        info = self.session.model_info
        if info is None:
            self.model_label.setText("No model is active yet.")
        else:
            gates = f"; gates {', '.join(f'{g:.2f}' for g in info.gates)}" if info.gates else ""
            classes = (
                f"; classes {', '.join(info.class_names)}" if info.class_names else "; no classification head"
            )
            self.model_label.setText(f"{info.title}{gates}{classes}")
        has_head = model is not None and getattr(model, "head", None) is not None
        self.classify_check.setChecked(has_head)

    def _on_model_chosen(self, index: int) -> None:
        data = self.model_combo.itemData(index)
        if data in (None, ACTIVE):
            return
        self.load_model(data)

    def _open_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a napari-addunet model", "", "napari-addunet models (*.safetensors);;All files (*)"
        )
        if path:
            self.load_model(path)

    def load_model(self, source: Any) -> bool:
        """Load a bundled model (by name) or a checkpoint file and make it the active model.

        A file that fails to load leaves the active model unchanged (and says why).
        """
        try:
            self.session.load(source)
        except (CheckpointError, OSError, ValueError) as exc:
            show_error(f"Could not load the model: {exc}")
            set_status(self.status, f"Could not load the model: {exc}", error=True)
            self._refresh_models()
            return False
        set_status(self.status, f"Active model: {self.session.model_source}")
        return True

    def _on_session(self, what: str) -> None:
        if what == "model":
            self._refresh_models()
        elif what == "device":
            try:
                self.device_combo.set_device(self.session.device)
            except ValueError:
                pass

    def _on_device(self, _index: int) -> None:
        self.session.device = self.device_combo.device()

    # -- input ------------------------------------------------------------------------------------
    def axes(self) -> str | None:
        """The axes override, or None for the detected axes."""
        return axes_of(self.axes_edit)

    def _update_axes(self, *_: Any) -> None:
        layer = self.layer_combo.layer()
        if layer is None:
            set_status(self.axes_label, "no image layer")
            return
        try:
            detected = infer_axes(tuple(layer.data.shape), rgb=bool(layer.rgb))
        except AxesError as exc:
            set_status(self.axes_label, f"cannot tell: {exc}", error=self.axes() is None)
            return
        except Exception as exc:  # noqa: BLE001 - multiscale data and other oddities
            set_status(self.axes_label, str(exc), error=True)
            return
        shape = " x ".join(str(s) for s in layer.data.shape)
        set_status(self.axes_label, f"{detected} ({shape})")

    # -- run --------------------------------------------------------------------------------------
    def run(self) -> bool:
        """Denoise the chosen layer with the active model (True if the run started)."""
        tile = self.tile_spin.value() or None
        return self.run_control.start(
            self.layer_combo.layer(),
            axes=self.axes(),
            tile=tile,
            device=self.device_combo.device(),
            classify=True if self.classify_check.isChecked() else False,
            residual=self.residual_check.isChecked(),
            ensemble=int(self.ensemble_combo.currentData()),
        )

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
