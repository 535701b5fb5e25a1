"""What the toy images look like (:mod:`wsss.data.toy` writes them in the VOC/SBD layouts, :mod:`wsss.data.toy_coco`
in the COCO one): a world in which each step of the weakly-supervised methods has something to do.

* A dark, smooth background of muted colours with grain.
* 1 or 2 objects with background between them, each a bright, near-grey elliptical body with faint stripes,
  the same for every class but for a barely visible tint of its class colour (saturation <= 0.05), carrying a
  part disc (radius 0.45 of the body's small radius, halfway to its rim) whose saturated colour and pattern
  identify the class.

So a classifier tells the classes apart by the part, and its CAMs peak there and fade over the body (partial
CAMs, as on photos); the body is one region in appearance, distinct from the background, so that a CRF or learned
affinities can carry the label from the part to the whole object. Body radii are 0.22..0.34 of the image's short
side: at 112 px, objects span 5 to 9 cells of a stride-8 grid. Measurements behind these choices (each ablated on
the demo's recipes) are in ``benchmarks/README.md`` (``toy_ablations.py``).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

NUM_CLASSES = 20  # part colours: one per VOC class (the COCO toy's 80 classes reuse them with other patterns)
BODY_TINT = (0.0, 0.05)  # saturation range of the body's class tint
BODY_VALUE = (0.6, 0.9)  # brightness range of the bodies ...
BACKGROUND_LEVELS = (25, 110)  # ... on a background of these grey levels
BODY_RADII = (0.22, 0.34)  # body radii as fractions of the image's short side
PART_RADIUS = 0.45  # part radius as a fraction of the body's small radius
OBJECTS = (1, 2)  # objects per image, inclusive range
GAP = 0.05  # at least this much background between two bodies, as a fraction of the image's short side


@dataclass(frozen=True)
class ToyObject:
    """One drawn object: 0-based class, body ellipse (centre, radii) and part disc (centre, radius), in pixels."""

    cls: int
    cy: float
    cx: float
    ry: float
    rx: float
    py: float
    px: float
    pr: float


class _ClassCycle:
    """Hands out classes from successive seeded permutations of ``pool`` (default ``range(num_classes)``), evenly."""

    def __init__(self, rng: np.random.Generator, num_classes: int = NUM_CLASSES, pool: Optional[Sequence[int]] = None):
        self.rng, self.queue = rng, []
        self.pool = list(range(num_classes) if pool is None else pool)

    def take(self, n: int) -> list[int]:
        """``n`` distinct classes (at most the pool's size)."""
        out: list[int] = []
        n = min(n, len(self.pool))
        while len(out) < n:
            if not self.queue:
                self.queue = [self.pool[int(i)] for i in self.rng.permutation(len(self.pool))]
            c = self.queue.pop()
            if c not in out:
                out.append(c)
            else:
                self.queue.insert(0, c)
        return out


def _part_colours() -> np.ndarray:
    """(20, 3) float: one saturated colour per class, hues round the wheel (class ``c`` at step ``7c mod 20``)."""
    hues = (np.arange(NUM_CLASSES) * 7 % NUM_CLASSES) / NUM_CLASSES
    return np.array([colorsys.hsv_to_rgb(h, 0.9, 0.95) for h in hues]) * 255.0


PART_COLOURS = _part_colours()
# Classes in drawing order: the first 2 have part hues 180 degrees apart, the first 4 90 degrees apart (each
# with its own pattern), so that the +-36 degrees of the references' hue jitter never turn one into another.
_HUE_STEPS = (0, 10, 5, 15, 2, 12, 7, 17, 4, 14, 9, 19, 1, 11, 6, 16, 3, 13, 8, 18)
DRAW_ORDER = tuple(3 * h % NUM_CLASSES for h in _HUE_STEPS)  # 3 * 7 = 1 (mod 20): the class at hue step h


def _draw_image(rng: np.random.Generator, size: int, cycle: _ClassCycle) -> tuple[np.ndarray, list[ToyObject]]:
    """One image: uint8 (H, W, 3) and its objects (drawn in order, later ones on top)."""
    short = int(rng.integers(int(0.75 * size), size + 1))
    h, w = (short, size) if rng.random() < 0.7 else (size, short)
    low = rng.uniform(*BACKGROUND_LEVELS, size=(3, 3, 3))
    low = 0.15 * low + 0.85 * low.mean(axis=2, keepdims=True)  # muted colours: the saturated parts stand out
    image = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32)
    image += rng.normal(0, 6, size=image.shape)
    objects = _place_objects(rng, h, w, cycle.take(int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for obj in objects:
        body = _ellipse(yy, xx, obj.cy, obj.cx, obj.ry, obj.rx)
        hue = colorsys.rgb_to_hsv(*(PART_COLOURS[obj.cls % NUM_CLASSES] / 255.0))[0]
        base = 255.0 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(*BODY_TINT), rng.uniform(*BODY_VALUE)))
        stripes = 12 * np.sin(xx[body] * 0.7 + yy[body] * 0.4 + rng.uniform(0, 6.3))
        image[body] = base[None, :] + (stripes + rng.normal(0, 6, size=int(body.sum())))[:, None]
        part = (yy - obj.py) ** 2 + (xx - obj.px) ** 2 <= obj.pr ** 2
        image[part] = _part_texture(obj.cls, yy[part], xx[part])
    return np.clip(image, 0, 255).astype(np.uint8), objects


def _part_texture(cls: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """(N, 3) colours of a class's part: its colour in one of four patterns (solid, stripes, checker, dots).

    Classes past the 20 colours (the COCO toy's 80) reuse them with the pattern shifted: 80 distinct parts.
    """
    colour = PART_COLOURS[cls % NUM_CLASSES]
    pattern = (cls + cls // NUM_CLASSES) % 4
    if pattern == 0:
        on = np.ones(yy.shape, bool)
    elif pattern == 1:
        on = (yy.astype(int) // 2) % 2 == 0
    elif pattern == 2:
        on = ((yy.astype(int) // 2) + (xx.astype(int) // 2)) % 2 == 0
    else:
        on = ((yy.astype(int) % 3) != 0) | ((xx.astype(int) % 3) != 0)
    return np.where(on[:, None], colour[None, :], 0.35 * colour[None, :])


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Bool mask of the pixels (``yy``, ``xx`` grids) inside an ellipse."""
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _place_objects(rng: np.random.Generator, h: int, w: int, classes: list[int]) -> list[ToyObject]:
    """Ellipses with background between them (rejection sampling, shrinking the body after each failed try; an
    object that finds no room in 30 tries is left out), each with a part disc inside, halfway to its rim."""
    m = min(h, w)
    gap = GAP * m
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    taken = np.zeros((h, w), bool)
    objects: list[ToyObject] = []
    for cls in classes:
        for attempt in range(30):
            ry, rx = rng.uniform(*BODY_RADII, size=2) * m * 0.98 ** attempt  # smaller and smaller until it fits
            cy, cx = rng.uniform(ry, h - ry), rng.uniform(rx, w - rx)
            if not (taken & _ellipse(yy, xx, cy, cx, ry + gap, rx + gap)).any():
                break
        else:
            continue
        taken |= _ellipse(yy, xx, cy, cx, ry, rx)
        angle = rng.uniform(0, 2 * np.pi)
        pr = max(2.0, PART_RADIUS * min(ry, rx))
        py, px = cy + 0.5 * ry * np.sin(angle), cx + 0.5 * rx * np.cos(angle)
        objects.append(ToyObject(cls, cy, cx, ry, rx, py, px, pr))
    return objects


def _label_maps(h: int, w: int, objects: list[ToyObject]) -> tuple[np.ndarray, np.ndarray]:
    """(class map 0..20, instance map 0..n), both uint8 (H, W), later objects on top."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    classes = np.zeros((h, w), np.uint8)
    instances = np.zeros((h, w), np.uint8)
    for n, obj in enumerate(objects, start=1):
        part = (yy - obj.py) ** 2 + (xx - obj.px) ** 2 <= obj.pr ** 2
        shape = _ellipse(yy, xx, obj.cy, obj.cx, obj.ry, obj.rx) | part
        classes[shape] = obj.cls + 1
        instances[shape] = n
    return classes, instances
