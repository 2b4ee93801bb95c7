"""The one detector-geometry model of napari-xrd.

Every other part of the package (readers, simulator, spot finder, beam-centre
estimators, widgets) describes a detector with :class:`DetectorGeometry` and
asks it for per-pixel resolution, ring positions and polar resampling.

Conventions
-----------
Pixel coordinates
    ``(fast, slow)`` in pixels, DIALS/dxtbx style: the origin is the outer
    corner of the first pixel, so the centre of pixel ``[slow=i, fast=j]`` of
    a NumPy image is at ``(fast, slow) = (j + 0.5, i + 0.5)``.  Conversion to
    napari's ``(row, col)`` with pixel centres on integers lives in
    :mod:`napari_xrd.core.coords` and nowhere else.
Laboratory frame
    The sample is at the origin and the X-ray beam travels along ``+z``.  An
    untilted detector lies in the plane ``z = distance`` with its fast axis
    along ``+x`` and its slow axis along ``+y`` (right-handed: ``x × y = z``).
Beam centre
    The point where the direct beam meets the detector plane, in pixels
    ``(fast, slow)``.  ``beam_center_mm`` is the same point in mm from the
    corner of the first pixel.
Distance
    Sample to beam centre along the beam, in mm.  For an untilted detector it
    equals the perpendicular sample-detector distance that headers record;
    :attr:`DetectorGeometry.perpendicular_distance` gives the latter on a
    tilted detector.  Tilting rotates the detector about the beam centre, so
    beam centre and distance do not change with tilt.
Tilt
    ``pitch`` is a right-handed rotation of the detector about its fast axis
    (lab ``+x``), ``yaw`` a right-handed rotation about its slow axis (lab
    ``+y``), both in degrees.  The detector's orientation matrix is
    ``R = R_x(pitch) @ R_y(yaw)``; its fast axis is ``R @ x``, slow axis
    ``R @ y`` and normal ``R @ z``.  A positive pitch moves the part of the
    detector at larger slow coordinates away from the sample (``R_x`` turns
    ``+y`` towards ``+z``); a positive yaw brings the part at larger fast
    coordinates nearer (``R_y`` turns ``+x`` towards ``-z``).
    ``tilt_deg`` is the angle between the beam and the detector normal and
    ``tilt_direction_deg`` the direction on the detector, ``atan2(slow,
    fast)`` from the beam centre, towards which the detector surface comes
    nearest to the sample.
Angles
    ``two_theta`` is the scattering angle, ``azimuth`` the angle of the
    scattered ray about the beam, ``atan2(y, x)`` in the lab frame (for an
    untilted detector: ``atan2(slow - slow0, fast - fast0)``), both returned
    in radians by the array methods.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DetectorGeometry",
    "rotation_matrix",
    "d_spacing_from_two_theta",
    "two_theta_from_d_spacing",
    "ray_direction",
    "still_ray",
    "lattice_points_near_sphere",
]


def rotation_matrix(pitch_deg: float, yaw_deg: float) -> np.ndarray:
    """Detector orientation ``R = R_x(pitch) @ R_y(yaw)``.

    Parameters
    ----------
    pitch_deg, yaw_deg : float
        Rotations about the lab x (detector fast) and y (detector slow)
        axes, in degrees, right-handed.

    Returns
    -------
    R : (3, 3) ndarray
        Columns are the detector's fast axis, slow axis and normal in the lab
        frame.
    """
    p = math.radians(pitch_deg)
    y = math.radians(yaw_deg)
    rx = np.array(
        [[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]]
    )
    ry = np.array(
        [[math.cos(y), 0.0, math.sin(y)], [0.0, 1.0, 0.0], [-math.sin(y), 0.0, math.cos(y)]]
    )
    return rx @ ry


def two_theta_from_d_spacing(d_spacing, wavelength: float):
    """Bragg's law: scattering angle 2θ (radians) for d-spacing(s) in Å.

    Returns NaN where ``wavelength / (2 d) > 1`` (not reachable).
    """
    d = np.asarray(d_spacing, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = wavelength / (2.0 * d)
        out = np.where(np.abs(s) <= 1.0, 2.0 * np.arcsin(np.clip(s, -1, 1)), np.nan)
    return out if out.ndim else float(out)


def d_spacing_from_two_theta(two_theta, wavelength: float):
    """Bragg's law: d-spacing (Å) for scattering angle(s) 2θ in radians.

    Returns ``inf`` at 2θ = 0.
    """
    tt = np.asarray(two_theta, dtype=float)
    with np.errstate(divide="ignore"):
        out = wavelength / (2.0 * np.sin(tt / 2.0))
    return out if out.ndim else float(out)


def ray_direction(two_theta, azimuth) -> np.ndarray:
    """Unit vectors (lab frame) of scattered rays at 2θ and azimuth (radians).

    Returns
    -------
    ray : ndarray, shape ``broadcast(two_theta, azimuth).shape + (3,)``
    """
    st = np.sin(two_theta)
    return np.stack([st * np.cos(azimuth), st * np.sin(azimuth), np.cos(two_theta)], axis=-1)


def still_ray(r, wavelength: float):
    """Where a reciprocal-lattice point diffracts in a still (the stills model of DIALS).

    The point ``r`` (Å⁻¹, lab frame, no 2π), which may lie off the Ewald
    sphere, is turned onto it about the axis normal to ``r`` and the beam:
    it keeps its length and azimuth, so it diffracts at
    ``2θ = 2 asin(λ|r|/2)`` and ``φ = atan2(r_y, r_x)``.

    Parameters
    ----------
    r : (..., 3) array_like
    wavelength : float
        Å.

    Returns
    -------
    two_theta, azimuth : ndarray, shape ``r.shape[:-1]``
        Radians.
    ray : ndarray, shape ``r.shape``
        Unit vectors of the diffracted rays.
    """
    r = np.asarray(r, dtype=float)
    two_theta = 2.0 * np.arcsin(np.clip(wavelength * np.linalg.norm(r, axis=-1) / 2.0, 0.0, 1.0))
    azimuth = np.arctan2(r[..., 1], r[..., 0])
    return two_theta, azimuth, ray_direction(two_theta, azimuth)


def lattice_points_near_sphere(ub, wavelength: float, *, r_max: float, half_width: float, offset=None):
    """Reciprocal-lattice points within ``half_width`` of the Ewald sphere, up to ``|r| = r_max``.

    Enumerates lattice rows along the shortest reciprocal axis and solves
    where each row crosses the shell ``1/λ ± half_width``, so the cost grows
    with the number of points near the sphere, not with the whole lattice.

    Parameters
    ----------
    ub : (3, 3) array_like
        ``U @ B`` (Å⁻¹): integer indices to lab-frame reciprocal vectors.
    wavelength : float
        Å.
    r_max : float
        Largest ``|r|`` (Å⁻¹), ``1 / d_min``.
    half_width : float
        Half-width of the shell about the sphere, Å⁻¹.
    offset : (3,) array_like, optional
        Points at ``ub @ (hkl + offset)``: a lattice translated by a
        fraction of a cell (an indexing solution's phase with a beam
        centre a little off).

    Returns
    -------
    hkl : (n, 3) int64 ndarray
    r : (n, 3) ndarray
        The points (Å⁻¹, lab frame), ``0 < |r| <= r_max``.
    """
    ub = np.asarray(ub, dtype=float)
    radius = 1.0 / wavelength
    s0 = np.array([0.0, 0.0, radius])
    shift = np.zeros(3) if offset is None else np.asarray(offset, dtype=float)
    real = np.linalg.inv(ub)  # rows: real-space axes (h_i = a_i . r)
    limits = np.floor(np.linalg.norm(real, axis=1) * r_max).astype(int) + (0 if offset is None else 1)
    j = int(np.argmin(np.linalg.norm(ub, axis=0)))  # densest row direction
    p_ax, q_ax = [i for i in range(3) if i != j]
    pp, qq = np.meshgrid(
        np.arange(-limits[p_ax], limits[p_ax] + 1), np.arange(-limits[q_ax], limits[q_ax] + 1), indexing="ij"
    )
    pp, qq = pp.ravel(), qq.ravel()
    w = ub[:, j]
    if offset is None:
        origin = s0[None, :] + pp[:, None] * ub[:, p_ax] + qq[:, None] * ub[:, q_ax]
    else:
        origin = (s0 + shift[j] * w)[None, :] + (pp + shift[p_ax])[:, None] * ub[:, p_ax] + (
            qq + shift[q_ax])[:, None] * ub[:, q_ax]
    a = float(w @ w)
    b = origin @ w
    c = np.einsum("ij,ij->i", origin, origin)

    def roots(rho):
        disc = b * b - a * (c - rho * rho)
        sq = np.sqrt(np.maximum(disc, 0.0))
        return disc > 0, (-b - sq) / a, (-b + sq) / a

    ok_o, lo_o, hi_o = roots(radius + half_width)
    ok_i, lo_i, hi_i = roots(max(radius - half_width, 0.0))
    # segments of the row inside the shell: [lo_o, lo_i] and [hi_i, hi_o] (or all of [lo_o, hi_o])
    seg_lo = np.concatenate([lo_o, hi_i])
    seg_hi = np.concatenate([np.where(ok_i, lo_i, hi_o), hi_o])
    valid = np.concatenate([ok_o, ok_o & ok_i])
    start = np.ceil(seg_lo).astype(np.int64)
    count = np.where(valid, np.floor(seg_hi).astype(np.int64) - start + 1, 0).clip(min=0)
    total = int(count.sum())
    row = np.repeat(np.arange(len(count)), count)
    offs = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    t = start[row] + offs
    pair = row % len(pp)
    hkl = np.empty((total, 3), dtype=np.int64)
    hkl[:, p_ax] = pp[pair]
    hkl[:, q_ax] = qq[pair]
    hkl[:, j] = t
    r = hkl @ ub.T if offset is None else (hkl + shift) @ ub.T
    r_len = np.linalg.norm(r, axis=1)
    keep = (r_len > 0) & (r_len <= r_max)
    return hkl[keep], r[keep]


@dataclass(frozen=True)
class DetectorGeometry:
    """A flat detector seen from the sample.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(n_slow, n_fast)`` in pixels (NumPy order).
    pixel_size : float
        Pixel edge length in mm (square pixels).
    distance : float
        Sample to beam-centre distance along the beam, in mm.
    beam_center : tuple of float
        ``(fast, slow)`` in pixels, origin at the outer corner of the first
        pixel (first pixel's centre is ``(0.5, 0.5)``).
    wavelength : float
        X-ray wavelength in Å.
    pitch, yaw : float
        Detector rotations about its fast and slow axes in degrees (see the
        module docstring for the sign convention).
    name : str
        Detector model name, informative only.

    Examples
    --------
    >>> g = DetectorGeometry((100, 100), 0.1, 100.0, (50.0, 50.0), 1.0)
    >>> round(g.resolution_at(50.0, 90.0), 3)   # 4 mm from the centre
    25.015
    """

    shape: tuple[int, int]
    pixel_size: float
    distance: float
    beam_center: tuple[float, float]
    wavelength: float
    pitch: float = 0.0
    yaw: float = 0.0
    name: str = field(default="", compare=False)

    def __post_init__(self):
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (n_slow, n_fast) with positive sizes, got {self.shape}")
        object.__setattr__(self, "shape", shape)
        bc = tuple(float(v) for v in self.beam_center)
        if len(bc) != 2:
            raise ValueError(f"beam_center must be (fast, slow), got {self.beam_center}")
        object.__setattr__(self, "beam_center", bc)
        for name in ("pixel_size", "distance", "wavelength"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
            object.__setattr__(self, name, value)
        for name in ("pitch", "yaw"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or abs(value) >= 60:
                raise ValueError(f"{name} must be a finite angle below 60 degrees, got {value!r}")
            object.__setattr__(self, name, value)
        if not all(math.isfinite(v) for v in bc):
            raise ValueError(f"beam_center must be finite, got {bc}")

    # ------------------------------------------------------------------ basics
    def replace(self, **changes) -> DetectorGeometry:
        """Copy with some fields changed (e.g. ``beam_center=(x, y)``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-friendly dict; see :meth:`from_dict` for the inverse."""
        return {
            "shape": list(self.shape),
            "pixel_size_mm": self.pixel_size,
            "distance_mm": self.distance,
            "beam_center_px": list(self.beam_center),
            "beam_center_mm": list(self.beam_center_mm),
            "wavelength_A": self.wavelength,
            "pitch_deg": self.pitch,
            "yaw_deg": self.yaw,
            "tilt_deg": self.tilt_deg,
            "tilt_direction_deg": self.tilt_direction_deg,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, d: dict) -> DetectorGeometry:
        return cls(
            shape=tuple(d["shape"]),
            pixel_size=d["pixel_size_mm"],
            distance=d["distance_mm"],
            beam_center=tuple(d["beam_center_px"]),
            wavelength=d["wavelength_A"],
            pitch=d.get("pitch_deg", 0.0),
            yaw=d.get("yaw_deg", 0.0),
            name=d.get("name", ""),
        )

    @property
    def beam_center_mm(self) -> tuple[float, float]:
        """Beam centre ``(fast, slow)`` in mm from the corner of the first pixel."""
        return (self.beam_center[0] * self.pixel_size, self.beam_center[1] * self.pixel_size)

    @property
    def rotation(self) -> np.ndarray:
        """Orientation matrix ``R`` (columns: fast axis, slow axis, normal)."""
        return rotation_matrix(self.pitch, self.yaw)

    @property
    def normal(self) -> np.ndarray:
        return self.rotation[:, 2]

    @property
    def tilt_deg(self) -> float:
        """Angle between the beam and the detector normal, degrees."""
        return math.degrees(math.acos(min(1.0, abs(float(self.normal[2])))))

    @property
    def tilt_direction_deg(self) -> float:
        """Direction ``atan2(slow, fast)`` (degrees) of the detector part nearest the sample.

        0 when the detector is untilted.
        """
        r = self.rotation
        a, b = -r[2, 0], -r[2, 1]
        if math.hypot(a, b) < 1e-12:
            return 0.0
        return math.degrees(math.atan2(b, a))

    @property
    def perpendicular_distance(self) -> float:
        """Distance from the sample to the detector plane along its normal, mm."""
        return self.distance * abs(float(self.normal[2]))

    # ------------------------------------------------------------- per point
    def lab_coordinates(self, fast, slow) -> np.ndarray:
        """Lab-frame position (mm) of detector points.

        Parameters
        ----------
        fast, slow : array_like
            Pixel coordinates in the corner convention (broadcastable).

        Returns
        -------
        xyz : ndarray, shape ``broadcast(fast, slow).shape + (3,)``
        """
        return np.stack(np.broadcast_arrays(*self._lab_xyz(fast, slow)), axis=-1)

    def _lab_xyz(self, fast, slow, dtype=float):
        """``x, y, z`` (mm) of detector points as separate broadcast arrays, computed in ``dtype``."""
        t = np.dtype(dtype).type
        u = (np.asarray(fast, dtype=t) - t(self.beam_center[0])) * t(self.pixel_size)
        v = (np.asarray(slow, dtype=t) - t(self.beam_center[1])) * t(self.pixel_size)
        r = self.rotation.astype(t)
        x = r[0, 0] * u + r[0, 1] * v
        y = r[1, 0] * u + r[1, 1] * v
        z = t(self.distance) + r[2, 0] * u + r[2, 1] * v
        return x, y, z

    def two_theta_at(self, fast, slow):
        """Scattering angle 2θ (radians) at detector point(s) ``(fast, slow)``."""
        xyz = self.lab_coordinates(fast, slow)
        rho = np.hypot(xyz[..., 0], xyz[..., 1])
        out = np.arctan2(rho, xyz[..., 2])
        return out if out.ndim else float(out)

    def resolution_at(self, fast, slow):
        """Resolution d (Å) at detector point(s) ``(fast, slow)``; ``inf`` at the centre."""
        return d_spacing_from_two_theta(self.two_theta_at(fast, slow), self.wavelength)

    def azimuth_at(self, fast, slow):
        """Azimuth (radians, ``atan2(y, x)`` in the lab) at detector point(s)."""
        xyz = self.lab_coordinates(fast, slow)
        out = np.arctan2(xyz[..., 1], xyz[..., 0])
        return out if out.ndim else float(out)

    def project(self, directions) -> np.ndarray:
        """Where rays from the sample along ``directions`` hit the detector.

        Parameters
        ----------
        directions : array_like, shape (..., 3)
            Ray directions in the lab frame (need not be unit vectors).

        Returns
        -------
        fast_slow : ndarray, shape (..., 2)
            ``(fast, slow)`` pixel coordinates (corner convention); NaN for
            rays that travel away from the detector plane.
        """
        k = np.asarray(directions, dtype=float)
        r = self.rotation
        n = r[:, 2]
        denom = k @ n
        origin = np.array([0.0, 0.0, self.distance])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (origin @ n) / denom
            t = np.where(denom > 1e-12, t, np.nan)
        p = k * t[..., None] - origin
        u = p @ r[:, 0]
        v = p @ r[:, 1]
        return np.stack(
            [u / self.pixel_size + self.beam_center[0], v / self.pixel_size + self.beam_center[1]],
            axis=-1,
        )

    def scattering_vectors(self, fast, slow) -> np.ndarray:
        """Scattering vectors ``r = (k̂ - ŝ0) / λ`` (Å⁻¹, lab frame, no 2π) of detector points.

        They lie on the Ewald sphere; :meth:`still_spot_positions` is the
        inverse for reciprocal-lattice points.

        Returns
        -------
        r : (n, 3) ndarray
        """
        xyz = self.lab_coordinates(fast, slow).reshape(-1, 3)
        k = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
        k[:, 2] -= 1.0
        return k / self.wavelength

    def still_spot_positions(self, r) -> np.ndarray:
        """Detector positions of reciprocal-lattice points ``r`` (n, 3) in a still (see :func:`still_ray`).

        Returns
        -------
        fast_slow : (n, 2) ndarray, NaN where the ray misses the detector plane
        """
        return self.project(still_ray(np.asarray(r, float).reshape(-1, 3), self.wavelength)[2])

    # -------------------------------------------------------------- per pixel
    def pixel_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Corner-convention coordinates of all pixel centres.

        Returns
        -------
        fast, slow : ndarray, shape (n_fast,) and (n_slow, 1)
            Broadcastable to the image shape.
        """
        n_slow, n_fast = self.shape
        return np.arange(n_fast) + 0.5, (np.arange(n_slow) + 0.5)[:, None]

    def two_theta_map(self) -> np.ndarray:
        """2θ (radians) at every pixel centre, shape ``(n_slow, n_fast)``."""
        return self.two_theta_at(*self.pixel_centers())

    def equivalent_radius_map(self, dtype=np.float32) -> np.ndarray:
        """``distance · tan 2θ / pixel_size`` at every pixel centre, shape ``(n_slow, n_fast)``.

        The distance from the beam centre, in pixels, at which each pixel's
        2θ lies on an untilted detector: constant along every powder ring,
        tilted detector or not, and about one pixel per pixel near the beam.
        Computed in ``dtype`` (float32 by default: a Pilatus 6M frame in
        about 0.1 s).
        """
        t = np.dtype(dtype).type
        fast, slow = self.pixel_centers()
        x, y, z = self._lab_xyz(fast, slow, dtype=t)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.hypot(x, y)  # then in place: fewer full-size arrays to allocate
            out /= z
            out *= t(self.distance / self.pixel_size)
        np.copyto(out, t(np.inf), where=~(z > 0))
        return out

    def d_spacing_map(self) -> np.ndarray:
        """Resolution d (Å) at every pixel centre, shape ``(n_slow, n_fast)``."""
        return d_spacing_from_two_theta(self.two_theta_map(), self.wavelength)

    def azimuth_map(self) -> np.ndarray:
        """Azimuth (radians) at every pixel centre, shape ``(n_slow, n_fast)``."""
        return self.azimuth_at(*self.pixel_centers())

    def solid_angle_map(self) -> np.ndarray:
        """Relative solid angle of each pixel (1 at normal incidence), shape ``(n_slow, n_fast)``.

        ``(D_perp / |r|)^3`` for a flat pixel at distance ``|r|``.
        """
        xyz = self.lab_coordinates(*self.pixel_centers())
        dist = np.linalg.norm(xyz, axis=-1)
        return (self.perpendicular_distance / dist) ** 3

    # -------------------------------------------------------------- rings
    def ring_points(self, d_spacing: float, n: int = 360) -> np.ndarray:
        """Points of the Debye-Scherrer ring of one d-spacing on the detector.

        Works on a tilted detector, where the ring is an ellipse (or a
        hyperbola/parabola branch at large 2θ, whose far part is dropped).

        Parameters
        ----------
        d_spacing : float
            Lattice spacing in Å.
        n : int
            Number of azimuths sampled uniformly in ``[0, 2π)``.

        Returns
        -------
        fast_slow : ndarray, shape (m, 2)
            Corner-convention pixel coordinates of the ring, ``m <= n``
            (points whose rays miss the detector plane are left out; points
            outside the image are kept).  Empty if the ring is unreachable.
        """
        tt = two_theta_from_d_spacing(d_spacing, self.wavelength)
        if not np.isfinite(tt):
            return np.empty((0, 2))
        phi = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        k = np.stack(
            [np.sin(tt) * np.cos(phi), np.sin(tt) * np.sin(phi), np.full_like(phi, np.cos(tt))],
            axis=-1,
        )
        pts = self.project(k)
        return pts[np.all(np.isfinite(pts), axis=1)]

    def radius_px_for_d(self, d_spacing: float) -> float:
        """Ring radius in pixels for an untilted detector (mean radius if tilted)."""
        pts = self.ring_points(d_spacing, n=64)
        if len(pts) == 0:
            return float("nan")
        return float(np.mean(np.hypot(pts[:, 0] - self.beam_center[0], pts[:, 1] - self.beam_center[1])))

    def d_range(self) -> tuple[float, float]:
        """(d_max, d_min) in Å over the image: lowest and highest resolution seen.

        ``d_max`` is ``inf`` when the beam centre is on the detector.
        """
        n_slow, n_fast = self.shape
        bf, bs = self.beam_center
        corners = np.array([[0, 0], [n_fast, 0], [0, n_slow], [n_fast, n_slow]], dtype=float)
        tt_max = float(np.max(self.two_theta_at(corners[:, 0], corners[:, 1])))
        # edges are sampled so that the maximum on a tilted detector is caught
        ef = np.linspace(0, n_fast, 257)
        es = np.linspace(0, n_slow, 257)
        tt_edges = np.concatenate(
            [
                self.two_theta_at(ef, 0.0 * ef),
                self.two_theta_at(ef, 0.0 * ef + n_slow),
                self.two_theta_at(0.0 * es, es),
                self.two_theta_at(0.0 * es + n_fast, es),
            ]
        )
        tt_max = max(tt_max, float(np.max(tt_edges)))
        if 0 <= bf <= n_fast and 0 <= bs <= n_slow:
            tt_min = 0.0
        else:
            tt_min = float(np.min(tt_edges))
        return (
            d_spacing_from_two_theta(tt_min, self.wavelength),
            d_spacing_from_two_theta(tt_max, self.wavelength),
        )

    # -------------------------------------------------------------- polar
    def polar_transform(
        self,
        image: np.ndarray,
        *,
        n_radial: int = 512,
        n_azimuth: int = 360,
        two_theta_range: tuple[float, float] | None = None,
        order: int = 1,
        cval: float = np.nan,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Resample an image onto a (2θ, azimuth) grid about the beam centre.

        Equal-2θ rows are circles only on an untilted detector; resampling in
        2θ keeps rings straight on a tilted one too.

        Parameters
        ----------
        image : (n_slow, n_fast) ndarray
            The detector image.
        n_radial, n_azimuth : int
            Output size.
        two_theta_range : (float, float), optional
            2θ limits in radians; default from 0 to the largest 2θ on the image.
        order : int
            Spline order for :func:`scipy.ndimage.map_coordinates`.
        cval : float
            Value for samples that fall outside the image.

        Returns
        -------
        polar : (n_azimuth, n_radial) ndarray
        two_theta : (n_radial,) ndarray
            Bin centres in radians.
        azimuth : (n_azimuth,) ndarray
            Bin centres in radians, in ``[-π, π)``.
        """
        from scipy.ndimage import map_coordinates

        image = np.asarray(image)
        if image.shape != self.shape:
            raise ValueError(f"image shape {image.shape} does not match geometry shape {self.shape}")
        if two_theta_range is None:
            d_max, d_min = self.d_range()
            two_theta_range = (0.0, float(two_theta_from_d_spacing(d_min, self.wavelength)))
        t0, t1 = two_theta_range
        tt = t0 + (np.arange(n_radial) + 0.5) * (t1 - t0) / n_radial
        az = -np.pi + (np.arange(n_azimuth) + 0.5) * 2 * np.pi / n_azimuth
        k = np.stack(
            [
                np.sin(tt)[None, :] * np.cos(az)[:, None],
                np.sin(tt)[None, :] * np.sin(az)[:, None],
                np.broadcast_to(np.cos(tt)[None, :], (n_azimuth, n_radial)),
            ],
            axis=-1,
        )
        fs = self.project(k)
        # corner convention -> array index (pixel centres on integers)
        rows = fs[..., 1] - 0.5
        cols = fs[..., 0] - 0.5
        bad = ~np.isfinite(rows) | ~np.isfinite(cols)
        rows = np.where(bad, -10.0, rows)
        cols = np.where(bad, -10.0, cols)
        data = np.nan_to_num(image.astype(np.float64, copy=False), nan=0.0)
        out = map_coordinates(data, [rows, cols], order=order, mode="constant", cval=np.nan)
        outside = bad | (rows < -0.5) | (cols < -0.5) | (rows > self.shape[0] - 0.5) | (cols > self.shape[1] - 0.5)
        out[outside] = cval
        return out, tt, az

    def radial_profile(
        self,
        image: np.ndarray,
        *,
        n_bins: int = 500,
        valid: np.ndarray | None = None,
        statistic: str = "mean",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Azimuthally averaged intensity against 2θ.

        Parameters
        ----------
        image : (n_slow, n_fast) ndarray
        n_bins : int
            Number of equal-width 2θ bins between 0 and the largest 2θ.
        valid : (n_slow, n_fast) bool ndarray, optional
            Pixels to use (default: all finite pixels).
        statistic : {"mean", "median"}

        Returns
        -------
        two_theta : (n_bins,) ndarray
            Bin centres, radians.
        profile : (n_bins,) ndarray
            NaN for empty bins.
        """
        image = np.asarray(image, dtype=np.float64)
        tt = self.two_theta_map()
        ok = np.isfinite(image)
        if valid is not None:
            ok &= valid
        edges = np.linspace(0.0, float(tt.max()) + 1e-12, n_bins + 1)
        idx = np.clip(np.digitize(tt[ok], edges) - 1, 0, n_bins - 1)
        vals = image[ok]
        if statistic == "mean":
            s = np.bincount(idx, weights=vals, minlength=n_bins)
            c = np.bincount(idx, minlength=n_bins)
            with np.errstate(invalid="ignore", divide="ignore"):
                prof = s / c
        elif statistic == "median":
            order = np.argsort(idx, kind="stable")
            idx_s, vals_s = idx[order], vals[order]
            bounds = np.searchsorted(idx_s, np.arange(n_bins + 1))
            prof = np.array(
                [np.median(vals_s[a:b]) if b > a else np.nan for a, b in zip(bounds[:-1], bounds[1:])]
            )
        else:
            raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
        return 0.5 * (edges[:-1] + edges[1:]), prof
