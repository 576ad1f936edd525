"""Importing this module registers every architecture."""

from . import (
    addunet,  # noqa: F401
    attention_unet,  # noqa: F401
    autoencoder,  # noqa: F401
    dncnn,  # noqa: F401
    rescnn,  # noqa: F401
    resunet,  # noqa: F401
    unet,  # noqa: F401
    unetpp,  # noqa: F401
)
