"""Face crops with and without a mask, from real faces: the training and test sets of the mask-faces classifier.

Sources (nothing is downloaded):
- scikit-image's LFW subset (`skimage.data.lfw_subset()`, inside the scikit-image wheel): 100 tight 25x25
  grey face crops of 100 people. Faces 0..79 train, 80..99 are held out (other people);
- scikit-image's `astronaut()` (NASA, public domain) trains; matplotlib's sample `grace_hopper.jpg` (US Navy,
  public domain) is held out; their face boxes come from the face detector (builtin:faces-retinaface);
- the faces the face detector finds in the gloves photos (`../shared/data/gloves`, CC BY 4.0), labelled by hand
  in `face_labels/gloves-faces.csv` (face_mask, face_nomask, or skip: not a face / too unclear). Real masks
  on real people: test only, never trained on.

A "masked" training crop is a real face with a mask drawn over nose, mouth and chin (`draw_mask`: a
surgical, cloth or KN95-like shape in one of several colours, with pleats, shading matched to the face's
brightness, ear loops and a soft edge). Every face gives both classes, so the model must look at the mask
and not at who it is. Crops imitate a detector's boxes (shifted up to 8%, grown 0-25%), a camera's
resolution (shrunk to 16-64 px and enlarged again), exposure, blur and JPEG; grey LFW faces are tinted
with skin tones most of the time, colour faces made grey some of the time, and some unmasked faces get a
white cap or band on the forehead (kitchens are full of chef hats) so that "something white" is not a mask.

    python -m models.face_masks --out DIR [--per-face 20] [--seed 0] [--gloves ../shared/data/gloves]

writes DIR/train/<class>/*.png, DIR/val/<class>/*.png (held-out LFW faces and Grace Hopper, masks drawn
with another seed) and, with --gloves, DIR/gloves/<class>/*.png (the hand-labelled real faces).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.synthetic import FACE_CLASSES

LABELS_CSV = Path(__file__).resolve().parent / "face_labels" / "gloves-faces.csv"
LFW_TRAIN = range(0, 80)
LFW_HELD_OUT = range(80, 100)
CROP_SIZE = 64
# BGR colours of masks people wear: surgical blue and green, white, black, grey, pink, navy, cloth prints.
MASK_COLOURS = ((222, 196, 150), (190, 210, 150), (236, 236, 232), (40, 40, 42), (150, 150, 150),
                (200, 180, 235), (110, 60, 30), (70, 110, 170))
SKIN_TONES = ((190, 205, 235), (150, 175, 215), (110, 140, 190), (80, 105, 150), (60, 80, 115))


@dataclass(frozen=True)
class Face:
    """A real face: the image it is in, its box there, and who/where it comes from."""

    image: np.ndarray  # BGR
    box: tuple[float, float, float, float]
    source: str  # "lfw-17", "astronaut", ...
    grey: bool = False


# ---------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------


def lfw_faces(indices: range) -> list[Face]:
    from skimage.data import lfw_subset  # the wheel ships data/lfw_subset.npy

    crops = lfw_subset()[:100]
    faces = []
    for i in indices:
        grey = (np.clip(crops[i], 0, 1) * 255).astype(np.uint8)
        # The crop is the face box itself: pad it so that box growth and shifts have pixels to take.
        image = cv2.copyMakeBorder(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), 6, 6, 6, 6, cv2.BORDER_REPLICATE)
        faces.append(Face(image, (6.0, 6.0, 31.0, 31.0), f"lfw-{i}", grey=True))
    return faces


def portrait(name: str) -> np.ndarray:
    if name == "astronaut":
        from skimage.data import astronaut

        return cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    if name == "grace_hopper":
        import matplotlib  # its sample data ships in the wheel

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        image = cv2.imread(str(path))
        if image is None:
            raise FileNotFoundError(path)
        return image
    raise KeyError(name)


def detected_faces(image: np.ndarray, source: str, detector: object) -> list[Face]:
    """The faces the face detector finds in a photo (the detector of builtin:faces-retinaface)."""
    found = detector.detect([image])[0]  # type: ignore[attr-defined]
    return [Face(image, tuple(float(v) for v in box), source) for box in found.xyxy]


def labelled_gloves_faces(gloves_dir: Path) -> list[tuple[Face, str]]:
    """The hand-labelled faces of the gloves photos (skips left out)."""
    out = []
    with LABELS_CSV.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["label"] == "skip":
                continue
            path = gloves_dir / row["split"] / "images" / row["image"]
            image = cv2.imread(str(path))
            if image is None:
                raise FileNotFoundError(f"{path} (listed in {LABELS_CSV.name})")
            box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            out.append((Face(image, box, f"gloves-{row['split']}-{Path(row['image']).stem[:24]}"), row["label"]))
    return out


# ---------------------------------------------------------------------------------------------------
# Drawing masks and cutting crops
# ---------------------------------------------------------------------------------------------------


def draw_mask(image: np.ndarray, box: tuple[float, float, float, float], rng: np.random.Generator) -> np.ndarray:
    """A copy of the image with a face mask drawn over the lower face of the (frontal) face box."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2 + rng.uniform(-0.03, 0.03) * w
    top = y1 + h * rng.uniform(0.45, 0.56)  # just below the eyes, over the nose
    bottom = y1 + h * rng.uniform(0.97, 1.1)
    half = w * rng.uniform(0.36, 0.46)
    style = rng.choice(["surgical", "cloth", "kn95"], p=[0.5, 0.3, 0.2])
    mid = (top + bottom) / 2
    if style == "kn95":  # a pointed front
        pts = [(cx - half, top + 0.1 * h), (cx, top - 0.03 * h), (cx + half, top + 0.1 * h),
               (cx + half * 0.95, mid), (cx + half * 0.5, bottom - 0.05 * h), (cx, bottom),
               (cx - half * 0.5, bottom - 0.05 * h), (cx - half * 0.95, mid)]
    else:
        pts = [(cx - half, top + 0.05 * h), (cx - 0.4 * half, top), (cx, top - 0.015 * h), (cx + 0.4 * half, top),
               (cx + half, top + 0.05 * h), (cx + half * 1.02, mid), (cx + half * 0.7, bottom - 0.06 * h),
               (cx, bottom), (cx - half * 0.7, bottom - 0.06 * h), (cx - half * 1.02, mid)]
    scale = 8  # draw at sub-pixel precision: faces can be 20 px wide
    poly = np.round(np.array(pts) * scale).astype(np.int32)
    alpha = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(alpha, [poly], 255, cv2.LINE_AA, shift=3)

    colour = np.array(MASK_COLOURS[rng.integers(len(MASK_COLOURS))], np.float32)
    colour = np.clip(colour * rng.uniform(0.85, 1.1) + rng.normal(0, 8, 3), 0, 255)
    layer = np.empty(image.shape, np.float32)
    layer[:] = colour
    yy = np.arange(image.shape[0], dtype=np.float32)[:, None]
    xx = np.arange(image.shape[1], dtype=np.float32)[None, :]
    # Curved surface: darker towards the sides and the bottom.
    shade = 1.0 - 0.25 * ((xx - cx) / max(half, 1.0)) ** 2 - 0.12 * np.clip((yy - mid) / max(h * 0.3, 1.0), 0, 1)
    layer *= np.clip(shade, 0.55, 1.0)[..., None]
    if style == "surgical":  # pleats
        for k in range(1, 4):
            y = top + (bottom - top) * k / 4.2
            cv2.line(layer, (int((cx - half) * scale), int(y * scale)), (int((cx + half) * scale), int(y * scale)),
                     (colour * 0.78).tolist(), max(1, int(h / 40)), cv2.LINE_AA, shift=3)
    elif style == "cloth" and rng.random() < 0.5:  # a print
        for _ in range(int(rng.integers(4, 12))):
            px, py = rng.uniform(cx - half, cx + half), rng.uniform(top, bottom)
            cv2.circle(layer, (int(px), int(py)), max(1, int(w / 30)), (colour * rng.uniform(0.5, 1.4)).tolist(), -1)
    # Lit like the face it is on.
    face_region = image[int(max(y1, 0)) : int(y2), int(max(x1, 0)) : int(x2)]
    if face_region.size:
        layer *= np.clip(face_region.mean() / 150.0, 0.45, 1.15)
    layer += rng.normal(0, 4, layer.shape).astype(np.float32)
    out = image.astype(np.float32)
    # Ear loops from the mask's upper corners to the sides of the face.
    loop = (colour * 0.9).tolist()
    for side in (-1, 1):
        start = (int((cx + side * half) * scale), int((top + 0.06 * h) * scale))
        end = (int((cx + side * w * 0.52) * scale), int((y1 + h * 0.42) * scale))
        cv2.line(out, start, end, loop, max(1, int(w / 60)), cv2.LINE_AA, shift=3)
    soft = cv2.GaussianBlur(alpha, (0, 0), max(0.6, w / 90)).astype(np.float32)[..., None] / 255.0
    return np.clip(out * (1 - soft) + layer * soft, 0, 255).astype(np.uint8)


def draw_cap(image: np.ndarray, box: tuple[float, float, float, float], rng: np.random.Generator) -> np.ndarray:
    """A white or light cap / band over the forehead: kitchen headwear that is not a mask."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    out = image.copy()
    shade = float(rng.uniform(200, 250))
    top = int(y1 - h * rng.uniform(0.1, 0.4))
    bottom = int(y1 + h * rng.uniform(0.12, 0.3))
    cv2.rectangle(out, (int(x1 - 0.05 * w), top), (int(x2 + 0.05 * w), bottom), (shade, shade, shade - 5), -1)
    return out


def cut_crop(image: np.ndarray, box: tuple[float, float, float, float], rng: np.random.Generator | None,
             size: int = CROP_SIZE) -> np.ndarray:
    """The box as a detector and the service's crop classifier would cut it: shifted and grown (rng) or
    grown 10% (rng None, the classifier's default expand), short side to `size`, centre-cropped."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if rng is None:
        grow, dx, dy = 0.1, 0.0, 0.0
    else:
        grow = rng.uniform(0.0, 0.25)
        dx, dy = rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.08, 0.08) * h
    left, right = x1 + dx - grow * w, x2 + dx + grow * w
    top, bottom = y1 + dy - grow * h, y2 + dy + grow * h
    ih, iw = image.shape[:2]
    pad = int(max(0, -left, -top, right - iw, bottom - ih)) + 1
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[int(top) + pad : int(np.ceil(bottom)) + pad, int(left) + pad : int(np.ceil(right)) + pad]
    ch, cw = crop.shape[:2]
    r = size / min(ch, cw)
    resized = cv2.resize(crop, (max(size, round(cw * r)), max(size, round(ch * r))), interpolation=cv2.INTER_LINEAR)
    y0, x0 = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    return np.ascontiguousarray(resized[y0 : y0 + size, x0 : x0 + size])


def camera_look(crop: np.ndarray, rng: np.random.Generator, grey: bool) -> np.ndarray:
    """Greyscale (some colour sources), resolution, exposure, blur, JPEG."""
    img = crop.astype(np.float32)
    if not grey and rng.random() < 0.2:
        img = np.repeat(cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)[..., None], 3, 2)
        img = img.astype(np.float32)
    img = img * rng.uniform(0.6, 1.35) + rng.uniform(-30, 30)
    img = np.clip(img, 0, 255).astype(np.uint8)
    side = int(rng.integers(16, 65))
    small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    img = cv2.resize(small, crop.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR) if ok else img


def augmented_pairs(face: Face, per_face: int, rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    """per_face crops of each class from one real face."""
    mask_class, nomask_class = FACE_CLASSES
    for _ in range(per_face):
        base = face.image
        if face.grey and rng.random() < 0.7:  # tinted before anything is drawn on it: masks keep their colours
            tone = np.array(SKIN_TONES[rng.integers(len(SKIN_TONES))], np.float32) / 200.0
            base = np.clip(base.astype(np.float32) * tone, 0, 255).astype(np.uint8)
        masked = draw_mask(base, face.box, rng)
        yield mask_class, camera_look(cut_crop(masked, face.box, rng), rng, face.grey)
        plain = draw_cap(base, face.box, rng) if rng.random() < 0.3 else base
        yield nomask_class, camera_look(cut_crop(plain, face.box, rng), rng, face.grey)


def _write(folder: Path, label: str, name: str, crop: np.ndarray) -> None:
    target = folder / label
    target.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target / f"{name}.png"), crop)


def portrait_faces(names: tuple[str, ...], detector: object) -> list[Face]:
    faces = []
    for name in names:
        found = detected_faces(portrait(name), name, detector)
        if len(found) != 1:
            raise RuntimeError(f"expected one face in {name}, the face detector found {len(found)}")
        faces += found
    return faces


def write_face_sets(out: Path, per_face: int = 20, seed: int = 0, gloves_dir: Path | None = None,
                    held_out_per_face: int = 3) -> dict[str, int]:
    """Writes train/, val/ (held-out people, drawn masks) and gloves/ (real masks, if gloves_dir); returns counts."""
    from models.measure_faces import open_face_detector

    detector = open_face_detector()
    counts: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    train = lfw_faces(LFW_TRAIN) + portrait_faces(("astronaut",), detector)
    for face in train:
        for k, (label, crop) in enumerate(augmented_pairs(face, per_face, rng)):
            _write(out / "train", label, f"{face.source}-{k:03d}", crop)
    counts["train"] = 2 * per_face * len(train)
    held_rng = np.random.default_rng(seed + 1000)
    held_out = lfw_faces(LFW_HELD_OUT) + portrait_faces(("grace_hopper",), detector)
    for face in held_out:
        for k, (label, crop) in enumerate(augmented_pairs(face, held_out_per_face, held_rng)):
            _write(out / "val", label, f"{face.source}-{k:03d}", crop)
    counts["val"] = 2 * held_out_per_face * len(held_out)
    if gloves_dir is not None:
        labelled = labelled_gloves_faces(gloves_dir)
        for i, (face, label) in enumerate(labelled):
            _write(out / "gloves", label, f"{i:03d}-{face.source}", cut_crop(face.image, face.box, None))
        counts["gloves"] = len(labelled)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.face_masks", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--per-face", type=int, default=20, help="training crops of each class per face")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gloves", type=Path, help="the gloves set (../shared/data/gloves) for the real test faces")
    args = parser.parse_args(argv)
    counts = write_face_sets(args.out, args.per_face, args.seed, args.gloves)
    print(", ".join(f"{k}: {v} crops" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
