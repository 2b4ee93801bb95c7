"""Architecture rules: a pure core, cheap imports, a valid manifest."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_xrd"
HEAVY = ("torch", "h5py", "fabio", "gemmi", "hdf5plugin", "pyFAI")


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module


@pytest.mark.parametrize("path", sorted((SRC / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_core_never_imports_qt_or_napari(path):
    for _, name in _imports(path):
        top = name.split(".")[0]
        assert top not in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui"), (
            f"{path.relative_to(SRC)} imports {name}: the core must stay free of Qt and napari"
        )


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_heavy_modules_are_not_imported_at_module_level(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:  # only top-level statements
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in HEAVY, f"{path.relative_to(SRC)} imports {name} at module level"


def test_importing_the_plugin_side_stays_cheap():
    code = (
        "import sys, napari_xrd, napari_xrd._napari.reader, napari_xrd.core.io, napari_xrd.cli;"
        "napari_xrd.cli.build_parser();"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"heavy modules imported at start-up: {out}"


def test_manifest_is_valid_and_points_at_real_code():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-xrd")
    pm.validate_imports()
    assert any(r.command == "napari-xrd.get_reader" for r in pm.contributions.readers)
    keys = {s.key for s in pm.contributions.sample_data}
    assert {"adsc_lysozyme", "simulated_pilatus"} <= keys


def test_npe2_validate_command():
    res = subprocess.run(["npe2", "validate", "napari-xrd"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
