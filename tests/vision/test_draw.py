import threading

import numpy as np
import pytest

from vision import draw
from vision.detections import Detections
from vision.draw import BAR, GREEN, RED, annotate

NAMES = ["person", "no_hat"]


def test_boxes_coloured_by_highlight_and_title_bar_drawn():
    frame = np.full((480, 640, 3), 255, dtype=np.uint8)
    dets = Detections(
        np.array([[100, 200, 200, 400], [400, 200, 500, 300]]),
        np.array([0.87, 0.6]),
        np.array([0, 1]),
        np.array([3, 4]),
    )
    out = annotate(frame, dets, NAMES, title="cam-1", highlight={"no_hat"}, timestamp=1_700_000_000.0)
    assert out.shape == frame.shape and out is not frame
    assert (frame == 255).all()  # the input frame is not drawn on
    # Bottom edges of the boxes (labels are drawn at the top).
    assert tuple(out[400, 150]) == GREEN
    assert tuple(out[300, 450]) == RED
    # The title bar spans the top of the frame; its left corner stays bar-coloured.
    assert tuple(out[1, 1]) == BAR and tuple(out[1, 630]) == BAR
    # Inside the boxes the image is untouched.
    assert (out[350, 120:180] == 255).all()


def test_handles_empty_detections_non_ascii_titles_and_tiny_frames():
    frame = np.zeros((60, 80, 3), dtype=np.uint8)
    out = annotate(frame, Detections.empty(), NAMES, title="后厨 camera", highlight=set())
    assert out.shape == frame.shape
    assert (out[0, 0] == BAR).all()
    assert (out[:15] > 128).all(axis=2).any()  # white title text in the bar
    assert (out[20:] == 0).all()  # nothing drawn below it


def test_timestamp_is_added_to_the_title():
    frame = np.zeros((240, 640, 3), dtype=np.uint8)
    plain = annotate(frame, Detections.empty(), NAMES, title="cam-1", highlight=set())
    timed = annotate(frame, Detections.empty(), NAMES, title="cam-1", highlight=set(), timestamp=0.0)

    # The time follows the title: the bar's text reaches much further right.
    def text_end(image: np.ndarray) -> int:
        return int(np.flatnonzero((image[:20] > 128).any(axis=(0, 2))).max())

    assert text_end(timed) > text_end(plain) + 100


def title_bar(title: str) -> np.ndarray:
    frame = np.zeros((360, 640, 3), dtype=np.uint8)
    return annotate(frame, Detections.empty(), NAMES, title=title, highlight=set())[:30]


def test_chinese_camera_names_are_drawn_not_replaced_by_question_marks():
    # The installer adds a CJK font (fonts-droid-fallback); OpenCV's own fonts would draw '??'.
    assert draw.title_font() is not None, f"none of {draw.CJK_FONTS} is installed"
    chinese, marks = title_bar("后厨 1 Kitchen 1"), title_bar("?? 1 Kitchen 1")
    assert (chinese > 128).any() and (marks > 128).any()
    assert (np.abs(chinese.astype(int) - marks.astype(int)) > 128).sum() > 20


def test_each_thread_draws_titles_with_its_own_font_face():
    # A FreeType face is not safe to share between threads: snapshots render in two.
    faces, bars = {}, {}

    def draw_title(name: str) -> None:
        faces[name] = draw.title_font()
        bars[name] = title_bar("后厨 1 Kitchen 1")

    threads = [threading.Thread(target=draw_title, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert faces["a"] is not None and faces["a"] is not faces["b"]
    mine = draw.title_font()
    assert mine is draw.title_font()  # kept for the thread's next snapshot
    assert mine is not faces["a"] and mine is not faces["b"]
    assert (bars["a"] == bars["b"]).all() and (bars["a"] == title_bar("后厨 1 Kitchen 1")).all()


def test_without_a_cjk_font_titles_fall_back_to_ascii(monkeypatch: pytest.MonkeyPatch, caplog):
    monkeypatch.setattr(draw, "CJK_FONTS", ("/nonexistent/font.ttf",))
    draw.cjk_font_path.cache_clear()
    try:
        assert (title_bar("后厨 1") == title_bar("?? 1")).all()
        assert "no CJK font found" in caplog.text
    finally:
        draw.cjk_font_path.cache_clear()


def test_a_long_title_is_cut_to_fit_a_small_snapshot():
    frame = np.zeros((180, 320, 3), dtype=np.uint8)
    title = "第一中学食堂 后厨 1 号灶台  no_hat_in_kitchen"
    bar = annotate(frame, Detections.empty(), NAMES, title=title, highlight=set(), timestamp=1_700_000_000.0)[:30]
    text_columns = np.where((bar > 128).any(axis=(0, 2)))[0]
    assert text_columns.max() < 320 - 2  # drawn inside the margin, not cut by the frame's edge


def test_fit_cuts_the_title_never_the_stamp():
    assert draw._fit("kitchen", " 12:00", 20, len, "~") == "kitchen 12:00"
    assert draw._fit("abcdefghijklmnopqrstuvwxyz", " 12:00", 20, len, "~") == "abcdefghijklm~ 12:00"
    assert draw._fit("ab cd", " 12:00", 10, len, "~") == "ab~ 12:00"
    assert draw._fit("abcdefgh", " 12:00", 7, len, "~") == "~ 12:00"
