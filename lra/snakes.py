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
Speed: paddle sprites are cached per orientation (a paddle is fully determined by it and the
preset); the collision mask is kept with a pre-dilated free-weight layer so a candidate's weight
is one gather; and target pairs, which on 32x32 'hard' succeed in about 1 attempt of 40, are
searched by `_PairSearch`, which grows many independent attempts at once with array operations.
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
        n, reach = params.window, self.seed_reach
        self.seed_canvas = np.zeros((n + 2 * reach, n + 2 * reach), dtype=bool)
        self.seed_canvas[reach:reach + n, reach:reach + n] = True
        self.seed_canvas[reach + 1:reach + n - 1, reach + 1:reach + n - 1] = False
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
    """One-at-a-time growth (distractors) with the random stream of one image."""

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

    def seed(self, occupancy: _Occupancy, stop_below: float) -> Optional[tuple]:
        """Places a distractor's first paddle on free space away from the outer ring; returns
        (tail, pivot, orientation) or None. (Target seeds: `_PairSearch._seed_pairs`.)"""
        p, n, reach = self.p, self.p.window, self.t.seed_reach
        free = _free(occupancy.interior)
        # The mask does not change between retrials: test once, return where the original would.
        if np.count_nonzero(free) / free.size < stop_below:
            self.random_orientation()
            return None
        occupied = self.t.seed_canvas.copy()  # the outer ring occupied, beyond the image free
        np.logical_not(free[1:-1, 1:-1], out=occupied[reach + 1:reach + n - 1, reach + 1:reach + n - 1])
        for _ in range(p.max_paddle_retrial + 1):
            orientation = self.random_orientation()
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


# ---------------------------------------------------------------- target pairs, many attempts at once

#: Target-pair attempts grown together: a speed knob (any size is exact). Rounds aim at the pairs
#: still needed, from the success rate seen so far (32x32 hard: about 1 attempt in 40 succeeds).
ROUND_SIZES = (32, 512)


class _PairSearch:
    """Grows many independent target-pair attempts in lockstep with array operations.

    An attempt is the original's: seed the first snake on the cached free pixels, the second
    seed_distance away, then contour_length - 1 steps that extend snake 0 then snake 1 on the
    shared collision state, each new paddle's predecessor joining the mask after it is placed
    (`_Grower.seed/extend` and `_Occupancy` are the one-attempt versions of each rule, with the
    same tables and float operations). Any failure ends the attempt, as the original's regrowth.
    Attempts are independent and identically distributed, so the successful ones, taken in
    attempt order, are independent draws of what the original's retry loop returns. Only the use
    of the random stream differs: the seeds' retrials are drawn up front (unused ones are
    discarded, which leaves the used ones independent and uniform), a paddle's retrials only for
    attempts that need them, and a uniform integer below `count` is floor(u * count).
    """

    def __init__(self, params: SnakeParams, margin: int):
        t = _tables(params, margin)
        p, n = params, params.window
        self.p, self.t, self.n, self.margin = p, t, n, margin
        # Orientation ids: the 360 seed orientations (id = degree + 180), then headings and flips.
        seeds = [degree * math.pi / 180 for degree in range(-180, 180)]
        orientations = list(dict.fromkeys(seeds + t.headings + [_flip(h) for h in t.headings]))
        ids = {o: i for i, o in enumerate(orientations)}
        self.heading_ids = np.array([ids[h] for h in t.headings])
        self.head_paddle_ids = np.array([ids[_flip(h)] for h in t.headings])
        self.paddles = [t.sprites(o) for o in orientations]  # by orientation id
        self.mask_sprites = np.stack([s.mask for s in self.paddles])  # (O, s, s)
        self.free_sprites = np.stack([s.free for s in self.paddles])  # (O, s + 2m, s + 2m)
        self.weights = np.stack([t.heading(o)[2] for o in orientations])  # (O, K) float64
        self.ahead = np.array([t.heading(o)[:2] for o in orientations])  # (O, 2)
        length, back = p.paddle_length, p.paddle_length + margin
        self.to_head = np.array([(length * math.sin(o), length * math.cos(o)) for o in orientations])  # (O, 2)
        self.to_pivot = np.array([(back * math.sin(_flip(o)), back * math.cos(_flip(o))) for o in orientations])
        angles = [degree * math.pi / 180 for degree in range(360)]
        self.to_second = np.array([(p.seed_distance * math.sin(a), p.seed_distance * math.cos(a)) for a in angles])
        self.offsets = np.array(t.offsets)  # (K, 2)
        # First-seed pixels per seed orientation in one array (count 0: the attempt ends).
        free = [t.first_seed_free(o) for o in seeds]
        self.seed_counts = np.array([ys.size for ys, _ in free])
        self.seed_pixels = np.zeros((len(seeds), max(1, int(self.seed_counts.max())), 2), dtype=np.int64)
        for i, (ys, xs) in enumerate(free):
            self.seed_pixels[i, :ys.size, 0], self.seed_pixels[i, :ys.size, 1] = ys, xs
        # Canvases with room for every stamp: a tail may lie up to length + 1 beyond the image.
        self.extra = length + 2
        self.reach = t.reach
        self.mask_pad = t.reach + self.extra
        self.free_pad = t.reach + margin + self.extra
        self.empty_mask = np.pad(t.empty.padded, self.extra)
        self.empty_free = np.pad(t.empty.free, self.extra)
        side, free_side = self.mask_sprites.shape[1], self.free_sprites.shape[1]
        self.grid = np.arange(side)
        self.masks_flat = self.mask_sprites.reshape(len(orientations), -1)  # (O, s * s)
        self.frees_flat = self.free_sprites.reshape(len(orientations), -1)
        # Flat offsets of a sprite's window in the padded canvases (row-major, as the sprites).
        mask_side, free_canvas = self.empty_mask.shape[0], self.empty_free.shape[0]
        self.mask_window = (np.arange(side)[:, None] * mask_side + np.arange(side)).reshape(-1)
        self.free_window = (np.arange(free_side)[:, None] * free_canvas + np.arange(free_side)).reshape(-1)

    def _inside(self, *coordinates: np.ndarray) -> np.ndarray:
        return np.logical_and.reduce([(c >= 0) & (c < self.n) for c in coordinates])

    def _seed_pairs(self, rng: np.random.Generator, count: int):
        """The first seed (first empty try ends the attempt) and the second seed, `count` attempts:
        (ok (B,), tails (B, 2, 2), pivots (B, 2, 2), orientation ids (B, 2))."""
        tries, rows = self.p.max_paddle_retrial + 1, np.arange(count)
        ids = rng.integers(0, 360, (count, tries))  # -180..179 degrees
        counts = self.seed_counts[ids]
        index = np.minimum((rng.random((count, tries)) * counts).astype(np.int64), np.maximum(counts - 1, 0))
        tail = self.seed_pixels[ids, index]  # (B, tries, 2)
        head = np.ceil(tail + self.to_head[ids]).astype(np.int64)
        pivot = np.ceil(head + self.to_pivot[ids]).astype(np.int64)
        valid = self._inside(head[..., 0], head[..., 1], pivot[..., 0], pivot[..., 1])
        stop = (counts == 0) | valid  # the original returns at the first empty or valid try
        first = stop.argmax(axis=1)
        ok = stop.any(axis=1) & valid[rows, first]
        tails, pivots, orientations = [tail[rows, first]], [pivot[rows, first]], [ids[rows, first]]
        ids = rng.integers(0, 360, (count, tries))
        angles = rng.integers(0, 360, (count, tries))
        tail = np.round(tails[0][:, None, :] + self.to_second[angles]).astype(np.int64)
        head = np.ceil(tail + self.to_head[ids]).astype(np.int64)
        pivot = np.ceil(head + self.to_pivot[ids]).astype(np.int64)
        valid = self._inside(head[..., 0], head[..., 1], pivot[..., 0], pivot[..., 1])
        first = valid.argmax(axis=1)
        ok &= valid.any(axis=1)
        tails.append(tail[rows, first])
        pivots.append(pivot[rows, first])
        orientations.append(ids[rows, first])
        return ok, np.stack(tails, axis=1), np.stack(pivots, axis=1), np.stack(orientations, axis=1)

    def _stamp(self, masks: np.ndarray, frees: np.ndarray, rows: np.ndarray, sprite_ids: np.ndarray, centres: np.ndarray) -> None:
        """`_Occupancy.stamp` of one paddle per row: max into the mask (clipped to the image),
        min of the free sprite into the free layer (unclipped: its padding takes the overhang)."""
        n = self.n
        if rows.size == 0:
            return
        top = centres - self.reach  # image coordinates of the mask window
        ys, xs = top[:, 0, None] + self.grid, top[:, 1, None] + self.grid  # (A, s)
        in_image = (((ys >= 0) & (ys < n))[:, :, None] & ((xs >= 0) & (xs < n))[:, None, :]).reshape(len(rows), -1)
        side = masks.shape[1]
        index = (rows * side * side + (top[:, 0] + self.mask_pad) * side + top[:, 1] + self.mask_pad)[:, None] + self.mask_window
        flat = masks.reshape(-1)
        flat[index] = np.maximum(flat[index], self.masks_flat[sprite_ids] * in_image)
        side = frees.shape[1]
        top = centres - (self.reach + self.margin) + self.free_pad
        index = (rows * side * side + top[:, 0] * side + top[:, 1])[:, None] + self.free_window
        flat = frees.reshape(-1)
        flat[index] = np.minimum(flat[index], self.frees_flat[sprite_ids])

    def _extend(self, rng, masks, frees, rows, pivots, orientations):
        """`_Grower.extend` for each row: (ok, heads (A, 2), heading ids, paddle ids, new pivots)."""
        count = len(rows)
        new_pivots = np.ceil(pivots + self.ahead[orientations]).astype(np.int64)  # (A, 2)
        ring = new_pivots[:, None, :] + self.offsets  # (A, K, 2)
        inside = self._inside(ring[..., 0], ring[..., 1])
        side = frees.shape[1]
        flat = np.where(inside, (ring[..., 0] + self.free_pad) * side + ring[..., 1] + self.free_pad, 0)
        flat += rows[:, None] * (side * side)  # the padded corner (index 0 of a row) has no weight
        cumulative = (frees.reshape(-1)[flat] * self.weights[orientations]).cumsum(axis=1)  # (A, K)
        total = cumulative[:, -1]
        first_inside = inside.argmax(axis=1)
        chosen = np.zeros(count, dtype=np.int64)  # ring index of the accepted head
        ok = np.zeros(count, dtype=bool)
        pending = np.nonzero(total >= 1e-4)[0]
        side = masks.shape[1]
        mask_flat = masks.reshape(-1)
        for _ in range(self.p.max_paddle_retrial + 1):
            if pending.size == 0:
                break
            draws = rng.random(pending.size) * total[pending]
            index = (cumulative[pending] <= draws[:, None]).sum(axis=1)  # searchsorted right
            index = np.where(index == cumulative.shape[1], first_inside[pending], index)
            heads = new_pivots[pending] + self.offsets[index]  # (P, 2), in the image
            top = heads - self.reach + self.mask_pad
            window = mask_flat[(rows[pending] * side * side + top[:, 0] * side + top[:, 1])[:, None] + self.mask_window]
            peak = (window + self.masks_flat[self.head_paddle_ids[index]]).max(axis=1)
            clear = peak.astype(np.float64) < 1.8  # float64 compare, as `_Occupancy.collides`
            chosen[pending[clear]], ok[pending[clear]] = index[clear], True
            pending = pending[~clear]
        heads = new_pivots + self.offsets[chosen]
        return ok, heads, self.heading_ids[chosen], self.head_paddle_ids[chosen], new_pivots

    def run(self, rng: np.random.Generator, count: int) -> list[tuple]:
        """The successful attempts of `count`, in order: (paddle ids (2, C), centres (2, C, 2),
        collision state, origin tips, terminal tips) each."""
        contour = self.p.contour_length
        ok, tails, pivots, orientations = self._seed_pairs(rng, count)
        tails, pivots, orientations = tails[ok], pivots[ok], orientations[ok]  # canvases for seeded only
        count = len(tails)
        masks = np.repeat(self.empty_mask[None], count, axis=0)
        frees = np.repeat(self.empty_free[None], count, axis=0)
        paddle_ids = np.zeros((count, 2, contour), dtype=np.int64)
        centres = np.zeros((count, 2, contour, 2), dtype=np.int64)
        paddle_ids[:, :, 0], centres[:, :, 0] = orientations, tails  # seed paddles: own orientation
        rows = np.arange(count)
        for step in range(1, contour):
            for i in range(2):
                if rows.size == 0:
                    return []
                grown, heads, headings, paddles, new_pivots = self._extend(
                    rng, masks, frees, rows, pivots[rows, i], orientations[rows, i])
                rows = rows[grown]
                pivots[rows, i], orientations[rows, i] = new_pivots[grown], headings[grown]
                paddle_ids[rows, i, step], centres[rows, i, step] = paddles[grown], heads[grown]
                self._stamp(masks, frees, rows, paddle_ids[rows, i, step - 1], centres[rows, i, step - 1])
        if rows.size:
            # As the original: only the second snake's last paddle joins the mask before distractors.
            self._stamp(masks, frees, rows, paddle_ids[rows, 1, -1], centres[rows, 1, -1])
        pairs = []
        cut = self.extra  # back to the paddings `_Occupancy` uses
        for row in rows:
            occupancy = _Occupancy(
                masks[row, cut:masks.shape[1] - cut, cut:masks.shape[2] - cut].copy(),
                frees[row, cut:frees.shape[1] - cut, cut:frees.shape[2] - cut].copy(),
                self.reach, self.n,
            )
            tail_pair = [tuple(int(v) for v in centres[row, i, 0]) for i in range(2)]
            ends = [tuple(int(v) for v in centres[row, i, -1]) for i in range(2)]
            pairs.append((paddle_ids[row], centres[row], occupancy, tail_pair, ends))
        return pairs

    def draw(self, grower: "_Grower", pair: tuple) -> tuple:
        """Contrasts and snake images of one found pair, drawn as the original does:
        (per-snake images, collision state, origin tips, terminal tips)."""
        p, n, rng = self.p, self.n, grower.rng
        paddle_ids, centres, occupancy, tails, ends = pair
        contrasts = list(p.snake_contrasts) * 2
        rng.shuffle(contrasts)
        scales = [[grower.choose(p.paddle_contrasts) * contrasts[i]] for i in range(2)]
        for _ in range(p.contour_length - 1):
            paddle_contrast = grower.choose(p.paddle_contrasts)
            for i in range(2):
                scales[i].append(paddle_contrast * contrasts[i])
        images = [np.zeros((n, n), dtype=np.float32) for _ in range(2)]
        for i, image in enumerate(images):
            for j in range(p.contour_length):
                _stamp(image, self.paddles[paddle_ids[i, j]].line, (int(centres[i, j, 0]), int(centres[i, j, 1])), scales[i][j])
        return images, occupancy, tails, ends


@lru_cache(maxsize=None)
def _pair_search(params: SnakeParams, margin: int) -> _PairSearch:
    return _PairSearch(params, margin)


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


def generate_samples(params: SnakeParams, rng: np.random.Generator, count: int) -> list[Sample]:
    """`count` images and labels, as snakes2's from_wrapper loop makes them.

    Target pairs come from rounds of lockstep attempts (`_PairSearch`); the successes of a round
    serve the following images in order (one pool per margin).
    """
    pools: dict[int, list[tuple]] = {}
    tried: dict[int, list[int]] = {}  # margin -> [attempts, successes]
    samples: list[Sample] = []
    for _ in range(count):
        label = int(rng.integers(0, 2))
        margin = params.margins[int(rng.integers(0, len(params.margins)))]
        grower = _Grower(params, margin, rng)
        search = _pair_search(params, margin)
        pool, seen = pools.setdefault(margin, []), tried.setdefault(margin, [0, 0])
        while not pool:
            wanted = (count - len(samples)) * seen[0] // max(seen[1], 1) if seen[1] else ROUND_SIZES[0]
            size = min(max(wanted, ROUND_SIZES[0]), ROUND_SIZES[1])
            pool.extend(search.run(rng, size))
            seen[0], seen[1] = seen[0] + size, seen[1] + len(pool)
        samples.append(_finish(params, grower, label, margin, search.draw(grower, pool.pop(0))))
    return samples


def _finish(params: SnakeParams, grower: "_Grower", label: int, margin: int, pair: tuple) -> Sample:
    """Distractors, markers and the bytescaled image around one target pair."""
    rng = grower.rng
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
