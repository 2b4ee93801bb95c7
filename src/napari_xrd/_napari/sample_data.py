"""npe2 sample data: the real ADSC lysozyme frame and a simulated Pilatus 6M still."""

from __future__ import annotations

from pathlib import Path

ADSC_SAMPLE = "adsc_q4_lysozyme_2002.img.bz2"


def sample_file(name: str) -> Path:
    """Path of a shipped sample file (wheel: napari_xrd/_sample_files; checkout: sample_data/)."""
    here = Path(__file__).resolve()
    for d in (here.parents[1] / "_sample_files", here.parents[3] / "sample_data"):
        if (d / name).exists():
            return d / name
    raise FileNotFoundError(f"sample file {name!r} is not installed with napari-xrd")


def adsc_lysozyme():
    """Real ADSC Quantum-4 frame of lysozyme (2002), with header geometry."""
    from napari_xrd._napari.layers import layer_data_from_image
    from napari_xrd.core.io import open_image

    return layer_data_from_image(open_image(sample_file(ADSC_SAMPLE)), ice_rings=False)


def simulated_pilatus():
    """Simulated Pilatus 6M still with its ground truth as layers."""
    import numpy as np

    from napari_xrd._napari.layers import layer_data_from_image
    from napari_xrd.core.coords import dials_to_napari
    from napari_xrd.core.io.types import DiffractionImage
    from napari_xrd.core.simulate import sample_pilatus_still

    sim = sample_pilatus_still(seed=0)
    image = DiffractionImage(
        data=np.asarray(sim.image)[None],
        geometry=sim.geometry,
        pixel_mask=sim.pixel_mask,
        path="simulated_pilatus6m.cbf",
        format="simulated",
        metadata={"generator": sim.parameters if hasattr(sim, "parameters") else {}},
    )
    layers = layer_data_from_image(image, name="simulated Pilatus 6M")
    xrd_id = layers[0][1]["metadata"]["xrd_id"]
    spots = sim.spots
    fields = spots.dtype.names if getattr(spots, "dtype", None) is not None and spots.dtype.names else tuple(spots)
    pts = dials_to_napari(np.stack([np.asarray(spots["fast"]), np.asarray(spots["slow"])], axis=1))
    layers.append(
        (
            np.asarray(sim.spot_mask, dtype=np.uint8),
            {"name": "true spot mask", "opacity": 0.6, "metadata": {"xrd_overlay_of": xrd_id, "xrd_overlay": "true_spot_mask"}},
            "labels",
        )
    )
    layers.append(
        (
            pts,
            {
                "name": "true spot centroids",
                "size": 6,
                "symbol": "ring",
                "face_color": "transparent",
                "border_color": "#39ff14",
                "visible": False,
                "features": {k: np.asarray(spots[k]) for k in ("d", "photons", "snr") if k in fields},
                "metadata": {"xrd_overlay_of": xrd_id, "xrd_overlay": "true_spots"},
            },
            "points",
        )
    )
    return layers
