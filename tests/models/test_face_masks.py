"""Drawing masks on faces and cutting crops the way the service does: seeded, and where they should be."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from models.face_masks import Face, augmented_pairs, cut_crop, draw_cap, draw_mask

BOX = (60.0, 40.0, 140.0, 140.0)  # a face box, 80 x 100 px


def face_image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(90, 170, (200, 200, 3), dtype=np.uint8)


def test_a_mask_covers_the_lower_face_and_leaves_the_eyes():
    image = face_image()
    masked = draw_mask(image, BOX, np.random.default_rng(0))
    changed = np.abs(masked.astype(int) - image.astype(int)).sum(axis=2) > 30
    x1, y1, x2, y2 = (int(v) for v in BOX)
    mouth = changed[y1 + 70 : y1 + 90, x1 + 25 : x2 - 25]
    eyes = changed[y1 + 20 : y1 + 35, x1 + 10 : x2 - 10]
    assert mouth.mean() > 0.9 and eyes.mean() < 0.05
    assert not changed[:, :40].any() and not changed[:20].any()  # nothing far outside the face


def test_masks_are_seeded_and_vary_with_the_seed():
    image = face_image()
    a = draw_mask(image, BOX, np.random.default_rng(5))
    assert np.array_equal(a, draw_mask(image, BOX, np.random.default_rng(5)))
    assert not np.array_equal(a, draw_mask(image, BOX, np.random.default_rng(6)))


def test_a_cap_is_drawn_above_the_eyes():
    image = face_image()
    capped = draw_cap(image, BOX, np.random.default_rng(0))
    changed = np.abs(capped.astype(int) - image.astype(int)).sum(axis=2) > 30
    assert changed[30:50, 70:130].mean() > 0.9 and not changed[100:].any()


def test_crops_are_cut_like_the_service_cuts_them():
    image = face_image()
    crop = cut_crop(image, BOX, None, size=64)
    # Grown 10% per side (72..148 x 30..150 -> 88 x 120), short side to 64, centre-cropped.
    assert crop.shape == (64, 64, 3)
    jittered = cut_crop(image, (0.0, 0.0, 30.0, 30.0), np.random.default_rng(1), size=64)
    assert jittered.shape == (64, 64, 3)  # boxes at the edge are padded, not refused


def test_every_face_gives_both_classes():
    face = Face(face_image(), BOX, "test")
    pairs = list(augmented_pairs(face, 3, np.random.default_rng(0)))
    assert [label for label, _ in pairs] == ["face_mask", "face_nomask"] * 3
    assert all(crop.shape == (64, 64, 3) for _, crop in pairs)
    again = list(augmented_pairs(face, 3, np.random.default_rng(0)))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(pairs, again, strict=True))


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image (train extra) is not installed")
def test_the_lfw_faces_come_from_the_scikit_image_wheel():
    from models.face_masks import LFW_HELD_OUT, LFW_TRAIN, lfw_faces

    train, held_out = lfw_faces(LFW_TRAIN), lfw_faces(LFW_HELD_OUT)
    assert len(train) == 80 and len(held_out) == 20
    assert not {f.source for f in train} & {f.source for f in held_out}
    assert all(f.grey and f.image.shape == (37, 37, 3) for f in train)
