"""Pure core of napari-xrd: I/O, geometry, simulation, models, training.

Nothing under ``napari_xrd.core`` may import Qt (qtpy) or napari; the test
``tests/test_architecture.py`` enforces this.
"""
