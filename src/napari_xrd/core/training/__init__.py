"""Training loops and training-data generators for napari-xrd models."""
