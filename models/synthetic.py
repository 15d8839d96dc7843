"""Synthetic kitchen scenes: a seeded renderer of drawn kitchens, workers and rodents with exact boxes.

The starter detector is trained on these scenes and the demo video is rendered from them, so the demo
shows real detections without shipping any photographs. Only numpy and OpenCV are used, so the runtime
service can render the demo clip without training dependencies.

Every drawn thing gets a draw sequence number. A labelled box is reduced to the part that nothing drawn
later covers (counters, other workers, crates); mostly covered objects are not labelled at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

# The class contract shared by the dataset, the starter model card and the demo rules. Keep the order.
CLASSES: list[str] = [
    "person",
    "head_hat",
    "head_bare",
    "face_mask",
    "face_nomask",
    "hand_glove",
    "hand_bare",
    "cigarette",
    "rodent",
    "phone",
]
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

Color = tuple[int, int, int]  # BGR
Point = tuple[float, float]
Rect = tuple[float, float, float, float]  # x1, y1, x2, y2
LabelBox = tuple[int, float, float, float, float]  # class_id, x1, y1, x2, y2 in image pixels

# Training images are rendered at twice the starter model's 320 px input, so thin things stay smooth.
DATASET_SIZE = (640, 360)

SKIN_TONES: list[Color] = [
    (185, 205, 240),
    (160, 185, 228),
    (130, 165, 215),
    (105, 140, 190),
    (75, 105, 155),
    (50, 75, 115),
]
HAIR_COLOURS: list[Color] = [(25, 25, 30), (30, 40, 60), (40, 60, 95), (90, 100, 110), (95, 150, 190)]
GLOVE_COLOURS: list[Color] = [
    (205, 140, 50),
    (225, 175, 100),
    (175, 80, 135),
    (150, 70, 110),
    (238, 236, 228),
    (45, 45, 50),
]
COAT_COLOURS: list[Color] = [
    (242, 242, 240),
    (235, 238, 240),
    (228, 230, 226),
    (215, 190, 160),
    (60, 60, 65),
    (170, 170, 175),
]
HAT_COLOURS: list[Color] = [(248, 248, 248), (238, 240, 242), (230, 200, 170), (220, 225, 200)]
MASK_COLOURS: list[Color] = [(235, 205, 160), (245, 245, 245), (235, 225, 210), (50, 50, 55), (200, 220, 200)]
TROUSER_COLOURS: list[Color] = [(40, 40, 45), (70, 60, 50), (110, 110, 115), (235, 235, 235), (90, 70, 40)]
RODENT_COLOURS: list[Color] = [(105, 108, 112), (55, 80, 110), (60, 62, 66), (85, 100, 120)]


# ---------------------------------------------------------------------------------------------------
# Scene bookkeeping: labels, person parts and occluders in draw order
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Item:
    seq: int
    rect: Rect
    class_id: int  # -1 for a part of a person that only contributes to the person box
    person: int  # person index, or -1


@dataclass
class Canvas:
    """An image being drawn plus what was drawn where, in order."""

    img: np.ndarray
    items: list[_Item] = field(default_factory=list)
    occluders: list[tuple[int, Rect, int]] = field(default_factory=list)  # seq, rect, person or -1
    seq: int = 0
    persons: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return self.img.shape[1], self.img.shape[0]

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def label(self, class_name: str, rect: Rect, person: int = -1) -> None:
        self.items.append(_Item(self._next(), rect, CLASS_ID[class_name], person))

    def part(self, person: int, rect: Rect) -> None:
        """A drawn piece of a person (torso, arm...) that counts towards the person box."""
        self.items.append(_Item(self._next(), rect, -1, person))

    def occlude(self, rect: Rect, person: int = -1) -> None:
        """Something drawn that hides what was drawn before it; a person never hides their own parts."""
        self.occluders.append((self._next(), rect, person))

    def new_person(self) -> int:
        self.persons += 1
        return self.persons - 1

    def boxes(self, min_visible: float = 0.45) -> list[LabelBox]:
        """Visible boxes: each box minus later occluders, clipped to the image."""
        w, h = self.size
        out: list[LabelBox] = []
        person_rects: dict[int, list[Rect]] = {}
        person_area: dict[int, tuple[float, float]] = {}
        labelled_part: set[int] = set()  # persons with a labelled head, face or hand in view
        for item in self.items:
            visible = _visible_part(item, self.occluders, w, h)
            if item.person >= 0:
                full, seen = person_area.get(item.person, (0.0, 0.0))
                area = _area(item.rect)
                person_area[item.person] = (full + area, seen + (visible[1] * area if visible else 0.0))
                if visible is not None:
                    person_rects.setdefault(item.person, []).append(visible[0])
            if item.class_id < 0 or visible is None:
                continue
            rect, fraction = visible
            if fraction >= min_visible and min(rect[2] - rect[0], rect[3] - rect[1]) >= 2.0:
                out.append((item.class_id, *rect))
                if item.person >= 0:
                    labelled_part.add(item.person)
        for person, rects in sorted(person_rects.items()):
            full, seen = person_area[person]
            # A person mostly out of view is still a person when one of their labelled parts shows.
            if person not in labelled_part and (full <= 0 or seen / full < 0.2):
                continue
            x1 = min(r[0] for r in rects)
            y1 = min(r[1] for r in rects)
            x2 = max(r[2] for r in rects)
            y2 = max(r[3] for r in rects)
            if min(x2 - x1, y2 - y1) >= 4.0:
                out.append((CLASS_ID["person"], x1, y1, x2, y2))
        out.sort(key=lambda b: (b[0], b[1], b[2]))
        return out


def _area(r: Rect) -> float:
    return max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])


def _visible_part(item: _Item, occluders: list[tuple[int, Rect, int]], w: int, h: int) -> tuple[Rect, float] | None:
    """The tight rectangle around the uncovered, in-image part of a box, and the fraction it keeps."""
    x1, y1, x2, y2 = item.rect
    if _area(item.rect) <= 0:
        return None
    # A coarse grid over the box is exact enough for labels and cheap.
    nx = max(2, min(24, int(x2 - x1)))
    ny = max(2, min(24, int(y2 - y1)))
    xs = x1 + (np.arange(nx) + 0.5) * (x2 - x1) / nx
    ys = y1 + (np.arange(ny) + 0.5) * (y2 - y1) / ny
    seen = np.ones((ny, nx), dtype=bool)
    seen &= ((xs >= 0) & (xs < w))[None, :]
    seen &= ((ys >= 0) & (ys < h))[:, None]
    for seq, (ox1, oy1, ox2, oy2), owner in occluders:
        if seq <= item.seq or (owner >= 0 and owner == item.person) or ox1 >= x2 or ox2 <= x1 or oy1 >= y2 or oy2 <= y1:
            continue
        seen &= ~(((ys >= oy1) & (ys < oy2))[:, None] & ((xs >= ox1) & (xs < ox2))[None, :])
    if not seen.any():
        return None
    rows = np.flatnonzero(seen.any(axis=1))
    cols = np.flatnonzero(seen.any(axis=0))
    cw, ch = (x2 - x1) / nx, (y2 - y1) / ny
    rect = (
        max(0.0, float(x1 + cols[0] * cw)),
        max(0.0, float(y1 + rows[0] * ch)),
        min(float(w), float(x1 + (cols[-1] + 1) * cw)),
        min(float(h), float(y1 + (rows[-1] + 1) * ch)),
    )
    return rect, float(seen.mean())


# ---------------------------------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------------------------------


def _p(pt: Point) -> tuple[int, int]:
    return int(round(pt[0])), int(round(pt[1]))


def _shade(c: Color, f: float) -> Color:
    return tuple(int(np.clip(v * f, 0, 255)) for v in c)  # type: ignore[return-value]


def _jitter(rng: np.random.Generator, c: Color, amount: int = 12) -> Color:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in c)  # type: ignore


def _pick(rng: np.random.Generator, options: list[Color]) -> Color:
    return options[int(rng.integers(len(options)))]


def _ellipse(
    img: np.ndarray,
    centre: Point,
    axes: Point,
    colour: Color,
    angle: float = 0.0,
    start: float = 0.0,
    end: float = 360.0,
    thickness: int = -1,
) -> Rect:
    cv2.ellipse(
        img,
        _p(centre),
        (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))),
        angle,
        start,
        end,
        colour,
        thickness,
        cv2.LINE_AA,
    )
    r = max(axes) if angle else 0.0
    ax, ay = (r, r) if angle else axes
    return centre[0] - ax, centre[1] - ay, centre[0] + ax, centre[1] + ay


def _poly(img: np.ndarray, pts: list[Point], colour: Color) -> Rect:
    arr = np.array([_p(q) for q in pts], dtype=np.int32)
    cv2.fillPoly(img, [arr], colour, cv2.LINE_AA)
    return float(arr[:, 0].min()), float(arr[:, 1].min()), float(arr[:, 0].max()), float(arr[:, 1].max())


def _line(img: np.ndarray, a: Point, b: Point, colour: Color, thickness: float) -> Rect:
    t = max(1, int(round(thickness)))
    cv2.line(img, _p(a), _p(b), colour, t, cv2.LINE_AA)
    r = t / 2
    return min(a[0], b[0]) - r, min(a[1], b[1]) - r, max(a[0], b[0]) + r, max(a[1], b[1]) + r


def _rect(img: np.ndarray, r: Rect, colour: Color) -> Rect:
    cv2.rectangle(img, _p(r[:2]), _p(r[2:]), colour, -1)
    return r


def _union(*rects: Rect) -> Rect:
    return min(r[0] for r in rects), min(r[1] for r in rects), max(r[2] for r in rects), max(r[3] for r in rects)


# ---------------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------------


@dataclass
class Look:
    """What a worker wears and does; the pose says where."""

    skin: Color
    coat: Color
    trousers: Color
    hair: Color
    hair_style: str = "short"  # short | long | bald
    hat: str | None = "toque"  # toque | cap | None
    hat_colour: Color = (245, 245, 245)
    hat_height: float = 0.7  # toque height, in head heights
    mask: Color | None = None
    gloves: Color | None = None
    short_sleeves: bool = False
    apron: Color | None = None
    cigarette: bool = False
    smoke: bool = True
    phone: str | None = None  # chest | ear | None
    phone_colour: Color = (30, 30, 30)


@dataclass
class Pose:
    """Where a worker is: head position and size, hand targets, and how much of the body shows."""

    x: float  # centre of the head
    top: float  # top of the skull (a hat sits above it)
    head: float  # head height in pixels; the whole figure is about 7 heads tall
    left_hand: Point  # the hand on the image's left
    right_hand: Point
    legs: bool = True
    stride: float = 0.0  # -1..1, leg swing when walking


def random_look(rng: np.random.Generator) -> Look:
    hat = rng.choice(["toque", "cap", None], p=[0.38, 0.22, 0.40])
    smoking = bool(rng.random() < 0.2)
    phone = rng.choice(["chest", "ear", None], p=[0.15, 0.07, 0.78])
    return Look(
        skin=_jitter(rng, _pick(rng, SKIN_TONES), 10),
        coat=_jitter(rng, _pick(rng, COAT_COLOURS), 8),
        trousers=_jitter(rng, _pick(rng, TROUSER_COLOURS), 10),
        hair=_jitter(rng, _pick(rng, HAIR_COLOURS), 8),
        hair_style=str(rng.choice(["short", "long", "bald"], p=[0.65, 0.28, 0.07])),
        hat=None if hat is None else str(hat),
        hat_colour=_jitter(rng, _pick(rng, HAT_COLOURS), 6),
        hat_height=float(rng.uniform(0.35, 1.0)),
        mask=None if (smoking or rng.random() < 0.45) else _jitter(rng, _pick(rng, MASK_COLOURS), 10),
        gloves=None if rng.random() < 0.5 else _jitter(rng, _pick(rng, GLOVE_COLOURS), 12),
        short_sleeves=bool(rng.random() < 0.3),
        apron=None if rng.random() < 0.6 else _jitter(rng, _pick(rng, COAT_COLOURS + [(60, 90, 140)]), 10),
        cigarette=smoking,
        smoke=bool(rng.random() < 0.7),
        phone=None if (phone is None or smoking) else str(phone),
        phone_colour=_jitter(
            rng, _pick(rng, [(25, 25, 28), (40, 40, 45), (190, 190, 195), (140, 90, 40), (120, 170, 200)]), 8
        ),
    )


def _draw_head(cv: Canvas, look: Look, pose: Pose, person: int) -> None:
    img, x, top, H = cv.img, pose.x, pose.top, pose.head
    if look.hair_style == "long" and look.hat is None:
        cv.part(person, _rect(img, (x - 0.46 * H, top + 0.25 * H, x + 0.46 * H, top + 1.35 * H), look.hair))
    _rect(img, (x - 0.15 * H, top + 0.8 * H, x + 0.15 * H, top + 1.2 * H), _shade(look.skin, 0.9))  # neck
    for side in (-1, 1):
        _ellipse(img, (x + side * 0.4 * H, top + 0.52 * H), (0.08 * H, 0.13 * H), _shade(look.skin, 0.93))
    head = _ellipse(img, (x, top + 0.5 * H), (0.4 * H, 0.5 * H), look.skin)
    head = (x - 0.48 * H, head[1], x + 0.48 * H, head[3])
    if look.hat is None and look.hair_style != "bald":
        _ellipse(img, (x, top + 0.44 * H), (0.43 * H, 0.46 * H), look.hair, start=180, end=360)
        _poly(
            img,
            [
                (x - 0.42 * H, top + 0.42 * H),
                (x - 0.25 * H, top + 0.24 * H),
                (x + 0.3 * H, top + 0.27 * H),
                (x + 0.42 * H, top + 0.42 * H),
                (x + 0.4 * H, top + 0.2 * H),
                (x - 0.4 * H, top + 0.2 * H),
            ],
            look.hair,
        )
    elif look.hair_style == "bald" and look.hat is None:
        _ellipse(img, (x - 0.12 * H, top + 0.15 * H), (0.12 * H, 0.06 * H), _shade(look.skin, 1.12))
    # Face: brows, eyes, nose, mouth.
    dark = _shade(look.skin, 0.45)
    for side in (-1, 1):
        _line(
            img,
            (x + side * 0.24 * H, top + 0.4 * H),
            (x + side * 0.08 * H, top + 0.41 * H),
            _shade(look.hair, 0.9),
            max(1.0, 0.04 * H),
        )
        _ellipse(img, (x + side * 0.16 * H, top + 0.49 * H), (0.055 * H, 0.035 * H), (245, 245, 245))
        _ellipse(img, (x + side * 0.16 * H, top + 0.49 * H), (0.03 * H, 0.03 * H), (35, 30, 30))
    _line(img, (x, top + 0.52 * H), (x - 0.03 * H, top + 0.66 * H), _shade(look.skin, 0.78), max(1.0, 0.035 * H))
    face = (x - 0.38 * H, top + 0.3 * H, x + 0.38 * H, top + 1.0 * H)
    if look.mask is None:
        _line(img, (x - 0.1 * H, top + 0.8 * H), (x + 0.1 * H, top + 0.8 * H), _shade(dark, 1.2), max(1.0, 0.04 * H))
    else:
        mask = look.mask
        _poly(
            img,
            [
                (x - 0.39 * H, top + 0.57 * H),
                (x + 0.39 * H, top + 0.57 * H),
                (x + 0.37 * H, top + 0.82 * H),
                (x + 0.16 * H, top + 0.98 * H),
                (x - 0.16 * H, top + 0.98 * H),
                (x - 0.37 * H, top + 0.82 * H),
            ],
            mask,
        )
        for k in (0.68, 0.78):
            _line(img, (x - 0.33 * H, top + k * H), (x + 0.33 * H, top + k * H), _shade(mask, 0.85), max(1.0, 0.02 * H))
        for side in (-1, 1):
            _line(
                img,
                (x + side * 0.39 * H, top + 0.6 * H),
                (x + side * 0.43 * H, top + 0.47 * H),
                _shade(mask, 0.9),
                max(1.0, 0.025 * H),
            )
    hat_rect: Rect | None = None
    if look.hat == "toque":
        hh = look.hat_height * H
        band = _rect(img, (x - 0.44 * H, top - 0.06 * H, x + 0.44 * H, top + 0.26 * H), look.hat_colour)
        puff = _ellipse(img, (x, top - 0.06 * H - 0.45 * hh), (0.52 * H, 0.45 * hh + 0.08 * H), look.hat_colour)
        edge = _shade(look.hat_colour, 0.82)
        for k in (-0.3, -0.1, 0.1, 0.3):
            _line(
                img, (x + k * H, top - 0.04 * H), (x + k * 1.2 * H, top - 0.02 * H - 0.8 * hh), edge, max(1.0, 0.02 * H)
            )
        _line(img, (x - 0.44 * H, top - 0.06 * H), (x + 0.44 * H, top - 0.06 * H), edge, max(1.0, 0.025 * H))
        hat_rect = _union(band, puff)
    elif look.hat == "cap":
        cap = _ellipse(img, (x, top + 0.3 * H), (0.5 * H, 0.4 * H), look.hat_colour, start=180, end=360)
        edge = _shade(look.hat_colour, 0.8)
        _line(img, (x - 0.5 * H, top + 0.3 * H), (x + 0.5 * H, top + 0.3 * H), edge, max(1.0, 0.04 * H))
        for k in (-0.25, 0.0, 0.25):
            _line(img, (x + k * H, top + 0.0 * H), (x + k * 1.3 * H, top + 0.26 * H), edge, max(1.0, 0.02 * H))
        hat_rect = (cap[0], cap[1], cap[2], top + 0.34 * H)
    head_box = head if hat_rect is None else _union(head, hat_rect)
    cv.label("head_bare" if look.hat is None else "head_hat", head_box, person)
    cv.label("face_nomask" if look.mask is None else "face_mask", face, person)
    if look.cigarette:
        _draw_cigarette(cv, (x + 0.06 * H, top + 0.8 * H), H, person)
    cv.occlude((x - 0.36 * H, top + 0.1 * H, x + 0.36 * H, top + 0.95 * H), person)


def _draw_cigarette(cv: Canvas, mouth: Point, H: float, person: int) -> None:
    img = cv.img
    angle = math.radians(18 + 15 * math.sin(cv.seq * 1.7))  # varied without extra randomness
    length, thick = 0.55 * H, max(2.0, 0.1 * H)
    end = (mouth[0] + length * math.cos(angle), mouth[1] + length * math.sin(angle))
    tip_start = (mouth[0] + 0.8 * length * math.cos(angle), mouth[1] + 0.8 * length * math.sin(angle))
    stick = _line(img, mouth, tip_start, (238, 240, 242), thick)
    tip = _line(img, tip_start, end, (40, 110, 235), thick)
    _ellipse(img, end, (thick * 0.45, thick * 0.45), (90, 200, 255))
    cv.label("cigarette", _union(stick, tip), person)


def _draw_smoke(img: np.ndarray, origin: Point, H: float, phase: float) -> None:
    """Translucent puffs above the cigarette tip, blended only inside their own small rectangle."""
    x0, y0 = int(origin[0] - 0.5 * H), int(origin[1] - 1.2 * H)
    x1, y1 = int(origin[0] + 0.5 * H), int(origin[1])
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(img.shape[1], x1), min(img.shape[0], y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    roi = img[y0:y1, x0:x1]
    layer = roi.copy()
    for k in range(4):
        t = (phase + k / 4) % 1.0
        cx = origin[0] - x0 + 0.15 * H * math.sin(6.0 * t + k)
        cy = origin[1] - y0 - t * 1.1 * H
        _ellipse(layer, (cx, cy), (0.08 * H + 0.15 * H * t, 0.07 * H + 0.12 * H * t), (205, 205, 210))
    cv2.addWeighted(layer, 0.45, roi, 0.55, 0, dst=roi)


def _draw_body(cv: Canvas, look: Look, pose: Pose, person: int) -> None:
    """Legs, torso and head; arms are drawn separately so that counters can sit between them."""
    img, x, top, H = cv.img, pose.x, pose.top, pose.head
    waist = top + 3.7 * H
    if pose.legs:
        feet = top + 6.9 * H
        for side in (-1, 1):
            hip = (x + side * 0.3 * H, waist - 0.1 * H)
            foot = (x + side * 0.3 * H + side * pose.stride * 0.45 * H, feet)
            leg = _line(img, hip, foot, look.trousers, 0.5 * H)
            shoe = _ellipse(img, (foot[0] + 0.08 * H * side, feet + 0.05 * H), (0.26 * H, 0.12 * H), (25, 25, 25))
            cv.part(person, _union(leg, shoe))
        cv.occlude((x - 0.5 * H, waist + 0.3 * H, x + 0.5 * H, feet - 0.2 * H), person)
    ys = top + 1.12 * H
    coat = look.coat
    torso = _poly(
        img,
        [
            (x - 0.5 * H, ys - 0.05 * H),
            (x - 0.95 * H, ys + 0.12 * H),
            (x - 0.98 * H, ys + 0.6 * H),
            (x - 0.85 * H, waist + 0.3 * H),
            (x + 0.85 * H, waist + 0.3 * H),
            (x + 0.98 * H, ys + 0.6 * H),
            (x + 0.95 * H, ys + 0.12 * H),
            (x + 0.5 * H, ys - 0.05 * H),
        ],
        coat,
    )
    edge = _shade(coat, 0.78)
    _line(img, (x - 0.3 * H, ys - 0.02 * H), (x, ys + 0.45 * H), edge, max(1.0, 0.04 * H))
    _line(img, (x + 0.3 * H, ys - 0.02 * H), (x, ys + 0.45 * H), edge, max(1.0, 0.04 * H))
    _line(img, (x, ys + 0.45 * H), (x, waist + 0.25 * H), edge, max(1.0, 0.03 * H))
    for row in range(3):
        for side in (-1, 1):
            _ellipse(img, (x + side * 0.22 * H, ys + (0.7 + 0.6 * row) * H), (0.045 * H, 0.045 * H), edge)
    if look.apron is not None:
        _rect(img, (x - 0.62 * H, ys + 1.0 * H, x + 0.62 * H, waist + 1.2 * H), look.apron)
        _line(img, (x - 0.62 * H, ys + 1.0 * H), (x - 0.3 * H, ys - 0.02 * H), look.apron, max(1.0, 0.05 * H))
        _line(img, (x + 0.62 * H, ys + 1.0 * H), (x + 0.3 * H, ys - 0.02 * H), look.apron, max(1.0, 0.05 * H))
        torso = _union(torso, (x - 0.62 * H, ys, x + 0.62 * H, waist + 1.2 * H))
    cv.part(person, torso)
    cv.occlude((x - 0.8 * H, ys + 0.2 * H, x + 0.8 * H, waist + 0.1 * H), person)
    _draw_head(cv, look, pose, person)


def _elbow(shoulder: Point, hand: Point, upper: float, fore: float, outward: int) -> Point:
    dx, dy = hand[0] - shoulder[0], hand[1] - shoulder[1]
    d = min(max(math.hypot(dx, dy), 1e-3), upper + fore - 1e-3)
    cos_a = (upper * upper + d * d - fore * fore) / (2 * upper * d)
    a = math.acos(max(-1.0, min(1.0, cos_a)))
    base = math.atan2(dy, dx)
    options = [
        (shoulder[0] + upper * math.cos(base + s * a), shoulder[1] + upper * math.sin(base + s * a)) for s in (1, -1)
    ]
    # Elbows bend outwards from the body and downwards, as a person's do.
    return max(options, key=lambda e: outward * e[0] + 0.5 * e[1])


def _draw_arms(cv: Canvas, look: Look, pose: Pose, person: int) -> None:
    img, x, top, H = cv.img, pose.x, pose.top, pose.head
    ys = top + 1.12 * H
    for side, hand in ((-1, pose.left_hand), (1, pose.right_hand)):
        shoulder = (x + side * 0.78 * H, ys + 0.25 * H)
        elbow = _elbow(shoulder, hand, 1.35 * H, 1.3 * H, side)
        ux, uy = hand[0] - elbow[0], hand[1] - elbow[1]
        n = math.hypot(ux, uy) or 1.0
        ux, uy = ux / n, uy / n
        wrist = (hand[0] - 0.2 * H * ux, hand[1] - 0.2 * H * uy)
        upper = _line(img, shoulder, elbow, look.coat, 0.38 * H)
        if look.short_sleeves:
            fore = _line(img, elbow, wrist, _shade(look.skin, 0.95), 0.24 * H)
            cuff = (elbow[0] - 0.25 * (elbow[0] - shoulder[0]), elbow[1] - 0.25 * (elbow[1] - shoulder[1]))
            _line(img, shoulder, cuff, look.coat, 0.4 * H)
        else:
            fore = _line(img, elbow, wrist, _shade(look.coat, 0.96), 0.32 * H)
        cv.part(person, _union(upper, fore))
        holds_phone = side == 1 and look.phone is not None
        if holds_phone:
            _draw_phone(cv, look, pose, hand, person)
        _draw_hand(cv, look, hand, (ux, uy), H, person)


def _draw_phone(cv: Canvas, look: Look, pose: Pose, hand: Point, person: int) -> None:
    img, H = cv.img, pose.head
    if look.phone == "ear":
        w, h = 0.2 * H, 0.55 * H
        cx, cy = hand[0], hand[1] - 0.3 * H
    else:
        w, h = 0.36 * H, 0.62 * H
        cx, cy = hand[0], hand[1] - 0.28 * H
    r = _rect(img, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), look.phone_colour)
    inner = _shade(look.phone_colour, 1.35 if sum(look.phone_colour) < 300 else 0.8)
    cv2.rectangle(img, _p((r[0] + 1, r[1] + 1)), _p((r[2] - 1, r[3] - 1)), inner, max(1, int(0.025 * H)), cv2.LINE_AA)
    _ellipse(img, (r[0] + 0.28 * w, r[1] + 0.15 * h), (0.06 * H, 0.06 * H), (20, 20, 20))
    cv.label("phone", r, person)


def _draw_hand(cv: Canvas, look: Look, hand: Point, u: Point, H: float, person: int) -> None:
    img = cv.img
    colour = look.gloves if look.gloves is not None else look.skin
    ux, uy = u
    px, py = -uy, ux  # across the hand
    if look.gloves is not None:
        _line(
            img,
            (hand[0] - 0.3 * H * ux, hand[1] - 0.3 * H * uy),
            (hand[0] - 0.12 * H * ux, hand[1] - 0.12 * H * uy),
            _shade(colour, 0.88),
            0.3 * H,
        )
    angle = math.degrees(math.atan2(uy, ux))
    rects = [_ellipse(img, hand, (0.21 * H, 0.17 * H), colour, angle=angle)]
    finger = max(1.0, 0.075 * H)
    gap = _shade(colour, 0.72)
    for k in (-0.11, -0.04, 0.03, 0.1):
        a = (hand[0] + 0.1 * H * ux + k * H * px, hand[1] + 0.1 * H * uy + k * H * py)
        b = (hand[0] + 0.33 * H * ux + k * 1.1 * H * px, hand[1] + 0.33 * H * uy + k * 1.1 * H * py)
        rects.append(_line(img, a, b, colour, finger))
    thumb_a = (hand[0] + 0.12 * H * px, hand[1] + 0.12 * H * py)
    thumb_b = (hand[0] + 0.28 * H * px + 0.12 * H * ux, hand[1] + 0.28 * H * py + 0.12 * H * uy)
    rects.append(_line(img, thumb_a, thumb_b, colour, finger))
    for k in (-0.075, -0.005, 0.065):
        a = (hand[0] + 0.14 * H * ux + k * H * px, hand[1] + 0.14 * H * uy + k * H * py)
        b = (hand[0] + 0.3 * H * ux + k * 1.1 * H * px, hand[1] + 0.3 * H * uy + k * 1.1 * H * py)
        _line(img, a, b, gap, 1)
    box = _union(*rects)
    cv.label("hand_glove" if look.gloves is not None else "hand_bare", box, person)


def draw_worker(cv: Canvas, look: Look, pose: Pose, smoke_phase: float | None = None) -> int:
    """Draws one whole worker with nothing between body and arms (scenes with counters draw the counter
    between `_draw_body` and `_draw_arms`); returns the person index."""
    person = cv.new_person()
    _draw_body(cv, look, pose, person)
    _draw_arms(cv, look, pose, person)
    if look.cigarette and look.smoke:
        _draw_smoke(
            cv.img,
            (pose.x + 0.58 * pose.head, pose.top + 0.9 * pose.head),
            pose.head,
            smoke_phase if smoke_phase is not None else (cv.seq * 0.37) % 1.0,
        )
    return person


# ---------------------------------------------------------------------------------------------------
# Rodents
# ---------------------------------------------------------------------------------------------------


def draw_rodent(
    cv: Canvas, x: float, ground: float, length: float, facing: int, colour: Color, phase: float = 0.0
) -> None:
    """A rat or mouse standing on `ground`; `x` is the body centre, `facing` -1 (left) or 1 (right)."""
    img, L, f = cv.img, length, facing
    cy = ground - 0.2 * L
    tail_pts = []
    for k in range(9):
        s = k / 8
        tail_pts.append(
            (x - f * (0.42 * L + 0.9 * L * s), cy + 0.05 * L + 0.12 * L * math.sin(3.5 * s + phase) + 0.1 * L * s)
        )
    cv2.polylines(
        img,
        [np.array([_p(q) for q in tail_pts], dtype=np.int32)],
        False,
        (140, 140, 170),
        max(1, int(0.035 * L)),
        cv2.LINE_AA,
    )
    for k, dx in enumerate((-0.25, 0.22)):
        swing = 0.05 * L * math.sin(phase * 2 + k * math.pi)
        _ellipse(img, (x + f * dx * L + swing, ground - 0.03 * L), (0.06 * L, 0.03 * L), (120, 120, 160))
    body = _ellipse(img, (x, cy), (0.45 * L, 0.2 * L), colour)
    _ellipse(img, (x - f * 0.1 * L, cy - 0.08 * L), (0.3 * L, 0.08 * L), _shade(colour, 1.15))
    nose = (x + f * 0.68 * L, cy + 0.06 * L)
    head = _poly(img, [(x + f * 0.28 * L, cy - 0.16 * L), nose, (x + f * 0.3 * L, cy + 0.15 * L)], colour)
    _ellipse(img, (x + f * 0.38 * L, cy - 0.02 * L), (0.16 * L, 0.13 * L), colour)
    ear = _ellipse(img, (x + f * 0.33 * L, cy - 0.17 * L), (0.07 * L, 0.07 * L), _shade(colour, 0.9))
    _ellipse(img, (x + f * 0.33 * L, cy - 0.17 * L), (0.04 * L, 0.04 * L), (150, 150, 200))
    _ellipse(img, (x + f * 0.48 * L, cy - 0.04 * L), (0.025 * L, 0.025 * L), (10, 10, 10))
    _ellipse(img, nose, (0.025 * L, 0.025 * L), (140, 130, 200))
    for k in (-1, 1):
        _line(img, nose, (nose[0] + f * 0.1 * L, nose[1] + k * 0.05 * L), (200, 200, 200), 1)
    cv.label("rodent", _union(body, head, ear, (x - 0.45 * L, cy, x + 0.45 * L, ground)))


# ---------------------------------------------------------------------------------------------------
# Kitchen background and props
# ---------------------------------------------------------------------------------------------------


def _tiles(img: np.ndarray, rect: Rect, base: Color, size: float, grout: Color) -> None:
    x1, y1, x2, y2 = (int(v) for v in rect)
    if x2 <= x1 or y2 <= y1:
        return
    img[y1:y2, x1:x2] = base
    step = max(4, int(size))
    for x in range(x1 + step, x2, step):
        img[y1:y2, x : x + 1] = grout
    for y in range(y1 + step, y2, step):
        img[y : y + 1, x1:x2] = grout


def _steel(img: np.ndarray, rect: Rect, tone: int) -> None:
    """Brushed-steel panel: a vertical gradient with a highlight line."""
    x1, y1, x2, y2 = (int(v) for v in rect)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(img.shape[1], x2), min(img.shape[0], y2)
    if x2 <= x1 or y2 <= y1:
        return
    ramp = np.linspace(1.08, 0.82, y2 - y1, dtype=np.float32)[:, None, None]
    col = np.array([tone, tone + 3, tone + 6], dtype=np.float32)[None, None, :]
    img[y1:y2, x1:x2] = np.clip(ramp * col, 0, 255).astype(np.uint8)
    img[y1 : min(y2, y1 + 2), x1:x2] = min(255, tone + 45)


def draw_counter(img: np.ndarray, x1: float, x2: float, top: float, depth: float, bottom: float, tone: int) -> None:
    """A steel counter seen from the front and slightly above: top surface strip, then doors."""
    _steel(img, (x1, top, x2, top + depth), tone + 25)
    _steel(img, (x1, top + depth, x2, bottom), tone)
    door = max(30, int((x2 - x1) / max(1, round((x2 - x1) / 160))))
    edge = (max(0, tone - 50),) * 3
    for x in range(int(x1) + door, int(x2) - 10, door):
        cv2.line(img, (x, int(top + depth + 6)), (x, int(bottom - 6)), edge, 1)
        cv2.line(img, (x - 12, int(top + depth + 20)), (x - 12, int(top + depth + 50)), (200, 200, 205), 2)
    cv2.line(img, (int(x1), int(top + depth)), (int(x2), int(top + depth)), edge, 2)


def _draw_props(
    rng: np.random.Generator, img: np.ndarray, x1: float, x2: float, surface: float, scale: float, count: int
) -> None:
    """Pots, plates, boards, bowls, vegetables and bottles standing on a surface line."""
    for _ in range(count):
        kind = int(rng.integers(7))
        s = scale * rng.uniform(0.6, 1.4)
        x = rng.uniform(x1 + s, max(x1 + s + 1, x2 - s))
        y = surface
        if kind == 0:  # pot
            colour = _jitter(rng, _pick(rng, [(160, 160, 165), (60, 60, 65), (70, 110, 170)]), 10)
            _rect(img, (x - s, y - 1.1 * s, x + s, y), colour)
            _ellipse(img, (x, y - 1.1 * s), (s, 0.2 * s), _shade(colour, 1.2))
            _line(img, (x - 1.35 * s, y - 0.9 * s), (x - s, y - 0.9 * s), (40, 40, 40), max(1.0, 0.12 * s))
        elif kind == 1:  # plate stack
            for k in range(int(rng.integers(1, 5))):
                _ellipse(img, (x, y - 0.1 * s - k * 0.12 * s), (0.9 * s, 0.16 * s), (238, 238, 236))
                _ellipse(img, (x, y - 0.1 * s - k * 0.12 * s), (0.9 * s, 0.16 * s), (190, 190, 190), thickness=1)
        elif kind == 2:  # cutting board with food
            colour = _jitter(rng, _pick(rng, [(90, 150, 200), (240, 240, 240), (80, 160, 90)]), 10)
            _poly(
                img,
                [(x - 1.3 * s, y), (x + 1.3 * s, y), (x + 1.1 * s, y - 0.3 * s), (x - 1.1 * s, y - 0.3 * s)],
                colour,
            )
            for _k in range(int(rng.integers(0, 4))):
                veg = _pick(rng, [(40, 160, 60), (40, 60, 200), (60, 180, 230), (200, 200, 230)])
                _ellipse(img, (x + rng.uniform(-s, s), y - 0.3 * s), (0.2 * s, 0.14 * s), veg)
        elif kind == 3:  # bowl
            colour = _jitter(rng, _pick(rng, [(230, 230, 230), (200, 160, 110), (150, 150, 150)]), 10)
            _ellipse(img, (x, y - 0.35 * s), (0.8 * s, 0.45 * s), colour, start=0, end=180)
        elif kind == 4:  # bottle
            colour = _jitter(rng, _pick(rng, [(40, 120, 40), (40, 60, 160), (200, 200, 200), (30, 90, 140)]), 15)
            _rect(img, (x - 0.22 * s, y - 1.3 * s, x + 0.22 * s, y), colour)
            _rect(img, (x - 0.08 * s, y - 1.7 * s, x + 0.08 * s, y - 1.3 * s), colour)
        elif kind == 5:  # towel or cloth (blue and white, like gloves and hats)
            colour = _jitter(rng, _pick(rng, [(235, 235, 235), (200, 140, 60), (170, 80, 130)]), 10)
            _rect(img, (x - 0.5 * s, y - 0.25 * s, x + 0.5 * s, y), colour)
        else:  # vegetables
            for _k in range(int(rng.integers(2, 6))):
                veg = _pick(rng, [(40, 160, 60), (40, 60, 200), (60, 180, 230), (80, 120, 160)])
                _ellipse(img, (x + rng.uniform(-s, s), y - rng.uniform(0.1, 0.4) * s), (0.25 * s, 0.2 * s), veg)


def _draw_wall_fittings(rng: np.random.Generator, img: np.ndarray, horizon: float, w: int) -> None:
    """Shelves with props, an extractor hood, sometimes a window or a door."""
    for _ in range(int(rng.integers(0, 3))):
        y = rng.uniform(0.12, 0.7) * horizon
        x1 = rng.uniform(-0.1, 0.7) * w
        x2 = x1 + rng.uniform(0.2, 0.5) * w
        _steel(img, (x1, y, x2, y + 6), 170)
        _draw_props(rng, img, x1, x2, y, rng.uniform(0.015, 0.035) * w, int(rng.integers(1, 6)))
    if rng.random() < 0.5:
        x = rng.uniform(0.0, 0.8) * w
        hood_w = rng.uniform(0.15, 0.3) * w
        y = rng.uniform(0.05, 0.25) * horizon
        _poly(
            img,
            [(x, y + 0.25 * horizon), (x + hood_w, y + 0.25 * horizon), (x + 0.8 * hood_w, y), (x + 0.2 * hood_w, y)],
            (180, 182, 186),
        )
        _line(img, (x, y + 0.25 * horizon), (x + hood_w, y + 0.25 * horizon), (120, 120, 125), 3)
    if rng.random() < 0.35:
        x = rng.uniform(0.0, 0.85) * w
        dw, top = rng.uniform(0.1, 0.18) * w, rng.uniform(0.1, 0.3) * horizon
        dark = rng.random() < 0.5  # a doorway into a dark room, or a bright window
        colour = (40, 40, 45) if dark else (235, 225, 210)
        _rect(img, (x, top, x + dw, horizon if dark else top + 0.45 * horizon), colour)
        cv2.rectangle(img, _p((x, top)), _p((x + dw, horizon if dark else top + 0.45 * horizon)), (120, 120, 120), 3)


def _draw_stove(rng: np.random.Generator, img: np.ndarray, x1: float, x2: float, top: float, depth: float) -> None:
    _rect(img, (x1, top, x2, top + depth), (35, 35, 38))
    n = max(1, int((x2 - x1) / max(depth * 2.2, 1)))
    for k in range(n):
        cx = x1 + (k + 0.5) * (x2 - x1) / n
        _ellipse(img, (cx, top + depth / 2), (0.7 * depth, 0.3 * depth), (70, 70, 70), thickness=2)
        if rng.random() < 0.4:
            _ellipse(img, (cx, top + depth / 2), (0.5 * depth, 0.2 * depth), (230, 150, 60), thickness=2)


def _background(rng: np.random.Generator, w: int, h: int, horizon: float) -> np.ndarray:
    img = np.empty((h, w, 3), dtype=np.uint8)
    wall = _jitter(
        rng, _pick(rng, [(230, 230, 228), (210, 225, 230), (200, 220, 205), (225, 215, 200), (190, 190, 195)]), 10
    )
    floor = _jitter(
        rng, _pick(rng, [(120, 125, 130), (90, 100, 140), (150, 150, 150), (70, 80, 90), (130, 150, 160)]), 12
    )
    _tiles(img, (0, 0, w, horizon), wall, rng.uniform(0.03, 0.09) * w, _shade(wall, 0.85))
    _tiles(img, (0, horizon, w, h), floor, rng.uniform(0.05, 0.12) * w, _shade(floor, 0.8))
    # Back counter with a stove along the wall.
    if rng.random() < 0.8:
        depth = rng.uniform(0.03, 0.06) * h
        ctop = horizon - rng.uniform(0.1, 0.22) * h
        draw_counter(img, 0, w, ctop, depth, horizon + 2, int(rng.integers(120, 175)))
        if rng.random() < 0.6:
            sx = rng.uniform(0, 0.7) * w
            _draw_stove(rng, img, sx, sx + rng.uniform(0.15, 0.3) * w, ctop, depth)
        _draw_props(rng, img, 0, w, ctop + depth * 0.7, rng.uniform(0.02, 0.045) * w, int(rng.integers(0, 6)))
    _draw_wall_fittings(rng, img, horizon, w)
    return img


def _apply_camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Uneven light, colour cast, sensor noise and focus blur."""
    h, w = img.shape[:2]
    gx = np.linspace(-1, 1, 8, dtype=np.float32)[None, :]
    gy = np.linspace(-1, 1, 6, dtype=np.float32)[:, None]
    gain_small = 1.0 + rng.uniform(-0.25, 0.25) * gx + rng.uniform(-0.25, 0.2) * gy
    gain_small += rng.uniform(-0.25, 0.05) * (gx**2 + gy**2)
    gain = cv2.resize(gain_small * rng.uniform(0.6, 1.15), (w, h), interpolation=cv2.INTER_LINEAR)
    cast = rng.uniform(0.88, 1.12, size=3).astype(np.float32)
    out = img.astype(np.float32) * gain[:, :, None] * cast[None, None, :]
    sigma = rng.uniform(0, 9)
    if sigma > 1:
        out += rng.normal(0, sigma, size=out.shape).astype(np.float32)
    out8 = np.clip(out, 0, 255).astype(np.uint8)
    blur = rng.choice([0, 0, 3, 5])
    if blur:
        out8 = cv2.GaussianBlur(out8, (int(blur), int(blur)), 0)
    return out8


# ---------------------------------------------------------------------------------------------------
# Random scenes for training
# ---------------------------------------------------------------------------------------------------


def _hand_targets(
    rng: np.random.Generator, look: Look, x: float, top: float, H: float, surface: tuple[float, float] | None
) -> tuple[Point, Point]:
    """Where the hands go: on the work surface, at the sides, in front, or holding a phone."""
    hands: list[Point] = []
    for side in (-1, 1):
        if side == 1 and look.phone == "ear":
            hands.append((x + 0.62 * H, top + 1.0 * H))
            continue
        if side == 1 and look.phone == "chest":
            hands.append((x + rng.uniform(-0.1, 0.5) * H, top + rng.uniform(2.1, 2.8) * H))
            continue
        mode = rng.random()
        if surface is not None and mode < 0.75:
            hands.append((x + side * rng.uniform(0.2, 1.4) * H, rng.uniform(*surface)))
        elif mode < 0.5:
            hands.append((x + side * rng.uniform(0.9, 1.2) * H, top + rng.uniform(3.3, 4.1) * H))
        else:
            hands.append((x + side * rng.uniform(-0.2, 1.5) * H, top + rng.uniform(1.8, 3.6) * H))
    return hands[0], hands[1]


def render_scene(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, list[LabelBox]]:
    """One random kitchen image and its labels (class_id, x1, y1, x2, y2) in pixels."""
    w, h = width, height
    horizon = rng.uniform(0.35, 0.7) * h
    cv = Canvas(_background(rng, w, h, horizon))
    counter: tuple[float, float, float, float, float] | None = None  # x1, x2, top, depth, bottom
    if rng.random() < 0.7:
        top = rng.uniform(max(horizon, 0.45 * h), 0.85 * h)
        depth = rng.uniform(0.04, 0.1) * h
        x1 = rng.choice([0.0, rng.uniform(0, 0.5) * w])
        x2 = rng.choice([float(w), rng.uniform(x1 + 0.3 * w, w + 1)])
        bottom = min(float(h), top + rng.uniform(0.15, 0.5) * h)
        counter = (x1, min(x2, w), top, depth, bottom)

    n_workers = int(rng.choice([0, 1, 2, 3, 4], p=[0.08, 0.34, 0.3, 0.18, 0.1]))
    behind: list[tuple[Look, Pose]] = []
    free: list[tuple[Look, Pose]] = []
    for _ in range(n_workers):
        look = random_look(rng)
        H = rng.uniform(0.06, 0.24) * h
        if counter is not None and rng.random() < 0.65:
            cx1, cx2, ctop, cdepth, _ = counter
            x = rng.uniform(cx1 - 0.5 * H, cx2 + 0.5 * H)
            top = ctop - rng.uniform(2.4, 3.8) * H
            left, right = _hand_targets(rng, look, x, top, H, (ctop + 0.2 * cdepth, ctop + 0.9 * cdepth))
            behind.append((look, Pose(x, top, H, left, right, legs=False)))
        else:
            x = rng.uniform(-0.6 * H, w + 0.6 * H)
            feet = rng.uniform(horizon + 0.02 * h, h + 3 * H)
            top = feet - 6.9 * H
            left, right = _hand_targets(rng, look, x, top, H, None)
            free.append((look, Pose(x, top, H, left, right, legs=True, stride=float(rng.uniform(-1, 1)))))
    behind.sort(key=lambda lp: lp[1].head)
    free.sort(key=lambda lp: lp[1].top + 6.9 * lp[1].head)

    people = [(look, pose, cv.new_person()) for look, pose in behind]
    for look, pose, person in people:
        _draw_body(cv, look, pose, person)
    if counter is not None:
        cx1, cx2, ctop, cdepth, cbottom = counter
        # The counter front must reach below the bodies of the people behind it.
        cbottom = min(float(h), max([cbottom] + [p.top + 5.0 * p.head for _, p, _ in people]))
        counter = (cx1, cx2, ctop, cdepth, cbottom)
        draw_counter(cv.img, cx1, cx2, ctop, cdepth, cbottom, int(rng.integers(110, 180)))
        cv.occlude((cx1, ctop + 0.15 * cdepth, cx2, cbottom))
    for look, pose, person in people:
        _draw_arms(cv, look, pose, person)
        if look.cigarette and look.smoke:
            _draw_smoke(cv.img, (pose.x + 0.58 * pose.head, pose.top + 0.9 * pose.head), pose.head, rng.random())
    if counter is not None:
        cx1, cx2, ctop, cdepth, _ = counter
        _draw_props(rng, cv.img, cx1, cx2, ctop + 0.8 * cdepth, rng.uniform(0.02, 0.04) * w, int(rng.integers(0, 4)))
        if rng.random() < 0.2:
            _draw_rodent_random(rng, cv, (ctop + 0.5 * cdepth, ctop + cdepth), w, h)
    if rng.random() < 0.35:
        _draw_rodent_random(rng, cv, (max(horizon, counter[4] if counter else horizon) + 0.02 * h, h * 1.02), w, h)
    for look, pose in free:
        draw_worker(cv, look, pose, smoke_phase=float(rng.random()))
    if rng.random() < 0.3:  # crates and bins in front hide parts of what is behind them
        for _ in range(int(rng.integers(1, 3))):
            bw = rng.uniform(0.08, 0.2) * w
            bx = rng.uniform(-0.05, 0.95) * w
            by = rng.uniform(0.7, 0.95) * h
            colour = _jitter(rng, _pick(rng, [(60, 120, 60), (40, 90, 160), (80, 80, 80), (160, 120, 60)]), 15)
            _rect(cv.img, (bx, by, bx + bw, h), colour)
            cv2.rectangle(cv.img, _p((bx, by)), _p((bx + bw, h)), _shade(colour, 0.6), 2)
            cv.occlude((bx, by, bx + bw, h))
    img = _apply_camera(rng, cv.img)
    return img, cv.boxes()


def _draw_rodent_random(rng: np.random.Generator, cv: Canvas, ground: tuple[float, float], w: int, h: int) -> None:
    length = rng.uniform(0.045, 0.13) * w
    draw_rodent(
        cv,
        rng.uniform(-0.2, 1.2) * w,
        rng.uniform(*ground),
        length,
        int(rng.choice([-1, 1])),
        _jitter(rng, _pick(rng, RODENT_COLOURS), 12),
        rng.uniform(0, 6.3),
    )


def yolo_label_lines(boxes: list[LabelBox], width: int, height: int) -> list[str]:
    """YOLO text labels: class cx cy w h, normalised to 0..1."""
    lines = []
    for cls, x1, y1, x2, y2 in boxes:
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        bw, bh = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return lines


def write_dataset(
    out_dir: str | Path, n_train: int, n_val: int, size: tuple[int, int] = DATASET_SIZE, seed: int = 0
) -> Path:
    """Renders a YOLO dataset (images/{train,val}, labels/{train,val}, data.yaml); returns data.yaml."""
    out = Path(out_dir)
    width, height = size
    for split_index, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            img, boxes = render_scene(rng, width, height)
            name = f"{split}_{i:06d}"
            quality = int(rng.integers(60, 96))
            cv2.imwrite(str(out / "images" / split / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            (out / "labels" / split / f"{name}.txt").write_text(
                "".join(line + "\n" for line in yolo_label_lines(boxes, width, height))
            )
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    data_yaml = out / "data.yaml"
    data_yaml.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data_yaml


FACE_CLASSES: list[str] = ["face_mask", "face_nomask"]


def square_crop(img: np.ndarray, box: Rect, expand: float, size: int) -> np.ndarray | None:
    """A box grown by `expand` of its size on every side, short side resized to `size`, centre-cropped
    square: the same crop the service's crop classifier takes."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * expand, (y2 - y1) * expand
    left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
    right, bottom = min(w, int(math.ceil(x2 + dx))), min(h, int(math.ceil(y2 + dy)))
    if right - left < 2 or bottom - top < 2:
        return None
    crop = img[top:bottom, left:right]
    r = size / min(crop.shape[:2])
    new_w, new_h = max(size, round(crop.shape[1] * r)), max(size, round(crop.shape[0] * r))
    resized = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    x0, y0 = (new_w - size) // 2, (new_h - size) // 2
    return np.ascontiguousarray(resized[y0 : y0 + size, x0 : x0 + size])


def write_face_crops(out_dir: str | Path, n_train: int, n_val: int, size: int = 64, seed: int = 0) -> Path:
    """Classification folders {train,val}/{face_mask,face_nomask}/*.jpg of face crops cut from random
    scenes, `n` of each class per split. Boxes are jittered like a detector's would be. Returns out_dir."""
    out = Path(out_dir)
    for split_index, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        written = dict.fromkeys(FACE_CLASSES, 0)
        for name in FACE_CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        scene = 0
        while min(written.values()) < count:
            rng = np.random.default_rng([seed, 10 + split_index, scene])
            scene += 1
            img, boxes = render_scene(rng, *DATASET_SIZE)
            for cls, x1, y1, x2, y2 in boxes:
                name = CLASSES[cls]
                if name not in written or written[name] >= count or y2 - y1 < 8:
                    continue
                bw, bh = x2 - x1, y2 - y1
                shift = rng.uniform(-0.08, 0.08, size=2) * (bw, bh)
                scale = rng.uniform(0.9, 1.1)
                cx, cy = (x1 + x2) / 2 + shift[0], (y1 + y2) / 2 + shift[1]
                box = (cx - scale * bw / 2, cy - scale * bh / 2, cx + scale * bw / 2, cy + scale * bh / 2)
                crop = square_crop(img, box, float(rng.uniform(0.0, 0.25)), size)
                if crop is None:
                    continue
                cv2.imwrite(str(out / split / name / f"{scene:06d}_{written[name]:05d}.jpg"), crop)
                written[name] += 1
    return out


# ---------------------------------------------------------------------------------------------------
# The demo scenario: an animated, looping kitchen with scripted violations
# ---------------------------------------------------------------------------------------------------

DEMO_PERIOD_S = 40.0
DEMO_SIZE = (1280, 720)
# The prep counter's top surface, where hands work, down to its front edge (normalised x, y). The demo
# config uses the same polygon; working hands' boxes have both their centre and bottom centre inside it.
DEMO_ZONES: dict[str, list[list[float]]] = {
    "food_prep": [[0.0, 0.62], [0.734, 0.62], [0.734, 0.82], [0.0, 0.82]],
}

# Scripted timeline, seconds within the loop (the scenario's ground truth is rendered, not listed).
DEMO_TIMELINE: dict[str, tuple[float, float]] = {
    "hatless_worker": (3.0, 25.0),  # head_bare + face_nomask; walks in and out on the left
    "bare_hands_on_prep": (9.0, 19.0),  # the hatless worker's bare hands on the prep counter
    "phone": (6.0, 14.0),  # worker at the back door
    "smoking": (16.0, 26.0),  # same worker, mask off
    "rodent": (30.0, 36.0),  # crossing the floor in front of the counter
}


def _ramp(t: float, t0: float, t1: float) -> float:
    """0 before t0, 1 after t1, smooth in between."""
    if t <= t0:
        return 0.0
    if t >= t1:
        return 1.0
    s = (t - t0) / (t1 - t0)
    return s * s * (3 - 2 * s)


class DemoScene:
    """The demo kitchen. frame(t) renders the scene at t seconds (looping) with its ground-truth boxes."""

    def __init__(self, width: int = DEMO_SIZE[0], height: int = DEMO_SIZE[1], seed: int = 7) -> None:
        self.width, self.height = width, height
        self._sx, self._sy = width / DEMO_SIZE[0], height / DEMO_SIZE[1]
        rng = np.random.default_rng(seed)
        w, h = DEMO_SIZE
        self._counter = (0.0, 940.0, 470.0, 88.0, 650.0)  # x1, x2, top, depth, bottom (design pixels)
        horizon = 430.0
        bg = np.empty((h, w, 3), dtype=np.uint8)
        _tiles(bg, (0, 0, w, horizon), (226, 228, 226), 64, (196, 198, 196))
        _tiles(bg, (0, horizon, w, h), (118, 124, 132), 96, (94, 98, 104))
        draw_counter(bg, 0, 960, 300, 34, horizon + 2, 150)
        _draw_stove(rng, bg, 380, 700, 300, 34)
        _poly(bg, [(360, 210), (720, 210), (660, 70), (420, 70)], (182, 184, 188))
        _line(bg, (360, 210), (720, 210), (120, 120, 125), 3)
        _steel(bg, (40, 150, 330, 158), 170)
        _draw_props(rng, bg, 50, 320, 150, 24, 5)
        _draw_props(rng, bg, 20, 360, 326, 30, 3)
        _rect(bg, (1010, 120, 1190, horizon), (42, 42, 48))  # back door
        cv2.rectangle(bg, (1010, 120), (1190, int(horizon)), (120, 120, 124), 6)
        self._background = bg
        fg = bg.copy()
        cx1, cx2, ctop, cdepth, cbottom = self._counter
        draw_counter(fg, cx1, cx2, ctop, cdepth, cbottom, 140)
        _draw_props(np.random.default_rng(seed + 1), fg, 560, 920, ctop + 0.75 * cdepth, 34, 3)
        self._crates = [(210.0, 600.0, 360.0, 720.0), (720.0, 610.0, 860.0, 720.0)]
        for x1, y1, x2, y2 in self._crates:
            _rect(fg, (x1, y1, x2, y2), (60, 120, 70))
            for k in range(1, 4):
                yy = int(y1 + k * (y2 - y1) / 4)
                cv2.line(fg, (int(x1), yy), (int(x2), yy), (40, 85, 50), 3)
            cv2.rectangle(fg, (int(x1), int(y1)), (int(x2), int(y2)), (35, 70, 40), 3)
        self._foreground = fg
        noise_rng = np.random.default_rng(seed + 2)
        self._noise = [noise_rng.integers(0, 7, size=(h, w, 3), dtype=np.uint8) for _ in range(3)]
        self._looks = self._demo_looks()

    @staticmethod
    def _demo_looks() -> dict[str, Look]:
        compliant = Look(
            skin=SKIN_TONES[1],
            coat=(242, 242, 240),
            trousers=(40, 40, 45),
            hair=HAIR_COLOURS[0],
            hat="toque",
            hat_colour=(248, 248, 248),
            hat_height=0.75,
            mask=(235, 205, 160),
            gloves=(205, 140, 50),
            apron=(60, 90, 140),
        )
        hatless = Look(
            skin=SKIN_TONES[3],
            coat=(235, 238, 240),
            trousers=(70, 60, 50),
            hair=HAIR_COLOURS[1],
            hat=None,
            mask=None,
            gloves=None,
            short_sleeves=False,  # bare forearms cut off by the counter would read as hands
        )
        back_door = Look(
            skin=SKIN_TONES[2],
            coat=(228, 230, 226),
            trousers=(40, 40, 45),
            hair=HAIR_COLOURS[0],
            hat="cap",
            hat_colour=(238, 240, 242),
            mask=(245, 245, 245),
            gloves=(175, 80, 135),
            phone_colour=(30, 30, 34),
        )
        return {"compliant": compliant, "hatless": hatless, "back_door": back_door}

    def frame(self, t_seconds: float) -> tuple[np.ndarray, list[LabelBox]]:
        """The frame at t (seconds, looping every DEMO_PERIOD_S) and its visible ground-truth boxes."""
        t = t_seconds % DEMO_PERIOD_S
        cv = Canvas(self._background.copy())
        cx1, cx2, ctop, cdepth, cbottom = self._counter
        looks = self._looks
        behind: list[tuple[Look, Pose, int, bool]] = []  # look, pose, person, hands over the counter

        # The compliant worker chops at the prep counter the whole time.
        ax, atop, aH = 520.0 + 6 * math.sin(t * 0.5), 150.0, 104.0
        chop = 12 * abs(math.sin(t * math.pi * 1.5))
        behind.append(
            (
                looks["compliant"],
                Pose(ax, atop, aH, (ax - 120, ctop + 40 + 0.3 * chop), (ax + 95, ctop + 30 - chop), legs=False),
                cv.new_person(),
                True,
            )
        )

        # The hatless worker walks in from the left at a steady pace, works bare-handed, walks out.
        b0, b1 = DEMO_TIMELINE["hatless_worker"]
        w0, w1 = DEMO_TIMELINE["bare_hands_on_prep"]
        if b0 <= t < b1:
            start, spot = -60.0, 240.0
            if t < w0:
                bx = start + (spot - start) * (t - b0) / (w0 - b0)
            elif t < w1:
                bx = spot
            else:
                bx = spot - (spot - start) * (t - w1) / (b1 - w1)
            btop, bH = 160.0 + 4 * math.sin(t * 2.1), 100.0
            working = w0 <= t < w1
            sway = 10 * math.sin(t * 1.3)
            if working:
                lh, rh = (bx - 95 + sway, ctop + 30), (bx + 100 - sway, ctop + 24)
            else:  # arms hang down behind the counter
                lh, rh = (bx - 110, btop + 3.9 * bH), (bx + 110, btop + 3.9 * bH)
            behind.append((looks["hatless"], Pose(bx, btop, bH, lh, rh, legs=False), cv.new_person(), working))

        for look, pose, person, over in behind:
            _draw_body(cv, look, pose, person)
            if not over:
                _draw_arms(cv, look, pose, person)
        cv.img[int(ctop) :, :] = self._foreground[int(ctop) :, :]
        cv.occlude((0.0, ctop + 10, float(DEMO_SIZE[0]), float(DEMO_SIZE[1])))  # the whole band is redrawn
        for look, pose, person, over in behind:
            if over:
                _draw_arms(cv, look, pose, person)

        # The rodent crosses the floor from behind one crate to behind the other.
        r0, r1 = DEMO_TIMELINE["rodent"]
        if r0 - 1.0 <= t < r1 + 1.0:
            rx = 790 - (790 - 285) * (t - r0 + 0.6) / (r1 - r0 + 1.2)
            draw_rodent(cv, rx, 700, 130, -1, RODENT_COLOURS[1], phase=t * 9)  # brown: stands out on grey tiles
        for crate in self._crates:
            x1, y1, x2, y2 = (int(v) for v in crate)
            cv.img[y1:y2, x1:x2] = self._foreground[y1:y2, x1:x2]
            cv.occlude(crate)

        self._draw_back_door_worker(cv, t)
        # Light sensor noise from a few cached patterns (0..6, minus the mean 3) keeps frames cheap.
        img = cv2.subtract(cv2.add(cv.img, self._noise[int(t * 25) % 3]), 3)
        boxes = cv.boxes()
        if (self.width, self.height) != DEMO_SIZE:
            img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
            boxes = [(c, x1 * self._sx, y1 * self._sy, x2 * self._sx, y2 * self._sy) for c, x1, y1, x2, y2 in boxes]
        return img, boxes

    def _draw_back_door_worker(self, cv: Canvas, t: float) -> None:
        """Walks in by the back door, uses a phone, takes the mask off and smokes, walks out."""
        p0, p1 = DEMO_TIMELINE["phone"]
        s0, s1 = DEMO_TIMELINE["smoking"]
        enter, leave = p0 - 4.5, s1 + 0.5
        if not enter <= t < leave + 3.5:
            return
        walk_in, walk_out = _ramp(t, enter, p0 - 1.0), _ramp(t, leave, leave + 3.5)
        x = 1400 - 300 * walk_in + 300 * walk_out
        H = 92.0
        top = 700 - 6.9 * H
        walking = 0 < walk_in < 1 or 0 < walk_out < 1
        stride = math.sin(t * 2 * math.pi * 0.9) if walking else 0.0
        smoking = s0 <= t < s1
        base = self._looks["back_door"]
        look = replace(
            base,
            phone="chest" if p0 <= t < p1 else None,
            mask=None if t >= p1 + 1.0 else base.mask,  # the mask comes off after the call
            cigarette=smoking,
        )
        swing = 0.25 * H * stride
        left: Point = (x - 1.0 * H + swing, top + 3.8 * H)
        right: Point = (x + 1.0 * H - swing, top + 3.8 * H)
        if look.phone:
            right = (x + 0.3 * H, top + 2.5 * H)
        if smoking:
            left = (x - 0.9 * H, top + 3.3 * H)
        draw_worker(cv, look, Pose(x, top, H, left, right, legs=True, stride=stride), smoke_phase=(t * 0.4) % 1.0)


def render_demo_frames(seconds: float, fps: float, scene: DemoScene | None = None) -> Iterator[np.ndarray]:
    """BGR frames of the demo scenario from t=0, `fps` per second, for `seconds` seconds."""
    scene = scene or DemoScene()
    for i in range(int(round(seconds * fps))):
        yield scene.frame(i / fps)[0]
