"""A reader that falls behind a live camera drops the late frames before converting them (or decoding
them, in keyframes mode) instead of handing a backlog to the worker."""

import time

import pytest


@pytest.mark.parametrize("analysis_fps", [1.0, 5.0])  # keyframes mode, all-frames mode
def test_backlog_after_a_stall_is_dropped_not_analysed(rtsp_server, h264_clip, camera_reader, wait_until,
                                                        analysis_fps):
    server = rtsp_server({"/cam": h264_clip})
    reader = camera_reader("cam", server.url("/cam"), analysis_fps=analysis_fps, frame_size=320, max_lag_s=1.0,
                           read_timeout_s=10.0)
    wait_until(lambda: reader.status().frames_analysed >= 3, timeout_s=20, what="frames before the stall")
    before = reader.status()
    assert before.frames_dropped_late == 0 and before.frames_dropped_stale == 0
    # The camera stalls for 4 s and then sends what it held back, at once.
    server.pause()
    time.sleep(4)
    server.resume()
    after = wait_until(lambda: (s := reader.status()).frames_dropped_late > 0 and s, timeout_s=15,
                       what="late frames dropped")
    assert after.connected and after.reconnects == 0
    # What the stall held back was not delivered: at most the frames that were still fresh enough.
    resumed = wait_until(lambda: (s := reader.status()).frames_analysed > after.frames_analysed and s, timeout_s=15,
                         what="frames after the backlog")
    held_back = 4 * analysis_fps
    assert resumed.frames_dropped_late >= held_back - 2 * analysis_fps - 1


def test_files_are_never_late(clip_factory, camera_reader, wait_until):
    reader = camera_reader("file", str(clip_factory(seconds=3)), analysis_fps=5.0, frame_size=320, max_lag_s=0.001,
                           loop_file=True)
    wait_until(lambda: reader.status().frames_analysed >= 10, timeout_s=20, what="frames from the file")
    assert reader.status().frames_dropped_late == 0
