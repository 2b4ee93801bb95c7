"""Do spots lie on this frame's crystal lattice?  Bragg spots do; ice grains only by chance.

The spots away from every ice line are (nearly all) the crystal's: indexed
without a known cell (:func:`~napari_xrd.core.beam_center.indexing.index_reciprocal_lattice`,
the stills model: each spot's scattering vector on the Ewald sphere), they
give a reciprocal lattice.  A spot near an ice line that falls on it is very
likely a Bragg spot.  How likely is measured on the frame itself: the
fraction of the reference spots that the lattice indexes, against the
fraction indexed by chance, from the same spots turned about the beam by
random angles (same resolutions, random places).  On a frame that does not
index (too few spots, rotation frames whose spots are far from the still's
Ewald sphere, a beam centre far off) the two fractions are alike and the
test says nothing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lattice_membership"]


def lattice_membership(
    positions,
    geometry,
    reference,
    *,
    tolerance: float = 0.2,
    test_tolerance: float = 0.1,
    min_reference: int = 20,
    max_reference: int = 600,
    n_shuffles: int = 8,
    seed: int = 0,
):
    """Which spots the lattice of the ``reference`` spots indexes, and how often Bragg spots and chance do.

    Parameters
    ----------
    positions : (n, 2) array_like
        Spot centroids ``(fast, slow)``, pixels (DIALS corner convention).
    geometry : DetectorGeometry
    reference : (n,) bool array_like
        The spots to index from (those away from the ice lines).
    tolerance : float
        Indexing tolerance of the reference spots (lattice coordinates
        within this of integers).
    test_tolerance : float
        A spot lies on the lattice when its three lattice coordinates are
        within this of integers (tighter: fewer grains on it by chance).
    min_reference : int
        Fewest reference spots to index from.
    max_reference : int
        Index from at most this many of them (a random choice; indexing
        time grows with their number, its answer hardly does).
    n_shuffles : int
        Random turns of the reference spots about the beam for the chance
        rate.
    seed : int
        Seed of those turns (the result is reproducible).

    Returns
    -------
    indexed : (n,) bool ndarray or None
        None where the reference spots give no lattice.
    rate_bragg : float
        Fraction of the reference spots indexed.
    rate_chance : float
        Fraction of the turned reference spots indexed.
    """
    from napari_xrd.core.beam_center.indexing import _transform, index_reciprocal_lattice

    xy = np.asarray(positions, dtype=float).reshape(-1, 2)
    ref = np.asarray(reference, dtype=bool) & np.all(np.isfinite(xy), axis=1)
    if ref.sum() < min_reference:
        return None, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    r = geometry.scattering_vectors(xy[:, 0], xy[:, 1])
    used = np.flatnonzero(ref)
    if len(used) > max_reference:
        used = np.sort(rng.choice(used, max_reference, replace=False))
    basis, _, _ = index_reciprocal_lattice(r[used], tolerance=tolerance)
    if basis is None:
        return None, float("nan"), float("nan")
    phase = np.angle(_transform(basis, r[used])) / (2 * np.pi)

    def on_lattice(vectors):
        x = basis @ vectors.T - phase[:, None]
        return np.all(np.abs(x - np.round(x)) < test_tolerance, axis=0)

    indexed = on_lattice(r)
    indexed[~np.all(np.isfinite(xy), axis=1)] = False
    # chance: the reference spots turned about the beam centre (same radius, so nearly the same resolution)
    bx, by = geometry.beam_center
    dx, dy = xy[ref, 0] - bx, xy[ref, 1] - by
    hits = []
    for _ in range(n_shuffles):
        a = rng.uniform(0.0, 2.0 * np.pi, len(dx))
        fx, fy = bx + dx * np.cos(a) - dy * np.sin(a), by + dx * np.sin(a) + dy * np.cos(a)
        hits.append(on_lattice(geometry.scattering_vectors(fx, fy)))
    return indexed, float(indexed[ref].mean()), float(np.mean(hits))
