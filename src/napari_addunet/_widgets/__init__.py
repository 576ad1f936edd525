"""The napari dock widgets: thin Qt shells over the engine, sharing one session per viewer.

Loaded by napari only when a widget is opened (see ``napari.yaml``); nothing here is
imported by ``import napari_addunet``.
"""
