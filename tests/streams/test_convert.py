import av
import cv2
import numpy as np
import pytest

from streams.convert import to_analysis_bgr, to_full_bgr


def kitchen_like(width: int, height: int) -> np.ndarray:
    """Smooth gradients plus sharp edges and text, in colour: what a camera frame has."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    image = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                      (x + y) / 2], axis=2).astype(np.uint8)
    for _ in range(30):
        x0, y0 = int(rng.integers(0, width - 100)), int(rng.integers(0, height - 100))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(image, (x0, y0), (x0 + 90, y0 + 60), colour, -1)
        cv2.putText(image, "BK", (x0, y0 + 50), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
    return image


def frame_of(image: np.ndarray, pixel_format: str) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format=pixel_format)


def libswscale(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    return frame.reformat(width=width, height=height, format="bgr24", interpolation="AREA").to_ndarray()


def test_420_frames_shrink_to_what_libswscale_gives():
    frame = frame_of(kitchen_like(1920, 1080), "yuv420p")
    image = to_analysis_bgr(frame, 320, 180)
    reference = libswscale(frame, 320, 180)
    assert image.shape == (180, 320, 3) and image.dtype == np.uint8
    difference = np.abs(image.astype(np.int16) - reference)
    assert difference.mean() < 2.0  # chroma siting differs a little; shapes and colours do not
    assert np.percentile(difference, 99) < 40


def test_rows_padded_beyond_the_width_are_not_read_as_pixels():
    frame = frame_of(kitchen_like(1000, 562), "yuv420p")
    assert frame.planes[0].line_size > frame.width  # the decoder pads rows to its alignment
    packed = frame.to_ndarray(format="yuv420p")  # the same planes copied out without padding
    w, h = frame.width, frame.height
    chroma = packed[h:].reshape(2, h // 2, w // 2)
    shrunk_chroma = [cv2.resize(plane, (160, 90), interpolation=cv2.INTER_AREA).reshape(45, 320) for plane in chroma]
    small = np.vstack([cv2.resize(packed[:h], (320, 180), interpolation=cv2.INTER_AREA), *shrunk_chroma])
    np.testing.assert_array_equal(to_analysis_bgr(frame, 320, 180), cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420))


@pytest.mark.parametrize(("pixel_format", "size", "target"), [
    ("nv12", (1920, 1080), (320, 180)),  # another layout
    ("yuvj420p", (1280, 720), (320, 180)),  # full range
    ("yuv420p", (999, 561), (320, 180)),  # odd sizes have no 4:2:0 half planes
    ("yuv420p", (640, 360), (640, 360)),  # already at analysis size
])
def test_other_frames_take_libswscale(pixel_format, size, target):
    frame = frame_of(kitchen_like(*size), pixel_format)
    np.testing.assert_array_equal(to_analysis_bgr(frame, *target), libswscale(frame, *target))


@pytest.mark.parametrize("size", [(1920, 1080), (1000, 562), (322, 182)])  # padded rows; half planes of odd rows
def test_420_frames_convert_at_full_size_as_libswscale_does(size):
    frame = frame_of(kitchen_like(*size), "yuv420p")
    image = to_full_bgr(frame)
    assert image.shape == (size[1], size[0], 3) and image.dtype == np.uint8
    packed = frame.to_ndarray(format="yuv420p")  # the planes without padding, as OpenCV takes them
    np.testing.assert_array_equal(image, cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_I420))
    difference = np.abs(image.astype(np.int16) - frame.to_ndarray(format="bgr24"))
    assert difference.max() <= 3  # rounding in the chroma upsampling, nothing more


@pytest.mark.parametrize(("pixel_format", "size"), [("nv12", (640, 360)), ("yuvj420p", (640, 360)),
                                                    ("yuv420p", (641, 361))])
def test_other_frames_convert_at_full_size_with_libswscale(pixel_format, size):
    frame = frame_of(kitchen_like(*size), pixel_format)
    np.testing.assert_array_equal(to_full_bgr(frame), frame.to_ndarray(format="bgr24"))


@pytest.mark.parametrize(("size", "target"), [((1920, 1080), (320, 180)), ((2560, 1440), (320, 180)),
                                              ((1280, 720), (320, 180))])
def test_large_frames_shrunk_in_steps_match_one_area_shrink(size, target):
    frame = frame_of(kitchen_like(*size), "yuv420p")
    (w, h), (tw, th) = size, target
    packed = frame.to_ndarray(format="yuv420p")
    chroma = [cv2.resize(plane, (tw // 2, th // 2), interpolation=cv2.INTER_AREA).reshape(th // 4, tw)
              for plane in packed[h:].reshape(2, h // 2, w // 2)]
    one_step = np.vstack([cv2.resize(packed[:h], (tw, th), interpolation=cv2.INTER_AREA), *chroma])
    reference = cv2.cvtColor(one_step, cv2.COLOR_YUV2BGR_I420)
    difference = np.abs(to_analysis_bgr(frame, tw, th).astype(np.int16) - reference)
    assert difference.mean() < 1.0 and difference.max() <= 4  # the rounding of the halved planes, nothing more
