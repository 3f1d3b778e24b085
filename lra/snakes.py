"""Pathfinder images: a port of the `snakes2` generator (Linsley et al. 2018; drewlinsley/pathfinder).

An image holds two target snakes seeded `seed_distance` apart, each `contour_length` paddles long,
grown paddle by paddle: the next paddle's head is drawn on a circle around the pivot ahead, weighted
by cos^2 of the turn (times `continuity`, capped at 90 degrees) and by free space in a dilated
collision mask; a paddle that would overlap the mask is redrawn (`max_paddle_retrial` times), and a
snake that cannot grow is regrown from scratch. Short distractor snakes follow, then two circular
markers: on the two ends of one snake (label 1) or on one end of each (label 0).

Faithful to the original's semantics, not its random stream. Where the original relied on the
old `scipy.misc.imresize/imsave` (bytescale to uint8, lanczos resize), we resize 0/255 uint8
images with PIL's lanczos (so values stay in [0, 1]) and save `round(255 * x / max(x))`.
Speed comes from caching each paddle sprite (a paddle is fully determined by its orientation and
the preset), so drawing is array slicing; a 32x32 image costs a few milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage


@dataclass(frozen=True)
class SnakeParams:
    """One snakes2 configuration (the LRA presets are in `lra.pathfinder.PRESETS`)."""

    window: int
    padding: int
    antialias: int
    margins: tuple[int, ...]
    paddle_length: int
    thickness: float
    marker_radius: float
    seed_distance: int
    continuity: float
    contour_length: int
    distractor_length: int
    num_distractors: int
    snake_contrasts: tuple[float, ...]
    paddle_contrasts: tuple[float, ...]
    max_paddle_retrial: int = 2
    max_distractor_retrial: int = 4


@dataclass
class Sample:
    """One generated image (uint8, window x window) and its label, plus the target-snake layers."""

    image: np.ndarray
    label: int
    margin: int
    snakes: tuple[np.ndarray, np.ndarray]  # per target snake, float intensity (for tests/diagnostics)
    markers: tuple[tuple[int, int], tuple[int, int]]  # (y, x) of the two marker centres
    marker_snakes: tuple[int, int]  # which target snake each marker sits on


# ---------------------------------------------------------------- geometry and sprites

def _translate(coord: tuple[int, int], orientation: float, distance: float) -> tuple[int, int]:
    """Moves (y, x) by `distance` along `orientation` (radians), rounding up as the original."""
    return (
        int(math.ceil(coord[0] + distance * math.sin(orientation))),
        int(math.ceil(coord[1] + distance * math.cos(orientation))),
    )


def _flip(orientation: float) -> float:
    return orientation + math.pi if orientation < 0 else orientation - math.pi


@lru_cache(maxsize=None)
def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(bool)


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    """Lanczos resize of a 0/255 uint8 image, returned as float in [0, 1]."""
    image = Image.fromarray(array).resize((size, size), resample=Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32) / 255.0


@lru_cache(maxsize=None)
def _paddle(orientation: float, length: int, thickness: float, margin: int, antialias: int) -> tuple[np.ndarray, np.ndarray]:
    """(line, mask) sprites, (2R+1)^2 with R = length + ceil(thickness) + margin, tail at the centre.

    The line is drawn at `antialias` times the resolution and resized; the mask is the fine line
    dilated by a disk of radius margin*antialias, resized the same way (the collision margin).
    """
    reach = length + int(math.ceil(thickness)) + margin
    fine_size = reach * 2 * antialias + 1
    centre = reach * antialias
    head = _translate((centre, centre), orientation, length * antialias)
    fine = Image.new("L", (fine_size, fine_size), 0)
    ImageDraw.Draw(fine).line([(centre, centre), (head[1], head[0])], fill=255, width=int(round(thickness * antialias)))
    fine_line = np.asarray(fine)
    fine_mask = ndimage.maximum_filter(fine_line, footprint=_disk(margin * antialias), mode="constant", cval=0)
    size = reach * 2 + 1
    line, mask = _resize(fine_line, size), _resize(fine_mask, size)
    line.setflags(write=False)
    mask.setflags(write=False)
    return line, mask


def _window(canvas_shape: tuple[int, int], sprite: np.ndarray, centre: tuple[int, int]):
    """(canvas slices, sprite slices) where `sprite` centred at `centre` overlaps the canvas, or None."""
    return _window_at(canvas_shape, sprite.shape[0], centre)


@lru_cache(maxsize=None)
def _window_at(canvas_shape: tuple[int, int], side: int, centre: tuple[int, int]):
    reach = side // 2
    top, left = centre[0] - reach, centre[1] - reach
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(top + side, canvas_shape[0])
    x1 = min(left + side, canvas_shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def _place(canvas_shape: tuple[int, int], sprite: np.ndarray, centre: tuple[int, int]) -> np.ndarray:
    """A canvas of zeros with `sprite` centred at `centre` (clipped at the borders)."""
    out = np.zeros(canvas_shape, dtype=np.float32)
    _stamp(out, sprite, centre)
    return out


def _stamp(canvas: np.ndarray, sprite: np.ndarray, centre: tuple[int, int], scale: float = 1.0) -> None:
    """canvas = max(canvas, scale * sprite placed at centre), in place."""
    window = _window(canvas.shape, sprite, centre)
    if window is not None:
        target, source = window
        np.maximum(canvas[target], sprite[source] * scale, out=canvas[target])


@lru_cache(maxsize=None)
def _seed_struct(orientation: float, length: int, thickness: float, margin: int, antialias: int) -> np.ndarray:
    """Footprint that keeps a new seed paddle clear of the mask (the original's head-centred struct).

    The original casts the float mask sprite to uint8, so only fully covered pixels count.
    """
    side = (length + margin) * 2 + 1
    head = length + margin + 1
    _, mask = _paddle(orientation, length, thickness, margin, antialias)
    struct = _place((side, side), mask, (head, head)) >= 1.0
    # An empty footprint would make every pixel free; fall back to the tail pixel alone.
    return struct if struct.any() else np.ones((1, 1), dtype=bool)


@lru_cache(maxsize=None)
def _first_seed_free(params: SnakeParams, margin: int, orientation: float) -> tuple[np.ndarray, np.ndarray]:
    """Free pixels for the first target seed: the padding border plus a 2*seed_distance band, so the
    second seed fits around it, dilated by the seed footprint."""
    n, pad, band = params.window, params.padding, 2 * params.seed_distance
    border = np.zeros((n, n), dtype=np.float32)
    border[:max(pad, band), :], border[n - max(pad, band):, :] = 1, 1
    border[:, :max(pad, band)], border[:, n - max(pad, band):] = 1, 1
    struct = _seed_struct(orientation, params.paddle_length, params.thickness, margin, params.antialias)
    return np.nonzero(_free(_dilate(border, struct)))


def _clear_of(occupied: np.ndarray, windows: tuple[tuple[slice, slice], ...]) -> np.ndarray:
    """Pixels whose seed footprint covers no occupied pixel: the original's free(dilate(mask,
    footprint)) on the thresholded, padded mask, as an OR of the footprint's shifted windows."""
    blocked = occupied[windows[0]].copy()
    for window in windows[1:]:
        blocked |= occupied[window]
    return ~blocked


def _dilate(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    return ndimage.maximum_filter(mask, footprint=footprint, mode="constant", cval=0.0)


def _free(mask: np.ndarray) -> np.ndarray:
    """Pixels the original counts as available: ceil(mask - 0.3) == 0."""
    return mask <= 0.3


# ---------------------------------------------------------------- collision state

@dataclass(frozen=True)
class _Paddle:
    """Sprites of one paddle orientation (tail at the centre): line, collision mask, and the free
    weight the mask leaves, 1 - (mask dilated by the margin disk), which candidate heads read."""

    line: np.ndarray
    mask: np.ndarray
    free: np.ndarray


@lru_cache(maxsize=None)
def _paddle_sprites(orientation: float, length: int, thickness: float, margin: int, antialias: int) -> _Paddle:
    line, mask = _paddle(orientation, length, thickness, margin, antialias)
    dilated = _dilate(np.pad(mask, margin), _disk(margin))  # the dilation reaches `margin` further
    free = 1 - dilated
    free.setflags(write=False)
    return _Paddle(line, mask, free)


def _stamp_min(canvas: np.ndarray, sprite: np.ndarray, centre: tuple[int, int]) -> None:
    """canvas = min(canvas, sprite placed at centre), in place (clipped at the borders)."""
    window = _window(canvas.shape, sprite, centre)
    if window is not None:
        target, source = window
        np.minimum(canvas[target], sprite[source], out=canvas[target])


class _Occupancy:
    """The collision mask, held in two forms that make the per-paddle queries one slice or gather.

    `padded` is the mask with `reach` (sprite radius) zero pixels on every side, `interior` its
    in-image view: a paddle's overlap test reads one unclipped window. Off-image pixels are 0 and a
    sprite is <= 1, so they never reach the 1.8 overlap threshold: the test equals the original's.

    `free` is 1 - (mask dilated by the margin disk), padded by the dilated sprite's radius and
    flattened for gathers; candidates off the image point at its corner, which stays 0 (no weight).
    Stamping 1 - (pre-dilated sprite) with min equals recomputing it (max commutes with dilation,
    and 1 - x is monotone, so rounding agrees), except that sprite pixels beyond the image edge now
    count; they only reach pixels whose margin disk already holds a padding pixel (value 1), so
    the result is identical as long as padding >= 1.
    """

    __slots__ = ("padded", "interior", "free", "free_flat", "reach", "window")

    def __init__(self, padded: np.ndarray, free: np.ndarray, reach: int, window: int):
        self.padded = padded
        self.interior = padded[reach:reach + window, reach:reach + window]
        self.free = free
        self.free_flat = free.reshape(-1)  # a view: gathers see stamps
        self.reach = reach
        self.window = window

    @classmethod
    def empty(cls, params: SnakeParams, margin: int, reach: int) -> "_Occupancy":
        """The padding border alone (the original's starting mask)."""
        if params.padding < 1:
            raise ValueError("snakes: padding must be at least 1 (the dilated mask relies on it)")
        n, pad = params.window, params.padding
        padded = np.zeros((n + 2 * reach, n + 2 * reach), dtype=np.float32)
        side = n + 2 * (reach + margin)
        occupancy = cls(padded, np.zeros((side, side), dtype=np.float32), reach, n)
        inner = occupancy.interior
        inner[:pad, :], inner[-pad:, :], inner[:, :pad], inner[:, -pad:] = 1, 1, 1, 1
        occupancy.free[reach + margin:reach + margin + n, reach + margin:reach + margin + n] = 1 - _dilate(inner, _disk(margin))
        return occupancy

    def copy(self) -> "_Occupancy":
        return _Occupancy(self.padded.copy(), self.free.copy(), self.reach, self.window)

    def stamp(self, paddle: _Paddle, centre: tuple[int, int]) -> None:
        y, x = centre
        reach, n = self.reach, self.window
        if reach <= y < n - reach and reach <= x < n - reach:  # sprite fully in the image
            view = self.padded[y:y + 2 * reach + 1, x:x + 2 * reach + 1]
            np.maximum(view, paddle.mask, out=view)
        else:
            _stamp(self.interior, paddle.mask, centre)
        if 0 <= y < n and 0 <= x < n:  # the free layer's padding holds the whole sprite
            side = paddle.free.shape[0]
            view = self.free[y:y + side, x:x + side]
            np.minimum(view, paddle.free, out=view)
        else:
            padding = paddle.free.shape[0] // 2
            _stamp_min(self.free, paddle.free, (y + padding, x + padding))

    def collides(self, paddle: _Paddle, centre: tuple[int, int]) -> bool:
        """max(mask + paddle mask) >= 1.8 (centre in the image; padded top-left = centre)."""
        side = paddle.mask.shape[0]
        y, x = centre
        # Compare in float64 as the original: float32(1.8) is below 1.8 and float32 sums hit it.
        return float((self.padded[y:y + side, x:x + side] + paddle.mask).max()) >= 1.8


@lru_cache(maxsize=None)
def _circle_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique pixel offsets on a circle (one sample per pixel of arc), sorted, and their orientations.

    The original truncates centre + radius*(sin, cos) to integers after dropping out-of-image
    samples; for in-image samples that equals centre + floor(offset), so the offsets can be
    computed once per radius.
    """
    step_degrees = 360.0 / (2 * radius * math.pi)  # one pixel of arc
    angles = np.arange(0, 360, step_degrees) * math.pi / 180
    offsets = np.floor(np.stack([radius * np.sin(angles), radius * np.cos(angles)], axis=1)).astype(int)
    offsets = np.unique(offsets, axis=0)
    return offsets, np.arctan2(offsets[:, 0], offsets[:, 1])


@lru_cache(maxsize=None)
def _ring(centre: tuple[int, int], radius: int, window: int, padding: int) -> Optional[tuple[np.ndarray, int]]:
    """Flat indices into `_Occupancy.free_flat` (image padded by `padding`) of every circle offset
    around `centre`, off-image ones pointing at the padded corner (no free weight), and the first
    in-image offset; None when none is in the image."""
    coords = _circle_offsets(radius)[0] + np.asarray(centre)
    inside = (coords >= 0).all(axis=1) & (coords < window).all(axis=1)
    if not inside.any():
        return None
    side = window + 2 * padding
    flat = np.where(inside, (coords[:, 0] + padding) * side + coords[:, 1] + padding, 0)
    return flat, int(np.argmax(inside))


@lru_cache(maxsize=None)
def _continuity_weights(radius: int, last_orientation: float, continuity: float) -> np.ndarray:
    """cos^2(min(continuity * turn, 90 deg)) for every circle offset (the original's smoothness prior)."""
    _, orientations = _circle_offsets(radius)
    turn = np.abs(orientations - last_orientation)
    turn = np.minimum(np.minimum(turn, 2 * math.pi - turn) * continuity, 0.5 * math.pi)
    return np.cos(turn) ** 2


class _Tables:
    """Everything fixed by (preset, margin), built once per process: sprites, the circle of next
    heads with the paddle each would draw, and the empty collision state."""

    def __init__(self, params: SnakeParams, margin: int):
        self.p = params
        self.margin = margin
        self.step = params.paddle_length + margin  # distance pivot -> next head
        self.reach = params.paddle_length + int(math.ceil(params.thickness)) + margin
        self.empty = _Occupancy.empty(params, margin, self.reach)
        offsets, headings = _circle_offsets(self.step)
        self.offsets = [(int(dy), int(dx)) for dy, dx in offsets]
        self.headings = [float(h) for h in headings]
        # A head at offset k draws the paddle pointing back at the pivot: orientation flip(heading).
        self.head_paddles = [self.sprites(_flip(h)) for h in self.headings]
        self._headings: dict[float, tuple[float, float, np.ndarray]] = {}
        self._rings: dict[tuple[int, int], Optional[tuple[np.ndarray, int]]] = {}
        self._first_seeds: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self.seed_reach = params.paddle_length + margin  # the seed struct's half side
        self._seed_windows: dict[float, tuple[tuple[slice, slice], ...]] = {}

    def sprites(self, orientation: float) -> _Paddle:
        p = self.p
        return _paddle_sprites(float(orientation), p.paddle_length, p.thickness, self.margin, p.antialias)

    def seed_windows(self, orientation: float) -> tuple[tuple[slice, slice], ...]:
        """The seed footprint as windows of a mask padded by `seed_reach`: footprint pixel
        (a, b) of the centred struct is the window shifted by (a, b) - centre."""
        windows = self._seed_windows.get(orientation)
        if windows is None:
            p, n, reach = self.p, self.p.window, self.seed_reach
            struct = _seed_struct(float(orientation), p.paddle_length, p.thickness, self.margin, p.antialias)
            centre = struct.shape[0] // 2
            windows = self._seed_windows[orientation] = tuple(
                (slice(reach + a - centre, reach + a - centre + n), slice(reach + b - centre, reach + b - centre + n))
                for a, b in np.argwhere(struct)
            )
        return windows

    def heading(self, orientation: float) -> tuple[float, float, np.ndarray]:
        """(dy, dx) from a pivot to the pivot ahead (length + 2 margin along `orientation`, unrounded
        as `_translate` adds it) and the continuity weights of every circle offset."""
        cached = self._headings.get(orientation)
        if cached is None:
            ahead = self.p.paddle_length + 2 * self.margin
            cached = self._headings[orientation] = (
                ahead * math.sin(orientation), ahead * math.cos(orientation),
                _continuity_weights(self.step, orientation, self.p.continuity),
            )
        return cached

    def ring(self, centre: tuple[int, int]) -> Optional[tuple[np.ndarray, int]]:
        if centre not in self._rings:
            self._rings[centre] = _ring(centre, self.step, self.p.window, self.reach + self.margin)
        return self._rings[centre]

    def first_seed_free(self, orientation: float) -> tuple[np.ndarray, np.ndarray]:
        cached = self._first_seeds.get(orientation)
        if cached is None:
            cached = self._first_seeds[orientation] = _first_seed_free(self.p, self.margin, orientation)
        return cached


@lru_cache(maxsize=None)
def _tables(params: SnakeParams, margin: int) -> _Tables:
    return _Tables(params, margin)


# ---------------------------------------------------------------- growing snakes

class _Grower:
    def __init__(self, params: SnakeParams, margin: int, rng: np.random.Generator):
        self.p = params
        self.rng = rng
        self.t = _tables(params, margin)
        self.margin = margin

    def random_orientation(self) -> float:
        return int(self.rng.integers(-180, 180)) * math.pi / 180

    def choose(self, values: tuple[float, ...]) -> float:
        """A uniform pick; a single value skips the draw (numpy's integers(0, 1) consumes none)."""
        return values[0] if len(values) == 1 else values[int(self.rng.integers(0, len(values)))]

    def seed(self, occupancy: Optional[_Occupancy], stop_below: Optional[float]) -> Optional[tuple]:
        """Places a first paddle on free space; returns (tail, pivot, orientation) or None.

        `occupancy` None means the first target seed, whose border mask is fixed per preset, so
        its free pixels per orientation are cached. A distractor seed also avoids the outer ring.
        """
        p, n = self.p, self.p.window
        if occupancy is not None:
            reach = self.t.seed_reach
            occupied = np.zeros((n + 2 * reach, n + 2 * reach), dtype=bool)  # beyond the image: free
            inner = occupied[reach:reach + n, reach:reach + n]
            np.greater(occupancy.interior, 0.3, out=inner)  # not free
            inner[0, :], inner[-1, :], inner[:, 0], inner[:, -1] = True, True, True, True
            # The mask does not change between retrials: test once, return where the original would.
            crowded = stop_below is not None and _free(occupancy.interior).mean() < stop_below
        for _ in range(p.max_paddle_retrial + 1):
            orientation = self.random_orientation()
            if occupancy is None:
                ys, xs = self.t.first_seed_free(orientation)
            else:
                if crowded:
                    return None
                ys, xs = np.nonzero(_clear_of(occupied, self.t.seed_windows(orientation)))
            if ys.size == 0:
                return None
            index = int(self.rng.integers(0, ys.size))
            tail = (int(ys[index]), int(xs[index]))
            head = _translate(tail, orientation, p.paddle_length)
            pivot = _translate(head, _flip(orientation), p.paddle_length + self.margin)
            if 0 <= head[0] < n and 0 <= head[1] < n and 0 <= pivot[0] < n and 0 <= pivot[1] < n:
                return tail, pivot, orientation
        return None

    def extend(self, pivot, orientation, occupancy: _Occupancy):
        """Next paddle: (head, orientation of pivot->head, new pivot) or None at a dead end.

        The head is sampled on a circle of radius length+margin around the pivot ahead, weighted by
        (1 - mask dilated by the margin disk) * continuity weight, as the original get_coords_cmf;
        the paddle runs from the head back towards that pivot and must not overlap the mask (retried).
        """
        p, t = self.p, self.t
        dy, dx, weights = t.heading(orientation)
        new_pivot = (math.ceil(pivot[0] + dy), math.ceil(pivot[1] + dx))  # = _translate
        ring = t.ring(new_pivot)
        if ring is None:
            return None
        flat, first_inside = ring
        # Off-image offsets weigh 0, so they never own the first cumulative value above a draw.
        cumulative = (occupancy.free_flat[flat] * weights).cumsum()
        total = float(cumulative[-1])
        if total < 1e-4:
            return None
        for _ in range(p.max_paddle_retrial + 1):
            # First index whose cumulative mass exceeds a uniform draw (the first in-image one if
            # rounding leaves none).
            index = int(cumulative.searchsorted(self.rng.random() * total, side="right"))
            if index == len(cumulative):
                index = first_inside
            offset = t.offsets[index]
            head = (new_pivot[0] + offset[0], new_pivot[1] + offset[1])
            if not occupancy.collides(t.head_paddles[index], head):
                return head, t.headings[index], new_pivot
        return None

    def target_pair(self) -> Optional[tuple]:
        """Two target snakes seeded seed_distance apart; None when growth fails (caller retries).

        Returns (per-snake images, collision state, origin tips, terminal tips).
        """
        p, rng, n, t = self.p, self.rng, self.p.window, self.t
        contrasts = list(p.snake_contrasts) * 2
        rng.shuffle(contrasts)
        first = self.seed(None, None)
        if first is None:
            return None
        tails, pivots, orientations = [first[0]], [first[1]], [first[2]]
        for _ in range(p.max_paddle_retrial + 1):
            orientation = self.random_orientation()
            angle = int(rng.integers(0, 360)) * math.pi / 180
            tail = (
                int(np.round(first[0][0] + p.seed_distance * math.sin(angle))),
                int(np.round(first[0][1] + p.seed_distance * math.cos(angle))),
            )
            head = _translate(tail, orientation, p.paddle_length)
            pivot = _translate(head, _flip(orientation), p.paddle_length + self.margin)
            if 0 <= head[0] < n and 0 <= head[1] < n and 0 <= pivot[0] < n and 0 <= pivot[1] < n:
                tails.append(tail)
                pivots.append(pivot)
                orientations.append(orientation)
                break
        else:
            return None
        occupancy = t.empty.copy()
        paddles: list[list[tuple[_Paddle, tuple[int, int], float]]] = [[], []]  # (sprites, tail, contrast)
        last_segments = []  # (sprites, centre) of each snake's newest paddle, not yet in the mask
        for i in range(2):
            contrast = self.choose(p.paddle_contrasts) * contrasts[i]
            sprites = t.sprites(orientations[i])
            paddles[i].append((sprites, tails[i], contrast))
            last_segments.append((sprites, tails[i]))
        ends = [tails[0], tails[1]]
        for _ in range(p.contour_length - 1):
            paddle_contrast = self.choose(p.paddle_contrasts)
            for i in range(2):
                grown = self.extend(pivots[i], orientations[i], occupancy)
                if grown is None:
                    return None
                head, orientations[i], pivots[i] = grown
                ends[i] = head
                sprites = t.sprites(_flip(orientations[i]))
                paddles[i].append((sprites, head, paddle_contrast * contrasts[i]))
                occupancy.stamp(*last_segments[i])
                last_segments[i] = (sprites, head)
        # As the original: only the second snake's last paddle joins the mask before distractors.
        occupancy.stamp(*last_segments[1])
        images = [np.zeros((n, n), dtype=np.float32) for _ in range(2)]
        for image, drawn in zip(images, paddles):
            for sprites, centre, contrast in drawn:
                _stamp(image, sprites.line, centre, contrast)
        return images, occupancy, tails, ends

    def distractor(self, image: np.ndarray, occupancy: _Occupancy, length: int, stop_below: float) -> Optional[_Occupancy]:
        """Grows one short snake; on success draws it into `image` and returns the new collision state."""
        p, t = self.p, self.t
        contrast = self.choose(p.snake_contrasts)
        seeded = self.seed(occupancy, stop_below)
        if seeded is None:
            return None
        tail, pivot, orientation = seeded
        work = occupancy.copy()
        sprites = t.sprites(orientation)
        paddles = [(sprites, tail)]
        last_segment = (sprites, tail)
        for _ in range(length - 1):
            grown = self.extend(pivot, orientation, work)
            if grown is None:
                return None
            head, orientation, pivot = grown
            sprites = t.sprites(_flip(orientation))
            paddles.append((sprites, head))
            work.stamp(*last_segment)
            last_segment = (sprites, head)
        work.stamp(*last_segment)
        for drawn, centre in paddles:
            _stamp(image, drawn.line, centre, contrast)
        return work


@lru_cache(maxsize=None)
def _marker(window: int, radius: float, antialias: int, fy: int, fx: int) -> np.ndarray:
    """A disk marker sprite drawn at `antialias` resolution; (fy, fx) = centre within its window."""
    y, x = np.ogrid[-fy * antialias:(window - fy) * antialias, -fx * antialias:(window - fx) * antialias]
    fine = ((x * x + y * y) <= (radius * antialias) ** 2).astype(np.uint8) * 255
    return _resize(fine, window)


def draw_marker(window: int, centre: tuple[int, int], radius: float, antialias: int) -> np.ndarray:
    """The original's draw_circle: a disk at `centre` drawn finely, then lanczos-resized."""
    # A marker only reaches `radius` pixels; draw it in a small window and place it (same pixels).
    half = int(math.ceil(radius)) + 3
    side = 2 * half + 1
    sprite = _marker(side, float(radius), antialias, half, half)
    return _place((window, window), sprite, centre)


def generate_sample(params: SnakeParams, rng: np.random.Generator) -> Sample:
    """One image and label, as snakes2's from_wrapper does for one loop iteration."""
    label = int(rng.integers(0, 2))
    margin = params.margins[int(rng.integers(0, len(params.margins)))]
    grower = _Grower(params, margin, rng)
    while True:
        pair = grower.target_pair()
        if pair is not None:
            break
    snakes, occupancy, origins, ends = pair
    image = np.maximum(snakes[0], snakes[1])
    for _ in range(params.num_distractors):
        for _ in range(params.max_distractor_retrial + 1):
            grown = grower.distractor(image, occupancy, params.distractor_length, 0.01)
            if grown is not None:
                occupancy = grown
                break
    origin_index = int(rng.integers(0, 2))
    terminal_index = origin_index if label == 1 else 1 - origin_index
    first, second = origins[origin_index], ends[terminal_index]
    markers = np.maximum(
        draw_marker(params.window, first, params.marker_radius, params.antialias),
        draw_marker(params.window, second, params.marker_radius, params.antialias),
    )
    marked = np.maximum(image, markers)
    peak = float(marked.max())
    pixels = np.round(255.0 * marked / peak).astype(np.uint8) if peak > 0 else np.zeros_like(marked, dtype=np.uint8)
    return Sample(pixels, label, margin, (snakes[0], snakes[1]), (first, second), (origin_index, terminal_index))
