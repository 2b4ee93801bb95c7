"""Training loops for napari-xrd models."""
