"""The install itself: cheap imports, the npe2 manifest, entry points, metadata, the wheel."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

DIST = "napari-addunet"
PACKAGE = "napari_addunet"
ROOT = Path(__file__).resolve().parents[1]
ROOT_MANIFEST = ROOT / "napari.yaml"
PACKAGE_MANIFEST = ROOT / "src" / PACKAGE / "napari.yaml"

# Top-level modules that must not be imported by `import napari_addunet` or by the sample data.
HEAVY = ("torch", "napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")
QT_BINDINGS = {"pyqt5", "pyqt6", "pyside2", "pyside6", "pyqt5-qt5", "pyqt6-qt6"}


def _imported_after(code: str) -> set[str]:
    """Run ``code`` in a fresh interpreter and return the top-level names in sys.modules."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_pulls_no_torch_and_no_qt():
    loaded = _imported_after(f"import {PACKAGE}")
    assert PACKAGE in loaded
    assert not loaded.intersection(HEAVY), f"import {PACKAGE} imported {sorted(loaded.intersection(HEAVY))}"


def test_engine_modules_are_reachable_as_attributes_after_the_plain_import():
    code = (
        f"import {PACKAGE} as na\n"
        "assert na.engine.axes.infer_axes((30, 40)) == 'YX'\n"
        "assert callable(na.engine.readout.compare) and callable(na.engine.noise_estimate.estimate_sigma)\n"
        "assert na.models.addunet.AddUNet.__name__ == 'AddUNet'\n"
        "try:\n    na.engine.no_such_module\nexcept AttributeError as e:\n    assert 'no_such_module' in str(e)\n"
        "else:\n    raise SystemExit('no AttributeError')\n"
    )
    assert PACKAGE in _imported_after(code)
    assert not _imported_after(f"import {PACKAGE}\n{PACKAGE}.engine").intersection(HEAVY)  # the package alone


def test_sample_data_pulls_no_torch_and_no_qt():
    code = f"from {PACKAGE} import _sample_data as s\nassert len(s.noisy_2d() + s.noisy_3d()) == 4"
    loaded = _imported_after(code)
    assert not loaded.intersection(HEAVY), f"sample data imported {sorted(loaded.intersection(HEAVY))}"


def test_version_matches_metadata():
    package = importlib.import_module(PACKAGE)
    from napari_addunet._version import __version__

    assert md.version(DIST) == __version__
    if hasattr(package, "__version__"):
        assert package.__version__ == __version__


# --------------------------------------------------------------------------- the npe2 manifest
def test_manifest_file_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT_MANIFEST)
    assert manifest.name == DIST
    commands = manifest.contributions.commands or []
    assert commands, "the manifest contributes no command"
    for command in commands:
        assert command.id.startswith(f"{DIST}."), command.id


def test_manifest_python_names_resolve():
    """What `npe2 validate --imports` checks: every command points at a real callable."""
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT_MANIFEST)
    for command in manifest.contributions.commands or []:
        assert command.python_name, f"{command.id} has no python_name"
        module_name, _, attribute = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module_name), attribute)), command.python_name


def test_manifest_sample_data_refer_to_commands():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT_MANIFEST)
    command_ids = {c.id for c in manifest.contributions.commands or []}
    samples = manifest.contributions.sample_data or []
    assert {s.key for s in samples} >= {"noisy_2d", "noisy_3d"}
    for sample in samples:
        assert sample.command in command_ids, sample.key


def test_manifest_symlink_in_source_tree():
    assert PACKAGE_MANIFEST.is_symlink(), f"{PACKAGE_MANIFEST.relative_to(ROOT)} must be a symlink"
    assert Path(PACKAGE_MANIFEST.readlink()).as_posix() == "../../napari.yaml"
    assert PACKAGE_MANIFEST.resolve() == ROOT_MANIFEST.resolve()


def test_installed_manifest_is_found_through_entry_point():
    from npe2 import PluginManifest

    (entry,) = [ep for ep in md.entry_points(group="napari.manifest") if ep.name == DIST]
    assert entry.value == f"{PACKAGE}:napari.yaml"
    assert entry.dist is not None and entry.dist.name == DIST

    manifest = PluginManifest.from_distribution(DIST)
    assert manifest.name == DIST
    assert manifest.model_dump(exclude={"package_metadata"}) == PluginManifest.from_file(
        ROOT_MANIFEST
    ).model_dump(exclude={"package_metadata"})


def test_npe2_validate_command():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", DIST, "--imports"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


# --------------------------------------------------------------------------- metadata
def test_console_script_entry_point():
    (entry,) = [ep for ep in md.entry_points(group="console_scripts") if ep.name == DIST]
    assert entry.value == f"{PACKAGE}.cli:main"


def test_metadata_classifiers_and_licence():
    meta = md.metadata(DIST)
    classifiers = meta.get_all("Classifier") or []
    assert "Framework :: napari" in classifiers
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta["Requires-Python"] == ">=3.10"


def test_runtime_dependencies_are_ranges_without_qt_or_napari():
    requirements = [Requirement(line) for line in md.requires(DIST) or []]
    runtime = [r for r in requirements if r.marker is None]
    names = {r.name.lower() for r in runtime}
    assert {"torch", "numpy", "scikit-image", "magicgui", "qtpy", "npe2", "safetensors"} <= names
    assert {"tifffile", "dask", "zarr", "tqdm"} <= names
    assert not names & QT_BINDINGS, f"runtime dependencies name a Qt binding: {names & QT_BINDINGS}"
    assert "napari" not in names, "napari must not be a runtime dependency"
    for requirement in runtime:
        operators = {spec.operator for spec in requirement.specifier}
        assert operators, f"{requirement} has no version range"
        assert not operators & {"==", "==="}, f"{requirement} is pinned"


def test_every_package_the_source_imports_is_a_dependency():
    """Imports of the package's modules, checked against what it declares (napari comes from
    the host application, or the napari extra)."""
    import ast
    import sys

    declared = {Requirement(line).name.lower() for line in md.requires(DIST) or []}
    providers = md.packages_distributions()
    missing = {}
    for path in (ROOT / "src" / "napari_addunet").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "napari_addunet":
                    continue
                dists = {d.lower() for d in providers.get(top, [top])}
                if not dists & declared:
                    missing[top] = path.name
    assert missing == {}, f"imported but not declared: {missing}"


def test_extras():
    requirements = [Requirement(line) for line in md.requires(DIST) or []]

    def extra(name: str) -> set[str]:
        return {r.name.lower() for r in requirements if r.marker and r.marker.evaluate({"extra": name})}

    assert {"napari", "pyqt5", "pytest", "pytest-qt", "hypothesis"} <= extra("testing")
    assert {"napari", "pyqt5"} <= extra("napari")
    assert {"bm3d"} <= extra("benchmarks")


# --------------------------------------------------------------------------- the built wheel
@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling installed")
    out = tmp_path_factory.mktemp("wheel")
    command = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(repo_root)]
    subprocess.run(
        [sys.executable, "-m", *command],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (built,) = out.glob("napari_addunet-*.whl")
    return built


def test_wheel_carries_manifest_and_entry_points(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        manifest = f"{PACKAGE}/napari.yaml"
        assert manifest in names
        info = archive.getinfo(manifest)
        assert (info.external_attr >> 16) & 0o170000 != 0o120000, "the manifest is stored as a symlink"
        assert archive.read(manifest) == ROOT_MANIFEST.read_bytes()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert "[napari.manifest]" in entry_points
    assert f"{DIST} = {PACKAGE}:napari.yaml" in entry_points
    assert f"{DIST} = {PACKAGE}.cli:main" in entry_points
    assert not any(n.startswith(("tests/", "src/")) for n in names)


def test_wheel_marks_the_package_as_typed(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:  # PEP 561: type checkers read the package's hints
        assert f"{PACKAGE}/py.typed" in archive.namelist()


def test_wheel_carries_every_bundled_model_and_no_dataset(wheel: Path, repo_root: Path):
    weights = sorted(p.name for p in (repo_root / "src" / PACKAGE / "weights").glob("*.safetensors"))
    assert "addunet-gray-blind.safetensors" in weights
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(f"{PACKAGE}/weights/"))
        assert shipped == weights
        for name in weights:
            source = (repo_root / "src" / PACKAGE / "weights" / name).read_bytes()
            assert archive.read(f"{PACKAGE}/weights/{name}") == source
    # the training and test images are never shipped (their licences do not allow it)
    lowered = [n.lower() for n in names]
    assert not [
        n for n in lowered if any(k in n for k in ("train400", "bsd68", "set12", "idx3-ubyte", "idx1-ubyte"))
    ]
    assert not [n for n in lowered if n.endswith((".png", ".jpg", ".tif", ".tiff", ".gz"))]
