import numpy as np
import pytest

from vision.preprocess import LetterboxInfo, letterbox, rect_canvas, to_blob


@pytest.mark.parametrize("w,h", [(1920, 1080), (704, 576), (300, 500), (64, 64)])
def test_round_trip_maps_boxes_back_exactly(w: int, h: int):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    boxed, info = letterbox(image, 320)
    assert boxed.shape == (320, 320, 3)
    xy1 = rng.uniform(0, [w / 2, h / 2], (50, 2))
    boxes = np.hstack([xy1, xy1 + rng.uniform(1, [w / 2, h / 2], (50, 2))]).astype(np.float32)
    np.testing.assert_allclose(info.to_original(info.to_letterbox(boxes)), boxes, rtol=1e-5, atol=1e-3)


def test_content_is_centred_and_edges_map_to_frame_corners():
    image = np.full((100, 200, 3), 255, dtype=np.uint8)
    boxed, info = letterbox(image, 64)
    assert (info.pad_x, info.pad_y) == (0, 16)
    # Rows above and below the content are padding, the content is the white image.
    assert (boxed[:16] == 114).all() and (boxed[48:] == 114).all() and (boxed[16:48] == 255).all()
    content = np.array([[0, 16, 64, 48]], dtype=np.float32)
    np.testing.assert_allclose(info.to_original(content), [[0, 0, 200, 100]], atol=1e-4)


def test_pre_shrunk_frame_is_only_padded_and_maps_to_the_camera_size():
    camera = (1920, 1080)
    small = np.full((180, 320, 3), 200, dtype=np.uint8)  # what a reader converting to model size gives
    boxed, info = letterbox(small, 320, orig_size=camera)
    assert (info.pad_x, info.pad_y) == (0, 70)
    assert (boxed[70:250] == 200).all() and (boxed[:70] == 114).all()
    # A box in model pixels maps to camera pixels: x scaled by 6, y by 6 after removing the padding.
    np.testing.assert_allclose(info.to_original([[32, 70 + 18, 64, 70 + 36]]), [[192, 108, 384, 216]], atol=1e-3)


def test_smaller_than_model_size_is_not_upscaled():
    tiny = np.zeros((40, 60, 3), dtype=np.uint8)
    boxed, info = letterbox(tiny, 320, orig_size=(600, 400))
    assert boxed.shape == (320, 320, 3)
    assert (info.pad_x, info.pad_y) == (130, 140)
    assert info.scale_x == pytest.approx(0.1) and info.scale_y == pytest.approx(0.1)


@pytest.mark.parametrize(("sizes", "canvas"), [
    ([(1920, 1080)], (320, 192)),  # 16:9 camera: 320x180 content, rows rounded up to the stride
    ([(640, 480)], (320, 256)),
    ([(1920, 1080), (1280, 720)], (320, 192)),  # same aspect, one canvas
    ([(1920, 1080), (1080, 1920)], (320, 320)),  # landscape and portrait in one batch: the square
    ([(100, 50)], (128, 64)),  # smaller than the model: padded to the stride only
])
def test_rect_canvas_is_the_smallest_stride_multiple_that_holds_the_batch(sizes, canvas):
    assert rect_canvas(sizes, 320, 32) == canvas


def test_a_rect_canvas_centres_the_content_and_maps_back_exactly():
    camera = (1920, 1080)
    small = np.full((180, 320, 3), 200, dtype=np.uint8)
    boxed, info = letterbox(small, 320, orig_size=camera, canvas=rect_canvas([camera], 320, 32))
    assert boxed.shape == (192, 320, 3) and (info.pad_x, info.pad_y) == (0, 6)
    assert (boxed[6:186] == 200).all() and (boxed[:6] == 114).all() and (boxed[186:] == 114).all()
    np.testing.assert_allclose(info.to_original([[32, 6 + 18, 64, 6 + 36]]), [[192, 108, 384, 216]], atol=1e-3)
    with pytest.raises(ValueError, match="cannot hold"):
        letterbox(small, 320, orig_size=camera, canvas=(320, 160))


def test_to_original_clips_to_the_frame():
    info = LetterboxInfo(0.5, 0.5, 0, 10, orig_w=100, orig_h=80)
    out = info.to_original([[-20, 0, 70, 60]])
    np.testing.assert_allclose(out, [[0, 0, 100, 80]])


def test_to_blob_is_nchw_rgb_in_unit_range():
    a = np.zeros((4, 5, 3), dtype=np.uint8)
    a[..., 0] = 255  # blue in BGR
    b = np.zeros((4, 5, 3), dtype=np.uint8)
    b[..., 2] = 51  # red in BGR
    blob = to_blob([a, b])
    assert blob.shape == (2, 3, 4, 5) and blob.dtype == np.float32
    assert (blob[0, 2] == 1.0).all() and (blob[0, :2] == 0).all()
    np.testing.assert_allclose(blob[1, 0], 0.2)
    assert (blob[1, 1:] == 0).all()


def test_rejects_non_bgr_images():
    with pytest.raises(ValueError, match="HxWx3"):
        letterbox(np.zeros((10, 10), np.uint8), 32)
