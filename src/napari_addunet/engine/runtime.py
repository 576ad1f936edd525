"""The inner loop shared by the eager (numpy) and lazy (dask) paths: planes in, planes out."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch

from .axes import PlaneLayout
from .ensemble import ensemble_mean
from .mapped import release_mapped_pages
from .normalization import Normalizer, fill_nonfinite, group_of, work_dtype
from .tiling import PlaneDone, Replanned, TiledRunner, TilesDone

_AMP = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclasses.dataclass
class Settings:
    """Everything needed to run a model over planes; picklable (for dask.distributed).

    ``device`` is the resolved device string; ``device_request`` what the caller asked for,
    re-resolved when the settings are unpickled in another process.
    """

    model: torch.nn.Module
    device: str
    device_request: Any
    tile: int
    overlap: int
    context: int
    multiple: int
    floor: int
    batch_size: int | None
    gates: tuple[float, ...] | None
    classify: bool
    amp: str | None
    channels_last: bool
    nan_policy: str
    ensemble: int = 1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state.pop("_forward_lock", None)
        model = state["model"]
        if any(p.device.type != "cpu" for p in model.parameters()):
            import copy

            state["model"] = copy.deepcopy(model).to("cpu")
        state["_moved"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def prepared_model(self) -> tuple[torch.nn.Module, torch.device]:
        """The model on its device (moved once after unpickling)."""
        if self.__dict__.get("_moved", True):
            return self.model, torch.device(self.device)
        lock = self.__dict__.setdefault("_lock", threading.Lock())
        with lock:
            if not self.__dict__.get("_moved", True):
                from .devices import resolve_device, use_fast_layout

                dev = resolve_device(self.device_request if self.device_request is not None else "auto")
                self.model.to(dev).eval()
                if dev.type != "cuda":
                    self.amp = None
                self.channels_last = use_fast_layout(self.model, dev)
                self.device = str(dev)
                self._moved = True
        return self.model, torch.device(self.device)

    @property
    def want_features(self) -> bool:
        return bool(self.classify and getattr(self.model, "head", None) is not None)

    def make_runner(self, tail: tuple[int, int] = (0, 0)) -> TiledRunner:
        """A tile runner for one call (``tail``: pixels of the image beyond the planes' far
        edges, for a block of a larger image). Forward passes of runners made from the same settings
        never overlap: concurrent dask blocks would only multiply activation memory, since one
        forward pass already uses every CPU core (or the whole GPU)."""
        model, device = self.prepared_model()
        forward = make_forward(
            model,
            device,
            self.gates,
            self.want_features,
            _AMP.get(self.amp or "", None),
            self.channels_last,
            self.ensemble,
        )
        lock = self.__dict__.setdefault("_forward_lock", threading.Lock())

        def serialised(
            batch: np.ndarray, owned: Sequence[tuple[int, int, int, int]], far: tuple[int, int]
        ) -> Any:
            with lock:
                return forward(batch, owned, far)

        return TiledRunner(
            serialised,
            tile=self.tile,
            overlap=self.overlap,
            context=self.context,
            multiple=self.multiple,
            floor=self.floor,
            batch_size=self.batch_size,
            tail=tail,
        )


def make_forward(
    model: torch.nn.Module,
    device: torch.device,
    gates: Sequence[float] | None,
    want_features: bool,
    amp: torch.dtype | None,
    channels_last: bool,
    ensemble: int = 1,
) -> Any:
    """A numpy-in, numpy-out forward function for :class:`~napari_addunet.engine.tiling.TiledRunner`.

    With ``ensemble`` > 1 the denoised image is the mean over that many orientations of the
    input (see :mod:`~napari_addunet.engine.ensemble`), each flipped copy pooled on the grid of
    the flipped image (``far``, see :data:`~napari_addunet.engine.tiling.Forward`); the
    features for classification come from the untransformed input only.
    """
    from napari_addunet.models.addunet import AddUNet

    split = isinstance(model, AddUNet)  # gates and cached features: AddUNet's encode / decode
    gate_list = None if gates is None else list(gates)

    def image_only(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if split and gate_list is not None:
            return model.decode(model.encode(x), gate_list).denoised
        return model(x).denoised

    def run(
        x: torch.Tensor,
        owned: Sequence[tuple[int, int, int, int]],
        far: tuple[int, int],
        dtype: torch.dtype | None,
    ) -> Any:
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        feats = padded = None
        with ctx:
            if split and (gate_list is not None or want_features):
                f = model.encode(x)
                image = model.decode(f, gate_list).denoised
                feats, padded = f.bottleneck, tuple(f.input.shape[-2:])
            elif want_features:
                model.check_input(x)
                xp, size = model.pad_input(x)
                image, feats = model.forward_features(xp)
                image = model.crop_output(image, size)
                padded = tuple(xp.shape[-2:])
            else:
                image = model(x).denoised
            if ensemble > 1:
                image = ensemble_mean(image_only, x, ensemble, identity=image, far=far)
        image = image.float()
        sums = None
        if feats is not None:
            sums = _feature_sums(feats.float(), padded, tuple(x.shape[-2:]), owned)
        return image, sums

    def forward(
        batch: np.ndarray, owned: Sequence[tuple[int, int, int, int]], far: tuple[int, int] = (0, 0)
    ) -> Any:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            image, sums = run(x, owned, far, amp)
            if amp is not None and not bool(torch.isfinite(image).all()):
                # Reduced precision overflowed: redo this batch in float32.
                image, sums = run(x, owned, far, None)
            return image.cpu().numpy(), sums

    return forward


def _feature_sums(
    feats: torch.Tensor,
    padded: tuple[int, int],
    size: tuple[int, int],
    owned: Sequence[tuple[int, int, int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    fh, fw = feats.shape[-2:]
    ph, pw = padded
    h, w = size
    sums, counts = [], []
    for j, (y0, y1, x0, x1) in enumerate(owned):
        a = int(round(y0 * fh / ph))
        b = fh if y1 >= h else max(a + 1, int(round(y1 * fh / ph)))
        c = int(round(x0 * fw / pw))
        d = fw if x1 >= w else max(c + 1, int(round(x1 * fw / pw)))
        sums.append(feats[j, :, a:b, c:d].sum(dim=(-2, -1)).double().cpu().numpy())
        counts.append((b - a) * (d - c))
    return np.stack(sums), np.asarray(counts, dtype=np.float64)


def class_probabilities(
    model: torch.nn.Module, device: torch.device, mean_features: np.ndarray
) -> np.ndarray:
    """Softmax of the head applied to the mean deep features (the head pools globally first)."""
    with torch.inference_mode():
        f = torch.from_numpy(np.asarray(mean_features, dtype=np.float32)).to(device)[None, :, None, None]
        logits = model.head(f).float()
        return torch.softmax(logits, dim=-1)[0].cpu().numpy()


@dataclasses.dataclass
class PlaneFinished:
    """Event of :func:`plane_loop`: plane number ``index`` (in layout order) was written."""

    index: int
    label: str


def plane_loop(
    settings: Settings,
    runner: TiledRunner,
    data: Any,
    layout: PlaneLayout,
    normalizer: Normalizer,
    out: Any,
    probabilities: np.ndarray | None = None,
) -> Generator[TilesDone | Replanned | PlaneFinished, None, None]:
    """Denoise every plane of ``data`` into ``out``, yielding runner events and finished planes.

    Planes are read one at a time (``np.asarray(data[index])``), so memory-mapped, zarr and
    dask inputs are never loaded whole; once a plane of a shared memory map is copied, its
    pages are given back (``engine/mapped.py``), so they do not pile up in the resident set.
    """
    positions = list(layout.plane_positions())
    wide = work_dtype(np.dtype(data.dtype)) is np.float64
    masks: dict[int, np.ndarray] = {}
    fill = settings.nan_policy in ("fill", "mask")

    def source() -> Generator[tuple[int, np.ndarray], None, None]:
        for k, pos in enumerate(positions):
            raw = np.asarray(data[layout.index(pos)])
            plane = layout.to_plane(raw, pos)
            g = group_of(layout, pos)
            if fill:
                plane, mask = fill_nonfinite(plane, normalizer.fill[g])
                if mask is not None and settings.nan_policy == "mask":
                    masks[k] = mask
            work = np.ascontiguousarray(normalizer.forward(plane, g))
            if np.may_share_memory(work, raw):  # float32 with no normalisation: still the map
                work = work.copy()
            del plane
            release_mapped_pages(raw)  # the copy above is what the model reads
            del raw
            yield k, work

    model, device = settings.prepared_model()
    for event in runner.run(source()):
        if isinstance(event, PlaneDone):
            k = event.key
            pos = positions[k]
            result = normalizer.inverse(event.image, group_of(layout, pos), wide=wide)
            mask = masks.pop(k, None)
            if mask is not None:
                result[mask] = np.nan
            out[layout.index(pos)] = layout.from_plane(result, pos)
            if probabilities is not None and event.features is not None:
                probabilities[k] = class_probabilities(model, device, event.features)
            yield PlaneFinished(k, layout.describe(pos))
        else:
            yield event
