"""Screenshots of each dock widget in a real napari viewer, for the documentation.

Run it under a display (on a headless machine, through Xvfb)::

    xvfb-run -a -s "-screen 0 1280x1024x24" python scripts/screenshots.py

It opens the sample data, uses each widget as a person would (through the same methods the
buttons call), waits for the work to finish, and writes ``docs/images/<widget>.png`` with
``viewer.screenshot(canvas_only=False)``: the whole window, canvas and dock included.
Nothing is drawn or mocked up by hand.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-addunet"


def _settle(seconds: float = 0.5) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def _wait(condition, timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the widget did not finish in time")
        QApplication.processEvents()
        time.sleep(0.01)


def _close_toasts() -> None:
    """Close napari's pop-up notifications (e.g. about the Qt binding) so they do not cover the canvas."""
    from qtpy.QtWidgets import QApplication, QWidget

    for top in QApplication.topLevelWidgets():
        for child in [top, *top.findChildren(QWidget)]:
            if type(child).__name__ == "NapariQtNotification":
                child.close()


def _shot(viewer, path: Path) -> None:
    _settle(0.5)
    _close_toasts()
    viewer.reset_view()
    _settle(1.0)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--train-steps", type=int, default=20, help="steps per epoch of the Train screenshot")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import napari

    viewer = napari.Viewer(title="napari-addunet", show=True)
    viewer.window.resize(1280, 960)
    viewer.open_sample(PLUGIN, "noisy_2d")

    # -- Denoise & classify: the bundled model on the noisy camera image
    dock, denoise = viewer.window.add_plugin_dock_widget(PLUGIN, "Denoise & classify")
    denoise.load_model("addunet-gray-blind")
    denoise.layer_combo.set_layer("camera [noisy]")
    denoise.residual_check.setChecked(True)
    denoise.run()
    _wait(lambda: not denoise.runner.running)
    viewer.layers["camera [noisy] [residual]"].visible = False
    viewer.layers["camera [clean]"].visible = False
    _shot(viewer, args.out / "denoise.png")

    # -- Readout: PSNR of the result against the clean image
    viewer.window.remove_dock_widget(dock)
    dock, readout = viewer.window.add_plugin_dock_widget(PLUGIN, "Readout")
    readout.layer_combo.set_layer("camera [noisy] [denoised]")
    readout.reference_combo.set_layer("camera [clean]")
    readout.compare()
    _wait(lambda: not readout.runner.running)
    _shot(viewer, args.out / "readout.png")

    # -- Skip gates: the shallowest gate turned down, the preview over the noisy image, a sweep
    viewer.window.remove_dock_widget(dock)
    viewer.layers["camera [noisy] [denoised]"].visible = False
    dock, gates = viewer.window.add_plugin_dock_widget(PLUGIN, "Skip gates")
    gates.layer_combo.set_layer("camera [noisy]")
    gates.request_preview()
    _wait(lambda: gates.preview_layer is not None and not gates.preview_busy)
    gates.sliders[0].setValue(0.25 * gates.sliders[0].value())
    _wait(lambda: not gates.preview_busy)
    gates.reference_combo.set_layer("camera [clean]")
    gates.sweep_steps.setValue(9)
    gates.sweep()
    _wait(lambda: not gates.sweep_runner.running)
    _shot(viewer, args.out / "gates.png")

    # -- Train: a short Noise2Void run on the noisy 3D stack (a few epochs, for the plots)
    viewer.window.remove_dock_widget(dock)
    viewer.layers.clear()
    viewer.open_sample(PLUGIN, "noisy_3d")
    dock, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    train.kind_combo.setCurrentIndex(train.kind_combo.findData("noisy"))
    train.table.set_row("stack [noisy]")
    train.arch_form.set_values(width=16, kernels=(5, 3, 3, 1))
    train.train_form.set_values(epochs=4, steps_per_epoch=args.train_steps, batch_size=8, patch_size=48)
    train.more_form.set_values(val_patches=16, warmup_steps=5)
    train.start()
    _wait(lambda: not train.runner.running)
    _shot(viewer, args.out / "train.png")

    viewer.close()


if __name__ == "__main__":
    main()
