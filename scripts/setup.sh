#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks to run napari-xrd and its tests.
# - system packages for Qt under a virtual display (xvfb and xcb libraries), via apt
# - CPU PyTorch pinned to torch==2.13.0 *before* anything that depends on torch,
#   so that pip never pulls several GB of CUDA wheels
# - the project itself, editable, with its test extras (napari + PyQt6, pytest-qt, pytest-xvfb)
# Idempotent: steps that are already done are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need_apt=()
command -v Xvfb >/dev/null 2>&1 || need_apt+=(xvfb)
for lib in libxcb-icccm.so.4 libxcb-keysyms.so.1 libxcb-xinerama.so.0 libxcb-image.so.0 libxcb-render-util.so.0 \
           libxcb-shape.so.0 libxkbcommon-x11.so.0 libxcb-cursor.so.0 libGL.so.1 libEGL.so.1 libfontconfig.so.1 libdbus-1.so.3; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || { need_apt+=(ALL); break; }
done
if [ ${#need_apt[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  echo "setup: installing system packages for a virtual display"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 \
    libxcb-image0 libxcb-render-util0 libxcb-shape0 libxkbcommon-x11-0 libxcb-cursor0 libgl1 libegl1 \
    libfontconfig1 libdbus-1-3 >/dev/null
fi

if ! $PY -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '2.13.0' else 1)" 2>/dev/null; then
  echo "setup: installing CPU PyTorch 2.13.0"
  $PY -m pip install -q "torch==2.13.0"
fi

echo "setup: installing napari-xrd with its test extras"
$PY -m pip install -q --disable-pip-version-check -e ".[testing]" 2>&1 | grep -v "Running pip as the 'root' user" || true
$PY -c "import napari_xrd, napari, pytestqt, pytest_xvfb, torch" \
  || { echo "setup: installation incomplete" >&2; exit 1; }
echo "setup: done"
