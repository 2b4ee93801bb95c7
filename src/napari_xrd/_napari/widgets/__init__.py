"""Dock widgets of napari-xrd; each module holds one widget."""
