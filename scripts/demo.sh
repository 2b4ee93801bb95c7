#!/usr/bin/env bash
# Set up (if needed) and open napari with napari-xrd, the real ADSC sample and the widgets docked.
# Arguments go to `napari-xrd demo`, e.g.  bash scripts/demo.sh --screenshot demo.png
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec napari-xrd demo "$@"
