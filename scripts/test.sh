#!/usr/bin/env bash
# Set up (if needed) and run the whole napari-xrd test suite under a virtual display.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest "$@"
