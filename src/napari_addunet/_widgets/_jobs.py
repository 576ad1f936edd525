"""Running engine generators in napari thread workers, one job at a time per kind.

:class:`JobRunner` starts a generator (the engine's ``iter_denoise``, ``train_events``, a
gate sweep ...) in a napari ``thread_worker``, shows its progress in a progress bar and in
napari's activity dock (with a cancel button), refuses a second start while it runs, and
reports the end as an :class:`Outcome`: the generator's return value, "cancelled", or the
engine's error, which also becomes a napari notification. The generator never raises into
the worker: exceptions are turned into outcomes here, so the widget is usable again
afterwards whatever happened.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QLabel, QProgressBar

from napari_addunet.engine.inference import InferenceCancelled
from napari_addunet.session import Session, SessionBusyError

from ._common import call_when_destroyed, is_deleted, set_status, show_error, show_info, start_worker


@dataclasses.dataclass
class Outcome:
    """How a job ended: ``status`` is ``"done"`` (with ``value``), ``"cancelled"`` or ``"error"``."""

    status: str
    value: Any = None
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def message(self) -> str:
        if self.error is None:
            return self.status
        text = str(self.error).strip()
        return text or type(self.error).__name__


def guarded(factory: Callable[[], Generator[Any, None, Any]]) -> Generator[Any, None, Outcome]:
    """Drive ``factory()``'s generator, returning an :class:`Outcome` instead of raising."""
    t0 = time.perf_counter()
    gen = None
    try:
        gen = factory()
        value = yield from gen
    except InferenceCancelled:
        return Outcome("cancelled", seconds=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - every engine error becomes a message
        return Outcome("error", error=exc, seconds=time.perf_counter() - t0)
    finally:
        if gen is not None:
            gen.close()
    return Outcome("done", value=value, seconds=time.perf_counter() - t0)


def _progress_of(event: Any) -> tuple[int, int, str] | None:
    done, total = getattr(event, "done", None), getattr(event, "total", None)
    if done is None or total is None:
        return None
    return int(done), int(total), str(getattr(event, "message", ""))


class _Relay(QObject):
    """Runs callables from the event loop, queued, never inside the caller's slot."""

    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(self._run, Qt.QueuedConnection)

    def _run(self, fn: Callable[[], Any]) -> None:
        fn()


_RELAY: _Relay | None = None


def later(fn: Callable[[], Any]) -> None:
    """Call ``fn`` from the event loop soon (on the main thread)."""
    global _RELAY
    if _RELAY is None:
        _RELAY = _Relay()
    _RELAY.call.emit(fn)


class ActivityBar:
    """A progress bar in napari's activity dock, with a cancel button.

    napari's progress widgets call ``processEvents()`` on every change. Called from one of
    our slots, that would let Qt run anything pending in the middle of it (other worker
    signals, even the deletion of the widget), so every change here is applied later, from
    the event loop, by a relay object that lives as long as the application; updates are
    coalesced. This object holds no Qt object and survives its widget.
    """

    def __init__(self, description: str, cancel: Callable[[], Any]) -> None:
        self.description = description
        self._cancel = cancel
        self._state = (0, 0, description)
        self._closed = False
        self._pending = False
        self._flushing = False
        self._pbar: Any = None
        self._schedule()

    def update(self, done: int, total: int, message: str) -> None:
        self._state = (done, total, message or self.description)
        self._schedule()

    def close(self) -> None:
        self._closed = True
        self._schedule()

    def _schedule(self) -> None:
        if not self._pending:
            self._pending = True
            later(self._flush)

    def _flush(self) -> None:
        if self._flushing:  # re-entered through napari's processEvents(): do it afterwards
            later(self._flush)
            return
        self._pending = False
        self._flushing = True
        try:
            self._apply()
        finally:
            self._flushing = False

    def _apply(self) -> None:
        if self._pbar is None:
            if self._closed:
                return
            from napari.utils import cancelable_progress

            self._pbar = cancelable_progress(total=0, desc=self.description, cancel_callback=self._cancel)
        pbar = self._pbar
        if self._closed:
            self._pbar = None
            pbar.close()
            return
        done, total, message = self._state
        if pbar.total != total:
            pbar.total = total
        if done != pbar.n:
            pbar.update(done - pbar.n)
        if message != pbar.desc.rstrip(": "):
            pbar.set_description(message)


def _runner_destroyed(holder: dict[str, Any]) -> None:
    """The runner is being destroyed (its widget was closed): ask its current job to stop.

    The slot in the session is freed when the job's worker has finished
    (:func:`_release_job`), so a new job of the kind cannot start while the old one still runs.
    """
    holder["closed"] = True  # nothing of a job that ends now reaches the closed widget
    live = holder.get("job")
    if live is None:
        return
    if live.get("cancel") is not None:
        live["cancel"].set()
    QTimer.singleShot(0, functools.partial(_close_bar, live))  # not inside Qt's destruction


def _close_bar(live: dict[str, Any]) -> None:
    if live.get("pbar") is not None:
        live["pbar"].close()
        live["pbar"] = None


def _release_job(live: dict[str, Any], session: Session, kind: str) -> None:
    """The job's worker finished: free the session's slot (once) and close its activity bar.

    Connected to the worker, which lives until it has finished, so this runs whether or not
    the widget that started the job still exists.
    """
    if live.get("claimed"):
        session.release(kind)
    _close_bar(live)
    live.update(cancel=None, claimed=False)


class JobRunner(QObject):
    """One background job at a time, of one kind, per viewer.

    Parameters
    ----------
    session
        The viewer's session; the job claims ``kind`` there, so two widgets cannot run the
        same kind of job at once in one viewer.
    kind
        ``"inference"``, ``"training"``, ``"sweep"``, ``"readout"``.
    progress_bar, status
        Where to show progress and messages.
    """

    started = Signal()
    event = Signal(object)
    done = Signal(object)  # Outcome

    def __init__(
        self,
        session: Session,
        kind: str,
        progress_bar: QProgressBar | None = None,
        status: QLabel | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.kind = kind
        self.progress_bar = progress_bar
        self.status = status
        self.worker: Any = None
        self.cancel_event: threading.Event | None = None
        self.description = ""
        self._pbar: Any = None
        self._outcome: Outcome | None = None
        self._gen: Any = None
        self._on_event: Callable[[Any], Any] | None = None
        self._on_done: Callable[[Outcome], Any] | None = None
        self._progress: Callable[[Any], tuple[int, int, str] | None] = _progress_of
        # If the widget is closed while a job runs: stop the job; its worker frees the slot.
        # (Plain dicts, not self: the handler runs when this object is being destroyed. Each
        # job has its own, so a job started as the last one ends keeps its claim.)
        self._live: dict[str, Any] = {"cancel": None, "claimed": False, "pbar": None}
        self._holder: dict[str, Any] = {"job": None}
        call_when_destroyed(self, functools.partial(_runner_destroyed, self._holder))

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(
        self,
        factory: Callable[[], Generator[Any, None, Any]],
        description: str,
        *,
        on_event: Callable[[Any], Any] | None = None,
        on_done: Callable[[Outcome], Any] | None = None,
        cancel_event: threading.Event | None = None,
        progress: Callable[[Any], tuple[int, int, str] | None] | None = None,
    ) -> bool:
        """Start ``factory()`` in a worker; False (with a message) if a job is already running.

        ``cancel_event`` is set by :meth:`cancel` (pass the same event to the engine call);
        ``progress`` maps an event to ``(done, total, message)``.
        """
        if self.running:
            show_info(f"{self.description} is still running; wait for it or cancel it")
            return False
        try:
            self.session.claim(self.kind, description)
        except SessionBusyError as exc:
            show_info(str(exc))
            return False
        from napari.qt.threading import create_worker

        self.description = description
        self.cancel_event = cancel_event or threading.Event()
        self._on_event, self._on_done = on_event, on_done
        self._progress = progress or _progress_of
        self._outcome = None
        self._pbar = ActivityBar(description, self.cancel_event.set)
        self._live = {"cancel": self.cancel_event, "claimed": True, "pbar": self._pbar}
        self._holder["job"] = self._live
        if self.progress_bar is not None:
            self.progress_bar.setRange(0, 0)
            self.progress_bar.setFormat(description)
        if self.status is not None:
            set_status(self.status, f"{description}...")
        gen = guarded(factory)

        def job() -> Generator[Any, None, Outcome]:
            return (yield from gen)

        worker = create_worker(job, _start_thread=False)
        self._gen = gen
        worker.yielded.connect(self._on_yield)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        worker.finished.connect(functools.partial(_release_job, self._live, self.session, self.kind))
        self.worker = worker
        self.started.emit()
        start_worker(worker)
        return True

    def cancel(self) -> None:
        """Ask the running job to stop (within one tile or one training step)."""
        if self.cancel_event is not None:
            self.cancel_event.set()
        if self.status is not None and self.running:
            set_status(self.status, f"cancelling {self.description}...")

    def wait(self, timeout: float = 60.0) -> None:
        """Process events until the job ended (for scripts and tests)."""
        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > end:
                raise TimeoutError(f"{self.description} did not finish within {timeout} s")
            QApplication.processEvents()
            time.sleep(0.005)

    # -- worker signals (main thread) -------------------------------------------------------------
    def _on_yield(self, event: Any) -> None:
        if is_deleted(self):  # the widget was closed; the job is being cancelled
            return
        info = self._progress(event)
        if info is not None:
            done, total, message = info
            bar = self.progress_bar
            if bar is not None:
                shown, length = bar_position(done, total)
                bar.setRange(0, length)
                bar.setValue(shown)
                bar.setFormat(message or self.description)
            if self._pbar is not None:
                self._pbar.update(done, total, message)
        if self._holder.get("closed"):
            return
        if self._on_event is not None:
            self._on_event(event)
        self.event.emit(event)

    def _on_returned(self, outcome: Outcome) -> None:
        if not is_deleted(self):
            self._outcome = outcome

    def _on_finished(self) -> None:
        if is_deleted(self):
            return
        outcome = self._outcome or Outcome("cancelled")
        self.worker = None
        if self._gen is not None:
            self._gen.close()
            self._gen = None
        self._pbar = None
        _release_job(self._live, self.session, self.kind)
        if self.progress_bar is not None:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1 if outcome.ok else 0)
            self.progress_bar.setFormat(
                {"done": "done", "cancelled": "cancelled", "error": "failed"}.get(outcome.status, "")
            )
        if outcome.status == "error":
            message = f"{self.description} failed: {outcome.message}"
            show_error(message)
            if self.status is not None:
                set_status(self.status, message, error=True)
        elif outcome.status == "cancelled" and self.status is not None:
            set_status(self.status, f"{self.description} cancelled; nothing was changed")
        on_done = None if self._holder.get("closed") else self._on_done
        self._on_event = self._on_done = None
        try:
            if on_done is not None:
                on_done(outcome)
        except Exception as exc:  # noqa: BLE001 - the widget must stay usable whatever happened
            message = f"{self.description}: the result could not be shown: {exc}"
            show_error(message)
            if self.status is not None:
                set_status(self.status, message, error=True)
        finally:
            self._outcome = None  # its result may be large and now belongs to the layers it made
            self.done.emit(outcome)


BAR_LIMIT = 2**31 - 1
"""Qt progress bars count in 32-bit integers."""


def bar_position(done: int, total: int) -> tuple[int, int]:
    """``(value, maximum)`` for a Qt progress bar; totals past its integer range are scaled."""
    total = max(int(total), 0)
    done = min(max(int(done), 0), total)
    if total <= BAR_LIMIT:
        return done, total
    return int(done * (BAR_LIMIT / total)), BAR_LIMIT
