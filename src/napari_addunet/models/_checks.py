"""Cross-field checks shared by several architecture configs."""

from __future__ import annotations

from .config import ConfigError, ModelConfig

#: Largest number of channels allowed at the deepest level of a width-doubling network.
MAX_DEEP_WIDTH = 4096


def check_same_channels(cfg: ModelConfig, reason: str, fix: str) -> None:
    """Raise :class:`ConfigError` unless the output has as many channels as the input.

    Parameters
    ----------
    cfg
        The configuration to check.
    reason
        What needs equal channels, e.g. ``"global_residual"``; it names the field in the message.
    fix
        How the user can resolve the conflict, appended to the message.
    """
    if cfg.output_channels != cfg.in_channels:
        raise ConfigError(
            f"{cfg.architecture}.{reason} needs out_channels == in_channels "
            f"(got in_channels={cfg.in_channels}, out_channels={cfg.output_channels}); {fix}"
        )


def check_deep_width(cfg: ModelConfig, base_width: int, depth: int) -> None:
    """Raise :class:`ConfigError` if ``base_width * 2**depth`` exceeds :data:`MAX_DEEP_WIDTH`."""
    deep = base_width * 2**depth
    if deep > MAX_DEEP_WIDTH:
        raise ConfigError(
            f"{cfg.architecture}.base_width * 2**depth (channels at the deepest level) must be "
            f"<= {MAX_DEEP_WIDTH}, got {base_width} * 2**{depth} = {deep}; lower base_width or depth"
        )
