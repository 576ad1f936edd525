"""Live preview of an AddUNet's skip gates: encode a slice once, decode it for every new gate setting.

The encoder of an AddUNet does not depend on the gates, so its outputs (the skips and the
bottleneck) are computed once per slice and kept. A new gate setting then runs only the
decoder, and only from the deepest level whose gate changed: the decoder goes deep to
shallow, and the levels below (deeper than) the first changed gate see the same inputs as
before, so their outputs are kept too. Moving the shallowest gate re-runs one level.

:class:`GatePreview` is that cache for a batch of normalised planes. :class:`SlicePreview`
puts it behind what the Skip gates widget has: an array with named axes, the position of
the slice on screen and the centre of the view; it reads and normalises the slice exactly
as :func:`~napari_addunet.engine.inference.iter_denoise` does, crops it to at most
``max_side`` pixels around the centre, and returns the preview in the array's own units and
axis order. :meth:`SlicePreview.sweep` measures PSNR and SSIM against a clean reference
while one gate moves over a range (the paper's Fig. 5).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Generator, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from napari_addunet.models import DenoiserModel, addunet_bands
from napari_addunet.models.addunet import BAND_ROWS

from .axes import PlaneLayout, plane_layout, resolve_axes
from .devices import use_fast_layout
from .inference import Progress
from .normalization import (
    Normalizer,
    compute_normalizer,
    fill_nonfinite,
    group_of,
    model_normalization,
    parse_normalization,
)
from .readout import compare, data_range_of

DEFAULT_MAX_SIDE = 512
"""Largest side of the previewed region, in pixels (the encoder's cache grows with its area)."""


def has_gates(model: Any) -> bool:
    """Whether ``model`` has AddUNet skip gates that :class:`GatePreview` can drive."""
    return all(hasattr(model, a) for a in ("encode", "decode", "gates", "set_gates"))


def gate_slider_max(learned: float, factor: float = 2.0, floor: float = 1.0) -> float:
    """Upper end of a gate slider: ``factor`` times the learned value, at least ``floor``.

    The floor keeps a range for a gate that learned (almost) 0.
    """
    return max(factor * float(learned), float(floor))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass(frozen=True)
class DecodeTiming:
    """How long one :meth:`GatePreview.render` took.

    Attributes
    ----------
    seconds
        Decoder time (0 when nothing changed).
    levels
        Decoder levels re-run (0 ... depth).
    depth
        Levels of the model.
    """

    seconds: float
    levels: int
    depth: int


class GatePreview:
    """Cached encoder features of a batch of planes, decoded again for new gates.

    Parameters
    ----------
    model
        An AddUNet (anything with ``encode``/``decode`` and gates). It is used where it is
        (its device) and never modified.

    Raises
    ------
    GateError
        If the model has no skip gates.
    """

    def __init__(self, model: DenoiserModel) -> None:
        if not has_gates(model):
            from napari_addunet.models.addunet import GateError

            raise GateError(
                f"the gate preview needs an AddUNet; this model is {getattr(model, 'architecture', '?')!r}, "
                "which has no skip gates"
            )
        self.model = model
        self.device = next(model.parameters()).device
        self.key: Hashable | None = None
        self._features: Any = None
        self._levels: list[torch.Tensor] | None = None  # decoder state after each level, deep to shallow
        self._alphas: list[float] | None = None
        self._output: np.ndarray | None = None
        self.logits: np.ndarray | None = None
        # The partial decoder follows AddUNet's own loop; other models get the full decode.
        self._partial = all(hasattr(model, a) for a in ("decoders", "out", "ups", "config", "crop_output"))

    @property
    def depth(self) -> int:
        return len(self.model.gates)

    @property
    def ready(self) -> bool:
        """Whether features are cached."""
        return self._features is not None

    def clear(self) -> None:
        """Drop the cached features."""
        self.key = None
        self._features = self._levels = self._alphas = self._output = self.logits = None

    def encode(self, planes: np.ndarray, key: Hashable | None = None) -> float | None:
        """Run the encoder on ``planes`` unless ``key`` equals the cached one.

        Parameters
        ----------
        planes
            ``(n, in_channels, H, W)`` float32, normalised as the model expects.
        key
            Identifies the content; a repeated key reuses the cache.

        Returns
        -------
        float or None
            Encoder seconds, or None when the cache was reused.
        """
        device = next(self.model.parameters()).device
        if key is not None and key == self.key and self._features is not None and device == self.device:
            return None
        self.clear()
        self.device = device
        self.model.eval()  # a model set from the console may be in training mode (batch norm)
        use_fast_layout(self.model, device)
        x = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)).to(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            features = self.model.encode(x)
            head = getattr(self.model, "head", None)
            if head is not None:
                self.logits = head(features.bottleneck).float().cpu().numpy()
        _sync(self.device)
        seconds = time.perf_counter() - t0
        self._features = features
        self.key = key
        return seconds

    def render(self, gates: Sequence[float]) -> tuple[np.ndarray, DecodeTiming]:
        """Decode the cached features with ``gates``; return ``(n, out_channels, H, W)`` float32 and timings."""
        if self._features is None:
            raise RuntimeError("GatePreview.render needs encode() first")
        alphas = [float(a) for a in self.model._check_gates(gates)]
        depth = len(alphas)
        changed = [j for j in range(depth) if self._alphas is None or self._alphas[j] != alphas[j]]
        if not changed and self._output is not None:
            return self._output, DecodeTiming(0.0, 0, depth)
        t0 = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            if self._partial:
                image, levels = self._decode_partial(alphas, max(changed))
            else:
                image, levels = self.model.decode(self._features, gates=alphas).denoised, depth
            out = image.float().cpu().numpy()
        _sync(self.device)
        seconds = time.perf_counter() - t0
        self._alphas, self._output = alphas, out
        return out, DecodeTiming(seconds, levels, depth)

    def _decode_partial(self, alphas: list[float], start: int) -> tuple[torch.Tensor, int]:
        """AddUNet's decoder from level ``start`` (deepest changed) up to level 0."""
        m, f = self.model, self._features
        cfg = m.config
        depth = len(alphas)
        if self._levels is None:
            self._levels = [None] * depth  # type: ignore[list-item]
            start = depth - 1
        u = f.bottleneck if start == depth - 1 else self._levels[start + 1]
        for j in range(start, 0, -1):
            u = m.decode_level(j, u, f.skips[j], alphas[j])
            if cfg.multiscale:
                u = m.ups[j - 1](u)
            self._levels[j] = u  # level j - 1's input
        if u.device.type == "cpu" and addunet_bands.decoder_level0_in_bands(m, u.shape[-2], BAND_ROWS):
            # level 0 band by band: the same values, in a working set that stays in cache
            y = addunet_bands.decode_level0_from(m, u, f.skips[0], alphas[0], f.input, BAND_ROWS)
        else:
            y = m.out(m.decode_level(0, u, f.skips[0], alphas[0]))
            if cfg.global_residual:
                y = y + f.input
        return m.crop_output(y, f.size), start + 1

    def forward_seconds(self, planes: np.ndarray, gates: Sequence[float] | None = None) -> float:
        """Time of one full forward pass (encoder and decoder) on ``planes``, for comparison."""
        x = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)).to(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            self.model.decode(self.model.encode(x), gates=gates)
        _sync(self.device)
        return time.perf_counter() - t0


# -- the slice on screen -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PreviewRequest:
    """What to preview.

    Attributes
    ----------
    data
        The whole array (numpy, dask, zarr ...); only the slice is read.
    axes
        Its axis letters, or None to infer them (with ``rgb``).
    position
        Index of the slice along the array's T and Z axes, e.g. ``{"Z": 3}`` (missing: 0).
    gates
        Gate values to show.
    center
        ``(y, x)`` in pixels of the array around which the region is cropped; None: the
        middle of the image.
    max_side
        Largest side of the previewed region.
    data_key
        Identifies the array's content (e.g. the layer and its data object); the encoder
        cache and the intensity statistics are kept while it does not change.
    rgb
        napari's ``rgb`` flag, used only when ``axes`` is None.
    normalization
        Overrides the model's recorded normalisation.
    """

    data: Any
    axes: str | None
    position: Mapping[str, int]
    gates: Sequence[float]
    center: tuple[float, float] | None = None
    max_side: int = DEFAULT_MAX_SIDE
    data_key: Hashable | None = None
    rgb: bool | None = None
    normalization: Mapping[str, Any] | str | None = None


@dataclasses.dataclass(frozen=True)
class PreviewFrame:
    """A rendered preview.

    Attributes
    ----------
    block
        float32, in the array's units and axis order with the T/Z axes dropped (e.g. ``YX``,
        ``YXC``), covering rows ``origin[0]:origin[0]+h`` and columns ``origin[1]:...``.
    origin
        ``(y0, x0)`` of the region in the array.
    axes, position, gates
        What was previewed.
    encode_seconds
        Encoder time, or None when the cached features were used.
    decode_seconds, levels, depth
        Decoder time and the decoder levels re-run out of ``depth``.
    """

    block: np.ndarray
    origin: tuple[int, int]
    axes: str
    position: dict[str, int]
    gates: tuple[float, ...]
    encode_seconds: float | None
    decode_seconds: float
    levels: int
    depth: int

    @property
    def seconds(self) -> float:
        """Compute time of this frame (encoder, if it ran, and decoder)."""
        return (self.encode_seconds or 0.0) + self.decode_seconds


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """PSNR and SSIM against a reference while one gate moves.

    Attributes
    ----------
    gate
        Index of the gate that moved (0 = shallowest).
    values, psnr, ssim
        The gate values and the metrics at each.
    base_gates
        The other gates' values during the sweep.
    data_range
        Peak value used by PSNR and SSIM.
    origin, shape
        The region measured (the previewed region).
    """

    gate: int
    values: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray
    base_gates: tuple[float, ...]
    data_range: float
    origin: tuple[int, int]
    shape: tuple[int, int]

    @property
    def best_value(self) -> float:
        """Gate value with the highest PSNR."""
        return float(self.values[int(np.nanargmax(self.psnr))])

    def rows(self) -> list[dict[str, float]]:
        return [
            {"gate_value": float(v), "psnr": float(p), "ssim": float(s)}
            for v, p, s in zip(self.values, self.psnr, self.ssim, strict=True)
        ]


def crop_window(
    height: int, width: int, center: tuple[float, float] | None, max_side: int
) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: a region of at most ``max_side`` per side around ``center``, inside the image."""
    if max_side < 8:
        raise ValueError(f"max_side must be at least 8 pixels, got {max_side}")
    cy, cx = (height / 2.0, width / 2.0) if center is None else (float(center[0]), float(center[1]))
    out = []
    for length, c in ((height, cy), (width, cx)):
        side = min(length, max_side)
        start = int(round(c - side / 2.0)) if math.isfinite(c) else 0
        start = min(max(start, 0), length - side)
        out.extend([start, start + side])
    return out[0], out[1], out[2], out[3]


class SlicePreview:
    """The Skip gates preview of one slice of an array: cached encoder, decoder on demand.

    Parameters
    ----------
    model
        An AddUNet.

    Notes
    -----
    Use it from one thread at a time (the widget runs it in one worker at a time).
    """

    def __init__(self, model: DenoiserModel) -> None:
        self.cache = GatePreview(model)
        self.model = model
        self._normalizers: dict[Hashable, tuple[PlaneLayout, Normalizer]] = {}

    # -- reading the slice ------------------------------------------------------------------
    def _layout(self, request: PreviewRequest) -> tuple[PlaneLayout, Normalizer]:
        shape = tuple(int(s) for s in request.data.shape)
        axes = resolve_axes(shape, request.axes, request.rgb)
        spec = (
            parse_normalization(request.normalization)
            if request.normalization is not None
            else model_normalization(self.model)
        )
        key = (request.data_key if request.data_key is not None else id(request.data), shape, axes, str(spec))
        hit = self._normalizers.get(key)
        if hit is None:
            layout = plane_layout(shape, axes, self.model.in_channels, self.model.out_channels)
            float_input = np.dtype(request.data.dtype).kind == "f"
            normalizer = compute_normalizer(request.data, layout, spec, need_fill=float_input)
            self._normalizers = {key: (layout, normalizer)}  # one array at a time
            hit = (layout, normalizer)
        return hit

    @staticmethod
    def _base_position(layout: PlaneLayout, position: Mapping[str, int]) -> dict[str, int]:
        pos = {}
        for a in layout.stack_axes:
            n = layout.size(a)
            i = int(position.get(a, 0))
            if not 0 <= i < n:
                raise IndexError(f"slice {a.lower()}={i} is outside the array (length {n} along {a})")
            pos[a] = i
        return pos

    @staticmethod
    def _block(data: Any, layout: PlaneLayout, pos: dict[str, int], window: tuple[int, int, int, int]) -> Any:
        y0, y1, x0, x1 = window
        kept = [a for a in layout.axes if a not in pos]
        crop = tuple(slice(y0, y1) if a == "Y" else slice(x0, x1) if a == "X" else slice(None) for a in kept)
        return np.asarray(data[layout.index(pos)])[crop]

    @staticmethod
    def _planes(layout: PlaneLayout, pos: dict[str, int], block: np.ndarray) -> list[tuple[dict, np.ndarray]]:
        kept = [a for a in layout.axes if a not in pos]
        if "C" in kept and not layout.joint_channels:
            c_axis = kept.index("C")
            return [
                ({**pos, "C": c}, layout.to_plane(np.take(block, c, axis=c_axis), {**pos, "C": c}))
                for c in range(block.shape[c_axis])
            ]
        return [(pos, layout.to_plane(block, pos))]

    def read(self, request: PreviewRequest) -> tuple[np.ndarray, list[dict], PlaneLayout, tuple[int, ...]]:
        """Normalised planes ``(n, c, h, w)`` of the requested region, their positions, layout and window."""
        layout, normalizer = self._layout(request)
        pos = self._base_position(layout, request.position)
        window = crop_window(layout.height, layout.width, request.center, request.max_side)
        block = self._block(request.data, layout, pos, window)
        planes, positions = [], []
        for p, plane in self._planes(layout, pos, block):
            g = group_of(layout, p)
            plane, _ = fill_nonfinite(plane, normalizer.fill[g])
            planes.append(normalizer.forward(plane, g))
            positions.append(p)
        return np.stack(planes), positions, layout, window

    # -- rendering ----------------------------------------------------------------------------
    def update(self, request: PreviewRequest) -> PreviewFrame:
        """Render ``request``: encode the slice if it is new, then decode with its gates."""
        layout, normalizer = self._layout(request)
        pos = self._base_position(layout, request.position)
        window = crop_window(layout.height, layout.width, request.center, request.max_side)
        key = (
            request.data_key if request.data_key is not None else id(request.data),
            layout.axes,  # other axes or another normalisation read other planes, other values
            normalizer,
            tuple(pos.items()),
            window,
        )
        encode_seconds = None
        if key != self.cache.key:
            planes, positions, _, _ = self.read(request)
            encode_seconds = self.cache.encode(planes, key)
        output, timing = self.cache.render(request.gates)
        block = self._assemble(layout, normalizer, pos, output)
        return PreviewFrame(
            block=block,
            origin=(window[0], window[2]),
            axes=layout.axes,
            position=pos,
            gates=tuple(float(g) for g in request.gates),
            encode_seconds=encode_seconds,
            decode_seconds=timing.seconds,
            levels=timing.levels,
            depth=timing.depth,
        )

    @staticmethod
    def _assemble(
        layout: PlaneLayout, normalizer: Normalizer, pos: dict[str, int], output: np.ndarray
    ) -> np.ndarray:
        kept = [a for a in layout.axes if a not in pos]
        if "C" in kept and not layout.joint_channels:
            parts = []
            for c in range(output.shape[0]):
                p = {**pos, "C": c}
                parts.append(layout.from_plane(normalizer.inverse(output[c], group_of(layout, p)), p))
            return np.stack(parts, axis=kept.index("C"))
        return layout.from_plane(normalizer.inverse(output[0], group_of(layout, pos)), pos)

    def sweep(
        self,
        request: PreviewRequest,
        reference: Any,
        gate: int,
        values: Sequence[float],
        data_range: float | None = None,
        cancel: threading.Event | None = None,
    ) -> Generator[Progress, None, SweepResult]:
        """Generator: PSNR and SSIM of the previewed region against ``reference`` for each gate value.

        Parameters
        ----------
        request
            The slice and region (its ``gates`` give the other gates' values).
        reference
            A clean array of the same shape as ``request.data``.
        gate
            Index of the gate to move.
        values
            Gate values (non-negative).
        data_range
            Peak value for PSNR/SSIM; None: from the reference (see
            :func:`~napari_addunet.engine.readout.data_range_of`).
        cancel
            A ``threading.Event``; when set, the sweep stops before the next value and raises
            :class:`~napari_addunet.engine.inference.InferenceCancelled`.

        Yields
        ------
        Progress
            After each value.

        Returns
        -------
        SweepResult
        """
        shape = tuple(int(s) for s in request.data.shape)
        ref_shape = tuple(int(s) for s in reference.shape)
        if ref_shape != shape:
            raise ValueError(f"the reference has shape {ref_shape} but the image has shape {shape}")
        depth = self.cache.depth
        if not 0 <= gate < depth:
            raise ValueError(f"gate must be between 0 and {depth - 1}, got {gate}")
        values = [float(v) for v in values]
        if not values:
            raise ValueError("the sweep needs at least one gate value")
        base = [float(g) for g in request.gates]
        layout, _ = self._layout(request)
        pos = self._base_position(layout, request.position)
        window = crop_window(layout.height, layout.width, request.center, request.max_side)
        ref_block = np.asarray(self._block(reference, layout, pos, window), dtype=np.float32)
        rng = float(data_range) if data_range is not None else data_range_of(reference)
        kept = "".join(a for a in layout.axes if a not in pos)
        psnrs, ssims = [], []
        start = time.perf_counter()
        yield Progress(0, len(values), None, f"sweeping gate {gate}")
        for i, v in enumerate(values):
            if cancel is not None and cancel.is_set():
                from .inference import InferenceCancelled

                raise InferenceCancelled(f"sweep cancelled after {i} of {len(values)} gate values")
            gates = list(base)
            gates[gate] = v
            frame = self.update(dataclasses.replace(request, gates=tuple(gates)))
            q = compare(frame.block, ref_block, axes=kept, data_range=rng)
            psnrs.append(q.psnr)
            ssims.append(q.ssim)
            done = i + 1
            elapsed = time.perf_counter() - start
            yield Progress(done, len(values), elapsed / done * (len(values) - done), f"gate {gate} = {v:.3g}")
        return SweepResult(
            gate=gate,
            values=np.asarray(values),
            psnr=np.asarray(psnrs),
            ssim=np.asarray(ssims),
            base_gates=tuple(base),
            data_range=rng,
            origin=(window[0], window[2]),
            shape=(window[1] - window[0], window[3] - window[2]),
        )
