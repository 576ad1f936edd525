"""**Train**: train a denoiser (optionally a classifier too) on image layers; the result becomes active.

Engine calls (see ``docs/scripting.md``): :func:`napari_addunet.engine.layer_data.layer_training_data`
builds the data from the ticked layers, :func:`napari_addunet.engine.training.train_events`
is the loop (its ``stop`` event is the Stop button), :func:`napari_addunet.save_model` saves.
The forms come from ``get_config_class(name).describe()`` and ``TrainingConfig.describe()``.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_addunet.engine.checkpoint import CheckpointError, save_model
from napari_addunet.engine.layer_data import KINDS, layer_training_data
from napari_addunet.engine.layer_run import LayerError, check_image_layer
from napari_addunet.engine.training import train_events
from napari_addunet.engine.training_config import TrainingConfig
from napari_addunet.engine.training_events import EpochDone, StepDone, TrainingFinished, TrainingStarted
from napari_addunet.engine.warmup import warm_up
from napari_addunet.models import ConfigError, get_config_class, list_models, model_summaries
from napari_addunet.session import session as get_session

from ._common import (
    DeviceCombo,
    DockWidget,
    is_deleted,
    is_image_layer,
    real_viewer,
    set_status,
    show_error,
    start_worker,
    status_label,
)
from ._forms import ConfigForm
from ._jobs import JobRunner, Outcome
from ._plots import COLORS, PlotCanvas, legend, style

#: Training settings shown up front; the others are under "More settings".
BASIC = (
    "noise",
    "sigma_min",
    "sigma_max",
    "photons_min",
    "photons_max",
    "lambda_cls",
    "epochs",
    "steps_per_epoch",
    "batch_size",
    "patch_size",
    "lr",
)
#: Architecture settings set by the widget itself (single-channel data; classes from the labels).
AUTOMATIC = ("in_channels", "out_channels", "num_classes")


_RUNNING_WARM_UPS: set[Any] = set()


@atexit.register
def _wait_for_warm_ups() -> None:
    """A script that exits while a warm-up still runs: let it end first. Otherwise Qt's objects
    are torn down under the running worker, whose last signal then aborts the interpreter."""
    if _RUNNING_WARM_UPS:
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(60_000)


class LayerTable(QTableWidget):
    """Image layers with a tick (use for training), a class name and, for pairs, a target layer."""

    USE, NAME, CLASS, TARGET = range(4)

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(0, 4, parent)
        self.viewer = viewer
        self.setHorizontalHeaderLabels(["use", "layer", "class", "target (pairs)"])
        header = self.horizontalHeader()
        header.setSectionResizeMode(self.USE, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(self.NAME, QHeaderView.Stretch)
        header.setSectionResizeMode(self.CLASS, QHeaderView.Stretch)
        header.setSectionResizeMode(self.TARGET, QHeaderView.Stretch)
        self.verticalHeader().setVisible(False)
        self.setMinimumHeight(110)
        # per layer (by identity, so a renamed layer keeps its tick): use, class, target's id
        self._state: dict[int, tuple[bool, str, int | None]] = {}
        self._rows: list[Any] = []  # the layer shown in each row
        self._watched: set[int] = set()
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    def _images(self) -> list[Any]:
        return [layer for layer in self.viewer.layers if is_image_layer(layer)]

    def _save(self) -> None:
        for row, layer in enumerate(self._rows[: self.rowCount()]):
            combo = self.cellWidget(row, self.TARGET)
            self._state[id(layer)] = (
                self.item(row, self.USE).checkState() == Qt.Checked,
                self.item(row, self.CLASS).text(),
                combo.currentData() if combo is not None and combo.currentIndex() > 0 else None,
            )

    def refresh(self, *_: Any) -> None:
        """Rebuild the rows from the layer list, keeping ticks, classes and targets per layer
        (also when a layer is renamed)."""
        self._save()
        self._rebuild()

    def _rebuild(self) -> None:
        layers = self._images()
        live = {id(layer) for layer in layers}
        self._state = {k: v for k, v in self._state.items() if k in live}
        for layer in layers:
            if id(layer) not in self._watched:
                layer.events.name.connect(self.refresh)
                self._watched.add(id(layer))
        self._watched &= live
        self._rows = layers
        self.setRowCount(len(layers))
        for row, layer in enumerate(layers):
            use, cls, target = self._state.get(id(layer), (False, "", None))
            tick = QTableWidgetItem()
            tick.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled)
            tick.setCheckState(Qt.Checked if use else Qt.Unchecked)
            self.setItem(row, self.USE, tick)
            label = QTableWidgetItem(layer.name)
            label.setFlags(Qt.ItemIsEnabled)
            self.setItem(row, self.NAME, label)
            self.setItem(row, self.CLASS, QTableWidgetItem(cls))
            combo = QComboBox()
            combo.addItem("-", None)
            for other in layers:
                if other is not layer:
                    combo.addItem(other.name, id(other))
            index = combo.findData(target) if target is not None else -1
            if index > 0:
                combo.setCurrentIndex(index)
            self.setCellWidget(row, self.TARGET, combo)

    def _layer(self, name: str) -> Any:
        for layer in self._images():
            if layer.name == name:
                return layer
        raise ValueError(f"no image layer named {name!r}")

    def set_row(self, name: str, use: bool = True, cls: str = "", target: str = "") -> None:
        """Tick a layer, with a class and (for pairs) a target layer."""
        self._save()
        layer = self._layer(name)
        self._state[id(layer)] = (use, cls, id(self._layer(target)) if target else None)
        self._rebuild()

    def chosen(self) -> list[tuple[Any, str, Any]]:
        """``(layer, class, target layer or None)`` of the ticked rows, in table order."""
        self._save()
        by_id = {id(layer): layer for layer in self._images()}
        out = []
        for layer in self._images():
            use, cls, target = self._state.get(id(layer), (False, "", None))
            if use:
                out.append((layer, cls, by_id.get(target) if target is not None else None))
        return out


class TrainWidget(DockWidget):
    """Dock widget: data from layers, architecture and training settings, Start/Stop, live plots, Save."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)
        self.session = get_session(self.viewer)
        layout = QVBoxLayout(self)

        # -- data
        data_box = QGroupBox("Training data")
        data = QVBoxLayout(data_box)
        self.kind_combo = QComboBox()
        for key, text in KINDS.items():
            self.kind_combo.addItem(text, key)
        data.addWidget(self.kind_combo)
        self.table = LayerTable(self.viewer)
        data.addWidget(self.table)
        csv_row = QHBoxLayout()
        self.csv_edit = QLineEdit()
        self.csv_edit.setPlaceholderText("classes from a CSV (layer,class or layer,slice,class)")
        self.csv_button = QPushButton("CSV...")
        csv_row.addWidget(self.csv_edit, 1)
        csv_row.addWidget(self.csv_button)
        data.addLayout(csv_row)
        layout.addWidget(data_box)

        # -- architecture
        arch_box = QGroupBox("Architecture")
        arch = QVBoxLayout(arch_box)
        self.arch_combo = QComboBox()
        summaries = model_summaries()
        for name in list_models():
            self.arch_combo.addItem(name, name)
            self.arch_combo.setItemData(self.arch_combo.count() - 1, summaries.get(name, ""), Qt.ToolTipRole)
        arch.addWidget(self.arch_combo)
        self.arch_summary = QLabel()
        self.arch_summary.setWordWrap(True)
        arch.addWidget(self.arch_summary)
        self.arch_settings = QCollapsible("Architecture settings")
        arch.addWidget(self.arch_settings)
        self.arch_form: ConfigForm | None = None
        layout.addWidget(arch_box)

        # -- training settings
        train_box = QGroupBox("Training")
        train = QVBoxLayout(train_box)
        self.train_form = ConfigForm(
            TrainingConfig, include=BASIC, labels={"lambda_cls": "lambda (classification)"}
        )
        train.addWidget(self.train_form)
        device_row = QFormLayout()
        self.device_combo = DeviceCombo()
        device_row.addRow("device", self.device_combo)
        train.addLayout(device_row)
        self.more = QCollapsible("More settings")
        self.more_form = ConfigForm(TrainingConfig, exclude=(*BASIC, "device"))
        self.more.addWidget(self.more_form)
        train.addWidget(self.more)
        layout.addWidget(train_box)

        # -- run
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.save_button = QPushButton("Save model...")
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.save_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        layout.addWidget(self.progress)
        self.status = status_label()
        layout.addWidget(self.status)
        self.canvas = PlotCanvas(rows=2, height=1.9)
        layout.addWidget(self.canvas)
        layout.addStretch(1)

        self.history: list[dict[str, Any]] = []
        self.step_losses: list[tuple[int, float]] = []
        self.result: Any = None
        self._last_draw = 0.0
        self.runner = JobRunner(self.session, "training", self.progress, self.status, parent=self)

        self.arch_combo.currentIndexChanged.connect(self._on_arch)
        self.kind_combo.currentIndexChanged.connect(self._on_kind)
        self.csv_button.clicked.connect(self._browse_csv)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(self._save_dialog)
        self.runner.started.connect(lambda: self._set_running(True))
        self.runner.done.connect(lambda _o: self._set_running(False))
        self.arch_combo.setCurrentIndex(max(0, self.arch_combo.findData("addunet")))
        self._on_arch()
        self._on_kind()
        self._draw()
        self.ready = False
        self._warm_up()

    def _warm_up(self) -> None:
        """Import torch's lazily loaded training parts in a worker now, not at the first Start."""
        from napari.qt.threading import create_worker

        worker = create_worker(warm_up, _start_thread=False)
        worker.finished.connect(self._on_warm)
        _RUNNING_WARM_UPS.add(worker)
        worker.finished.connect(lambda: _RUNNING_WARM_UPS.discard(worker))
        start_worker(worker)

    def _on_warm(self) -> None:
        if not is_deleted(self):
            self.ready = True

    # -- settings ---------------------------------------------------------------------------------
    def _on_arch(self, *_: Any) -> None:
        name = self.arch_combo.currentData()
        if self.arch_form is not None:
            self.arch_settings.removeWidget(self.arch_form)
            self.arch_form.deleteLater()
        self.arch_form = ConfigForm(get_config_class(name), exclude=AUTOMATIC)
        self.arch_settings.addWidget(self.arch_form)
        self.arch_summary.setText(model_summaries().get(name, ""))

    def _on_kind(self, *_: Any) -> None:
        kind = self.kind_combo.currentData()
        self.table.setColumnHidden(LayerTable.TARGET, kind != "pairs")
        synthetic = kind == "clean"
        for name in ("noise", "sigma_min", "sigma_max", "photons_min", "photons_max"):
            self.train_form.editors[name].setEnabled(synthetic)

    def _browse_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Classes per layer or slice", "", "CSV files (*.csv);;All files (*)"
        )
        if path:
            self.csv_edit.setText(path)

    def settings(self) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """``(architecture, architecture settings, training settings)`` as entered."""
        training = {
            **self.more_form.values(),
            **self.train_form.values(),
            "device": self.device_combo.device(),
        }
        return self.arch_combo.currentData(), self.arch_form.values(), training

    # -- run --------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Check the settings and data, then train in a worker (True if it started)."""
        if self.runner.running:
            set_status(self.status, "Training is already running")
            return False
        chosen = self.table.chosen()
        kind = self.kind_combo.currentData()
        if not chosen:
            show_error("Tick at least one image layer to train on")
            return False
        arch, arch_values, train_values = self.settings()
        try:
            get_config_class(arch).from_dict(arch_values)
            config = TrainingConfig.from_dict(train_values)
        except ConfigError as exc:
            show_error(f"Invalid setting: {exc}")
            return False
        if kind == "pairs" and any(target is None for _, _, target in chosen):
            show_error("Pairs need a target layer for every ticked layer (the 'target' column)")
            return False
        try:
            for layer, _, target in chosen:
                for one in (layer, target) if target is not None else (layer,):
                    check_image_layer(one, "train on")
        except LayerError as exc:
            show_error(str(exc))
            return False
        images = [(layer.name, layer.data) for layer, _, _ in chosen]
        targets = (
            [target.data if target is not None else None for _, _, target in chosen]
            if kind == "pairs"
            else None
        )
        classes = [cls for _, cls, _ in chosen]
        label_file = self.csv_edit.text().strip() or None
        if (label_file or any(str(c).strip() for c in classes)) and config.lambda_cls == 0:
            show_error(
                "Classes are given but lambda_cls is 0, so the classification head would not learn: "
                "set lambda_cls (e.g. 1), or clear the classes to train a denoiser only"
            )
            return False
        stop = threading.Event()
        command = f"napari Train widget: {arch} on {', '.join(n for n, _ in images)}"

        def factory() -> Any:
            data = layer_training_data(kind, images, targets=targets, classes=classes, label_file=label_file)
            return train_events(data, arch, config, stop=stop, command=command, model_settings=arch_values)

        self.history, self.step_losses, self.result = [], [], None
        self._draw()
        return self.runner.start(
            factory,
            f"Training {arch}",
            cancel_event=stop,
            on_event=self._on_event,
            on_done=self._on_done,
            progress=self._progress_of,
        )

    def stop(self) -> None:
        """Stop after the current step; the best weights so far become the active model."""
        self.runner.cancel()

    @staticmethod
    def _progress_of(event: Any) -> tuple[int, int, str] | None:
        if isinstance(event, TrainingStarted):
            return (
                event.step,
                event.total_steps,
                f"training on {event.train_planes} planes ({event.mode}), {event.device}",
            )
        if isinstance(event, StepDone):
            eta = f", {event.eta_seconds:.0f} s left" if event.eta_seconds else ""
            return (
                event.step,
                event.total_steps,
                f"epoch {event.epoch + 1}: step {event.step}/{event.total_steps}, loss {event.loss.total:.4g}{eta}",
            )
        return None

    def _on_event(self, event: Any) -> None:
        import time

        if isinstance(event, StepDone):
            self.step_losses.append((event.step, event.loss.total))
            if time.monotonic() - self._last_draw > 1.0:  # keep redraws cheap while steps fly by
                self._draw()
        elif isinstance(event, EpochDone):
            v = event.validation
            self.history.append(
                {
                    "epoch": event.epoch,
                    "step": event.step,
                    "train_loss": event.train.total,
                    "val_loss": v.loss.total if v is not None else None,
                    "val_psnr": v.psnr if v is not None else None,
                    "gates": event.gates,
                }
            )
            psnr = f", val PSNR {v.psnr:.2f} dB" if v is not None and v.psnr is not None else ""
            set_status(self.status, f"epoch {event.epoch}/{event.epochs}: loss {event.train.total:.4g}{psnr}")
            self._draw()
        elif isinstance(event, TrainingFinished):
            set_status(self.status, f"training {event.reason} after {event.step} steps")

    def _on_done(self, outcome: Outcome) -> None:
        self._draw()
        if not outcome.ok:
            return
        result = outcome.value
        self.result = result
        self.session.record_training(result)
        if result.step == 0:
            set_status(self.status, "Stopped before the first step; the active model is unchanged")
            return
        arch = result.model.architecture
        best = result.best
        psnr = f", val PSNR {best.psnr:.2f} dB" if best is not None and best.psnr is not None else ""
        self.session.set_model(
            result.model, f"trained in this session ({arch}, {result.reason}, {result.step} steps)"
        )
        set_status(
            self.status,
            f"Training {result.reason} after {result.step} steps{psnr}; the trained model is now the active "
            "model. Save it with 'Save model...'.",
        )

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.save_button.setEnabled(not running)  # the run's model is not ready to save yet

    # -- plots ------------------------------------------------------------------------------------
    def _draw(self) -> None:
        import time

        self._last_draw = time.monotonic()
        canvas = self.canvas
        canvas.clear()
        loss_ax, gate_ax = canvas.axes
        handles = []
        if self.step_losses:
            steps, losses = zip(*self.step_losses, strict=True)
            (h,) = loss_ax.plot(steps, losses, color=COLORS[0], alpha=0.35, lw=0.8, label="train (step)")
            handles.append(h)
        if self.history:
            steps = [h["step"] for h in self.history]
            (h,) = loss_ax.plot(
                steps, [h["train_loss"] for h in self.history], "o-", color=COLORS[0], ms=3, label="train"
            )
            handles.append(h)
            val = [(h["step"], h["val_loss"]) for h in self.history if h["val_loss"] is not None]
            if val:
                (h,) = loss_ax.plot(*zip(*val, strict=True), "s-", color=COLORS[1], ms=3, label="validation")
                handles.append(h)
            psnr = [(h["step"], h["val_psnr"]) for h in self.history if h["val_psnr"] is not None]
            if psnr:
                twin = loss_ax.twinx()
                style(twin)
                (h,) = twin.plot(*zip(*psnr, strict=True), "^-", color=COLORS[2], ms=3, label="val PSNR (dB)")
                twin.set_ylabel("PSNR (dB)")
                handles.append(h)
            gates = [(h["epoch"], h["gates"]) for h in self.history if h["gates"]]
            if gates:
                epochs = [e for e, _ in gates]
                for j in range(len(gates[0][1])):
                    gate_ax.plot(
                        epochs,
                        [g[j] for _, g in gates],
                        "o-",
                        ms=3,
                        color=COLORS[j % len(COLORS)],
                        label=f"gate {j}",
                    )
                legend(gate_ax)
        loss_ax.set_xlabel("step")
        loss_ax.set_ylabel("loss")
        gate_ax.set_xlabel("epoch")
        gate_ax.set_ylabel("gate value")
        if handles:
            legend(loss_ax, handles)
        canvas.draw_idle()

    # -- saving -----------------------------------------------------------------------------------
    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the active model", "model.safetensors", "Models (*.safetensors)"
        )
        if path:
            self.save_model(path)

    def save_model(self, path: Any) -> bool:
        """Save the model this widget trained last (the active model before any training) to a
        ``.safetensors`` file; another model made active since does not replace it."""
        trained = self.result is not None and self.result.model is not None
        model = self.result.model if trained else self.session.model
        if model is None:
            show_error("There is no active model to save; train or load one first")
            return False
        try:
            saved = save_model(model, path, overwrite=True)  # the file dialog asked first
        except (CheckpointError, OSError, ValueError) as exc:
            show_error(f"Could not save the model: {exc}")
            return False
        set_status(self.status, f"Saved the {'trained' if trained else 'active'} model to {saved.name}")
        return True
