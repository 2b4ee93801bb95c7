import sys

from napari_xrd.cli import main

sys.exit(main())
