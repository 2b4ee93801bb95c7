"""Neural networks of napari-xrd and the one weights loader (:mod:`.weights`)."""
