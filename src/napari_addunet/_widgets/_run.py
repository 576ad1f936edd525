"""Denoising a layer from a widget: checks, the worker, the new layers, the session record.

Shared by **Denoise & classify** (Run) and **Skip gates** (Apply to layer). The work itself
is :func:`napari_addunet.engine.layer_run.iter_layer_denoise`; this module only reads the
layer, starts the job and adds its result.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import QObject

from napari_addunet.engine.axes import AxesError, resolve_axes
from napari_addunet.engine.checkpoint import CheckpointError
from napari_addunet.engine.layer_run import LayerError, LayerSnapshot, iter_layer_denoise
from napari_addunet.engine.readout import METADATA_KEY
from napari_addunet.session import Session

from ._common import set_status, show_error, show_info
from ._jobs import JobRunner, Outcome


class LayerRun(QObject):
    """Runs the active model over a layer and adds ``<name> [denoised]`` (and ``[residual]``).

    Attributes
    ----------
    runner
        The :class:`~._jobs.JobRunner` (kind ``"inference"``).
    last_outcome
        How the last run ended (its result without the arrays, which belong to the layers).
    added
        The layers the last run added that are still alive: the widget holds them weakly, so
        deleting a result layer frees its memory.
    """

    def __init__(
        self, viewer: Any, session: Session, runner: JobRunner, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.runner = runner
        self.input_layer: Any = None
        self.input_removed = False
        self.input_replaced = False
        self.last_outcome: Outcome | None = None
        self._added: list[weakref.ref] = []
        viewer.layers.events.removed.connect(self._on_removed)

    @property
    def added(self) -> list[Any]:
        return [layer for layer in (ref() for ref in self._added) if layer is not None]

    def check(self, layer: Any, axes: str | None) -> LayerSnapshot | None:
        """Read and check the layer (type, size, axes); show a message and return None if unusable."""
        if layer is None:
            show_error("Choose an image layer first (open one, or File > Open Sample > AddUNet Denoising)")
            return None
        try:
            snapshot = LayerSnapshot.from_layer(layer)
            resolve_axes(tuple(snapshot.data.shape), axes, snapshot.rgb if axes is None else None)
        except (LayerError, AxesError) as exc:
            hint = " Type the axes in the Axes box (e.g. ZYX or CYX)." if isinstance(exc, AxesError) else ""
            text = str(exc).strip()
            show_error(f"{text}{'' if text.endswith(('.', '?', '!')) else '.'}{hint}")
            return None
        return snapshot

    def start(
        self,
        layer: Any,
        *,
        axes: str | None = None,
        tile: int | None = None,
        device: str = "auto",
        gates: Sequence[float] | None = None,
        classify: bool | None = None,
        residual: bool = False,
        ensemble: int = 1,
        on_done: Callable[[Outcome], Any] | None = None,
    ) -> bool:
        """Start a run; False (with a message, nothing changed) when it cannot start."""
        if self.runner.running:
            show_info(f"{self.runner.description} is still running; wait for it or cancel it")
            return False
        snapshot = self.check(layer, axes)
        if snapshot is None:
            return False
        try:
            model = self.session.ensure_model()
        except (CheckpointError, OSError) as exc:
            show_error(f"Could not load the default model: {exc}")
            return False
        if classify is True and getattr(model, "head", None) is None:
            show_error(
                f"The active model ({model.architecture}) has no classification head, so it cannot "
                "classify. Untick 'classify', or train a model with a class per layer in the Train widget."
            )
            return False
        label = self.session.model_source or model.architecture

        def factory() -> Any:
            return iter_layer_denoise(
                model,
                snapshot,
                axes=axes,
                tile=tile,
                device=device,
                gates=gates,
                classify=classify,
                residual=residual,
                cancel=cancel,
                model_label=label,
                ensemble=ensemble,
            )

        import threading

        cancel = threading.Event()
        self.input_layer, self.input_removed, self.input_replaced, self._added = layer, False, False, []
        what = f"Denoising {snapshot.name!r}" + (" with chosen gates" if gates is not None else "")
        started = self.runner.start(
            factory,
            what,
            cancel_event=cancel,
            on_done=lambda outcome: self._finish(outcome, on_done),
        )
        if started:
            layer.events.data.connect(self._on_input_data)
        return started

    def _on_input_data(self, event: Any = None) -> None:
        """New data in the input layer: the result would be of the old data, under its name."""
        if self.runner.running and not self.input_replaced:
            self.input_replaced = True
            self.runner.cancel()

    def _on_removed(self, event: Any) -> None:
        if self.runner.running and event.value is self.input_layer:
            self.input_removed = True
            self.runner.cancel()

    def _finish(self, outcome: Outcome, on_done: Callable[[Outcome], Any] | None) -> None:
        self.last_outcome = outcome
        layer, self.input_layer = self.input_layer, None
        if layer is not None:
            layer.events.data.disconnect(self._on_input_data)
        if outcome.ok and (self.input_removed or self.input_replaced or layer not in self.viewer.layers):
            outcome = Outcome("cancelled", seconds=outcome.seconds)
            self.last_outcome = outcome
        name = getattr(layer, "name", "?")
        gone = self.input_removed or (layer is not None and layer not in self.viewer.layers)
        stopped = None
        if gone:
            stopped = (
                f"The layer {name!r} was removed during the run: the run was stopped and nothing was added"
            )
        elif self.input_replaced:
            stopped = (
                f"The data of {name!r} changed during the run: the run was stopped and nothing was "
                "added (run it again on the new data)"
            )
        if stopped is not None:
            show_info(stopped)
            if self.runner.status is not None:
                set_status(self.runner.status, stopped)
        elif outcome.ok:
            result = outcome.value
            rec = result.record
            if layer is not None and layer.name != rec.input_name:  # renamed during the run
                _rename_outputs(result, layer.name)
            added = [self.viewer.add_image(data, **kwargs) for data, kwargs, _ in result.layers]
            self._added = [weakref.ref(layer) for layer in added]
            # the arrays now belong to the layers alone: deleting a layer frees them
            self.last_outcome = dataclasses.replace(
                outcome, value=dataclasses.replace(result, layers=[], denoised=None, residual=None)
            )
            names = [layer.name for layer in added]
            if names != rec.output_names:  # napari numbered a name already taken ("... [1]")
                rec.output_names = names
                # the denoised layer holds the run's record; a residual keeps its own note
                added[0].metadata = {**added[0].metadata, METADATA_KEY: rec.metadata()}
            self.session.record_run(rec)
            text = (
                f"Added {', '.join(rec.output_names)} in {rec.seconds:.2f} s "
                f"({rec.megapixels_per_second:.2f} megapixels/s on {rec.device})"
            )
            if rec.labels:
                text += f"; class of the first slice: {rec.labels[0]}"
            if self.runner.status is not None:
                set_status(self.runner.status, text)
        if on_done is not None:
            on_done(outcome)


def _rename_outputs(result: Any, name: str) -> None:
    """Name a run's outputs after the input's new name (it was renamed while the run went on)."""
    rec = result.record
    old = rec.input_name
    rec.input_name = name
    rec.output_names = [n.replace(old, name, 1) if n.startswith(old) else n for n in rec.output_names]
    for (_, kwargs, _), new_name in zip(result.layers, rec.output_names, strict=False):
        kwargs["name"] = new_name
        note = kwargs.get("metadata", {}).get(METADATA_KEY, {})
        if "residual_of" in note:
            kwargs["metadata"] = {METADATA_KEY: {"residual_of": name}}
        else:
            kwargs["metadata"] = {**kwargs.get("metadata", {}), METADATA_KEY: rec.metadata()}
