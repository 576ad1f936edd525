"""Choosing the compute device."""

from __future__ import annotations

import dataclasses

import torch


class DeviceError(ValueError):
    """A device was requested that this machine or this torch build does not have."""


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """A compute device present on this machine.

    Attributes
    ----------
    name
        What :func:`resolve_device` accepts (``"cuda:0"``, ``"mps"``, ``"cpu"``).
    label
        Human-readable description for menus (``"cuda:0 NVIDIA A100 (80.0 GB)"``).
    """

    name: str
    label: str


def _cuda_free_bytes(index: int) -> int:
    try:
        free, _total = torch.cuda.mem_get_info(index)
        return int(free)
    except Exception:  # noqa: BLE001 - driver quirks: fall back to total memory
        return int(torch.cuda.get_device_properties(index).total_memory)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[DeviceInfo]:
    """Devices really present, best first: CUDA devices, then Apple MPS, then the CPU."""
    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(
                DeviceInfo(f"cuda:{i}", f"cuda:{i} {props.name} ({props.total_memory / 1e9:.1f} GB)")
            )
    if _mps_available():
        devices.append(DeviceInfo("mps", "mps (Apple GPU)"))
    devices.append(DeviceInfo("cpu", f"cpu ({torch.get_num_threads()} threads)"))
    return devices


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a device request into a ``torch.device`` that exists here.

    Parameters
    ----------
    device
        ``"auto"`` (or None): the CUDA device with the most free memory, else MPS, else CPU.
        ``"cpu"``, ``"cuda"`` (current CUDA device), ``"cuda:N"``, ``"mps"``, or a ``torch.device``.

    Raises
    ------
    DeviceError
        If the device is unknown or not present, with what is present instead.
    """
    if isinstance(device, torch.device):
        spec = str(device)
    elif device is None:
        spec = "auto"
    elif isinstance(device, str):
        spec = device.strip().lower()
    else:
        raise DeviceError(f"device must be a string or torch.device, got {type(device).__name__}")
    present = ", ".join(d.name for d in available_devices())
    if spec == "auto":
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            best = max(range(torch.cuda.device_count()), key=_cuda_free_bytes)
            return torch.device("cuda", best)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec in ("cpu", "cpu:0"):  # str(torch.device("cpu", 0)) is "cpu:0"
        return torch.device("cpu")
    if spec in ("mps", "mps:0"):  # str(torch.device("mps", 0)), what an MPS tensor reports
        if not _mps_available():
            raise DeviceError(
                f"device 'mps' was requested but Apple MPS is not available here; present: {present}"
            )
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = torch.__version__
            raise DeviceError(
                f"device {spec!r} was requested but CUDA is not available (torch {build}, "
                f"{'a CPU-only build' if torch.version.cuda is None else 'no GPU found'}); present: {present}"
            )
        if spec == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        try:
            index = int(spec.split(":", 1)[1])
        except ValueError as exc:
            raise DeviceError(f"cannot read the CUDA device index in {spec!r}; use e.g. 'cuda:0'") from exc
        count = torch.cuda.device_count()
        if not 0 <= index < count:
            raise DeviceError(f"device {spec!r} does not exist: {count} CUDA device(s) present ({present})")
        return torch.device("cuda", index)
    raise DeviceError(
        f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (present: {present})"
    )


def prefers_channels_last(device: torch.device) -> bool:
    """Whether 2-D convolutions on ``device`` run faster in the channels-last memory layout.

    True on CUDA and on a CPU whose torch build has oneDNN (the x86 and ARM builds of PyPI).
    On the CPU the layout cut a denoiser's time per megapixel by a third to a half here, and
    a training step's by a fifth (``benchmarks/cpu_time.py`` measures the first); the
    results are the same up to float rounding. Apple MPS keeps the default layout.
    """
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available())
    return False


def use_fast_layout(model: torch.nn.Module, device: torch.device) -> bool:
    """Put the 4-D weights of ``model`` in channels-last layout where that is faster.

    Only the memory layout changes (in place): values, results up to float rounding, and saved
    files (:func:`~napari_addunet.save_model` writes contiguous tensors) stay the same.

    Returns
    -------
    bool
        Whether the layout is channels-last now, so that inputs should be made so too.
    """
    if not prefers_channels_last(device):
        return False
    if any(p.dim() == 5 for p in model.parameters()):
        return False  # volumetric layers would need channels_last_3d
    model.to(memory_format=torch.channels_last)
    return True
