"""Bouncing-ball videos (DSAE section 4.3, after Fraccaro et al. 2017): a ball in an irregular polygon.

Own exact physics instead of Pymunk: between frames the ball's centre moves on a straight line;
the ball (radius ``r``) touches edge i when the centre reaches the edge moved inwards by ``r``
(the polygon is convex, so the allowed centres are the intersection of those half-planes). At a
touch the velocity is reflected about the edge's normal, ``v' = v - 2 (v . n) n`` (a fully elastic
collision with an immovable wall: speed is kept exactly, no force, no friction, no gravity), and
the rest of the frame's time is spent on the new line. Collisions are found in continuous time,
so nothing tunnels and the ball never leaves the polygon. Coordinates are in pixels: x to the
right, y down, the frame is [0, 32] x [0, 32] and pixel (i, j) has its centre at (j + 0.5, i + 0.5).

A dataset is ``n`` sequences of ``T`` binary 32x32 frames (uint8 0/1, a pixel is on when its
centre lies within ``r`` of the ball's centre), the last ``n_test`` being the test split; every
sequence draws its start position (uniform over the allowed centres) and velocity (uniform
direction, speed uniform in ``speed``) from one seeded generator, so a seed gives the same data
on every machine. :func:`ensure_ball_dataset` caches it as one ``.npz`` written atomically.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dispart.errors import DataError
from dispart.files import atomic_write_with

__all__ = [
    "POLYGON", "BallConfig", "BallData", "edge_normals", "ensure_ball_dataset", "inside",
    "make_ball_dataset", "read_ball_dataset", "reflect", "render", "simulate",
]

# An irregular convex heptagon inside the 32x32 frame (pixels; x right, y down).
POLYGON: tuple[tuple[float, float], ...] = (
    (3.0, 6.0), (15.0, 1.5), (27.0, 4.0), (31.0, 17.0), (25.0, 29.0), (9.0, 30.5), (1.5, 19.0),
)
_EPS = 1e-9


@dataclass(frozen=True)
class BallConfig:
    """Everything that defines a ball dataset (the cache key hashes these fields).

    Attributes:
        n: number of sequences (train + test); n_test: the last ``n_test`` are the test split.
        T: frames per sequence. size: frame height = width (pixels). radius: ball radius (pixels).
        speed: (min, max) speed in pixels per frame. seed: the generator's seed.
        polygon: vertices of the convex walls (pixels).
    """

    n: int = 5000
    n_test: int = 1000
    T: int = 30
    size: int = 32
    radius: float = 3.0
    speed: tuple[float, float] = (1.0, 2.5)
    seed: int = 0
    polygon: tuple[tuple[float, float], ...] = POLYGON

    def __post_init__(self) -> None:
        if not (self.n >= 2 and 1 <= self.n_test < self.n):
            raise ValueError(f"BallConfig: need n >= 2 and 1 <= n_test < n, got n={self.n}, "
                             f"n_test={self.n_test}")
        if self.T < 1 or self.size < 4 or not self.radius > 0:
            raise ValueError(f"BallConfig: T >= 1, size >= 4, radius > 0 required, got T={self.T}, "
                             f"size={self.size}, radius={self.radius}")
        if not 0 < self.speed[0] <= self.speed[1]:
            raise ValueError(f"BallConfig: speed must be (min, max) with 0 < min <= max, got {self.speed}")
        edge_normals(np.asarray(self.polygon, dtype=np.float64), self.radius)  # convex, room for the ball

    def key(self) -> str:
        """Hex digest naming the cached file of this configuration."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class BallData:
    """A generated dataset. frames: (N, T, H, W) uint8 in {0, 1}; positions, velocities: (N, T, 2)
    float64 (pixels, pixels per frame) at each frame; the last ``config.n_test`` rows are test."""

    frames: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    config: BallConfig

    def split(self, name: str) -> slice:
        """Rows of split "train" or "test"."""
        n_train = self.config.n - self.config.n_test
        if name == "train":
            return slice(0, n_train)
        if name == "test":
            return slice(n_train, self.config.n)
        raise ValueError(f"BallData.split: unknown split {name!r}; choose 'train' or 'test'")


def edge_normals(polygon: np.ndarray, radius: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit normals n_i (E, 2) and offsets c_i (E,) such that a centre p is allowed iff
    n_i . p <= c_i for every edge (the edges moved inwards by ``radius``).

    Raises ValueError if the polygon is not strictly convex or leaves no room for the ball.
    """
    poly = np.asarray(polygon, dtype=np.float64)
    if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
        raise ValueError(f"polygon must be (E >= 3, 2) vertices, got shape {poly.shape}")
    d = np.roll(poly, -1, axis=0) - poly  # edge vectors a_i -> a_{i+1}
    cross = d[:, 0] * np.roll(d, -1, axis=0)[:, 1] - d[:, 1] * np.roll(d, -1, axis=0)[:, 0]
    if not (np.all(cross > 0) or np.all(cross < 0)):
        raise ValueError("polygon must be strictly convex (every turn in the same direction)")
    normals = np.stack([d[:, 1], -d[:, 0]], axis=1) / np.linalg.norm(d, axis=1, keepdims=True)
    centroid = poly.mean(axis=0)
    flip = np.einsum("ij,ij->i", normals, centroid - poly) > 0  # must point away from the inside
    normals[flip] *= -1
    offsets = np.einsum("ij,ij->i", normals, poly) - radius
    if np.any(normals @ centroid >= offsets):
        raise ValueError(f"polygon leaves no room for a ball of radius {radius}")
    return normals, offsets


def inside(points: np.ndarray, normals: np.ndarray, offsets: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """(..., 2) centres -> (...,) bool: within every (moved) edge, up to ``tol`` pixels."""
    return np.all(points @ normals.T <= offsets + tol, axis=-1)


def reflect(v: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Elastic reflection of velocities (..., 2) off walls with unit normals (..., 2)."""
    return v - 2.0 * np.sum(v * n, axis=-1, keepdims=True) * n


def simulate(p0: np.ndarray, v0: np.ndarray, steps: int, polygon: np.ndarray, radius: float,
             max_bounces: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Exact event-driven motion of N balls for ``steps`` frames of unit time.

    Args:
        p0, v0: (N, 2) start centres (allowed, see :func:`edge_normals`) and velocities.
    Returns:
        positions, velocities: (N, steps, 2) at frames 0 .. steps - 1 (frame 0 is the start).
    """
    normals, offsets = edge_normals(polygon, radius)
    p = np.array(p0, dtype=np.float64)
    v = np.array(v0, dtype=np.float64)
    if p.shape != v.shape or p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"simulate: p0 and v0 must both be (N, 2), got {p.shape} and {v.shape}")
    if not np.all(inside(p, normals, offsets)):
        raise ValueError("simulate: a start position lies outside the allowed region")
    pos = np.empty((len(p), steps, 2))
    vel = np.empty((len(p), steps, 2))
    rows = np.arange(len(p))
    for t in range(steps):
        pos[:, t], vel[:, t] = p, v
        if t == steps - 1:
            break
        remaining = np.ones(len(p))
        for _ in range(max_bounces):
            vn = v @ normals.T                                              # (N, E)
            gap = np.maximum(offsets - p @ normals.T, 0.0)                  # distance to each wall
            t_hit = np.where(vn > _EPS, gap / np.where(vn > _EPS, vn, 1.0), np.inf)
            edge = np.argmin(t_hit, axis=1)
            first = t_hit[rows, edge]
            hit = first < remaining
            step = np.where(hit, first, remaining)
            p = p + v * step[:, None]
            v = np.where(hit[:, None], reflect(v, normals[edge]), v)
            remaining = np.where(hit, remaining - step, 0.0)
            if not np.any(remaining > 0):
                break
        else:
            raise RuntimeError(f"simulate: more than {max_bounces} bounces within one frame")
    return pos, vel


def render(positions: np.ndarray, size: int, radius: float) -> np.ndarray:
    """(..., 2) centres -> (..., size, size) uint8 frames: 1 where a pixel centre is within
    ``radius`` of the ball's centre (pixel (i, j) has its centre at x = j + 0.5, y = i + 0.5)."""
    c = np.arange(size, dtype=np.float64) + 0.5
    pos = np.asarray(positions, dtype=np.float64)
    dx = c - pos[..., 0, None]  # (..., W)
    dy = c - pos[..., 1, None]  # (..., H)
    return (dy[..., :, None] ** 2 + dx[..., None, :] ** 2 <= radius * radius).astype(np.uint8)


def _start_states(cfg: BallConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    poly = np.asarray(cfg.polygon, dtype=np.float64)
    normals, offsets = edge_normals(poly, cfg.radius)
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    starts = np.empty((cfg.n, 2))
    filled = 0
    while filled < cfg.n:  # rejection sampling: uniform over the allowed centres
        cand = rng.uniform(lo, hi, size=(2 * cfg.n, 2))
        cand = cand[inside(cand, normals, offsets, tol=0.0)][: cfg.n - filled]
        starts[filled:filled + len(cand)] = cand
        filled += len(cand)
    angle = rng.uniform(0.0, 2.0 * np.pi, cfg.n)
    speed = rng.uniform(cfg.speed[0], cfg.speed[1], cfg.n)
    return starts, np.stack([np.cos(angle), np.sin(angle)], axis=1) * speed[:, None]


def make_ball_dataset(cfg: BallConfig = BallConfig()) -> BallData:
    """Simulate and render ``cfg.n`` sequences (seeded by ``cfg.seed``)."""
    rng = np.random.default_rng(cfg.seed)
    p0, v0 = _start_states(cfg, rng)
    pos, vel = simulate(p0, v0, cfg.T, np.asarray(cfg.polygon), cfg.radius)
    frames = np.concatenate([render(pos[i:i + 500], cfg.size, cfg.radius) for i in range(0, cfg.n, 500)])
    return BallData(frames, pos, vel, cfg)


_KEYS = ("frames", "positions", "velocities", "config")


def read_ball_dataset(path: str | Path) -> BallData:
    """Load a file written by :func:`ensure_ball_dataset`; a missing or damaged file is a
    DataError naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path}: not a ball dataset (missing arrays {missing})")
            raw = json.loads(str(z["config"]))
            raw["speed"] = tuple(raw["speed"])
            raw["polygon"] = tuple(tuple(v) for v in raw["polygon"])
            cfg = BallConfig(**raw)
            data = BallData(z["frames"], z["positions"], z["velocities"], cfg)
    except FileNotFoundError as e:
        raise DataError(f"{path}: ball dataset file is missing") from e
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable ball dataset ({type(e).__name__}: {e})") from e
    want = (cfg.n, cfg.T, cfg.size, cfg.size)
    if data.frames.shape != want or data.positions.shape != (cfg.n, cfg.T, 2):
        raise DataError(f"{path}: frames {data.frames.shape} / positions {data.positions.shape} do not "
                        f"match its config (frames {want})")
    return data


def ensure_ball_dataset(folder: str | Path, cfg: BallConfig = BallConfig()) -> tuple[BallData, Path]:
    """The dataset of ``cfg`` from ``folder/ball-<key>.npz``, generated and written atomically when
    the file is missing or unreadable (a damaged file is regenerated, never half-read)."""
    path = Path(folder).expanduser() / f"ball-{cfg.key()}.npz"
    if path.exists():
        try:
            data = read_ball_dataset(path)
            if data.config == cfg:
                return data, path
        except DataError:
            pass  # regenerate below
    data = make_ball_dataset(cfg)
    config_text = json.dumps(asdict(cfg), sort_keys=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(f, frames=data.frames, positions=data.positions,
                                velocities=data.velocities, config=np.asarray(config_text))

    atomic_write_with(path, write)
    return data, path
