"""A delivered frame converted to full-size BGR from two threads at once (two snapshots of one frame)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# In a child process, because the failure this guards against is a crash of the whole interpreter.
CONVERT_IN_TWO_THREADS = """
import sys, threading, av
from streams.reader import Frame
decoded = next(av.open(sys.argv[1]).decode(video=0))
frame = Frame("cam", decoded.to_ndarray(format="bgr24"), (decoded.width, decoded.height), 0.0, 1, decoded)
first = frame.full_bgr()
same = []
def convert():
    for _ in range(200):
        same.append(bool((frame.full_bgr() == first).all()))
threads = [threading.Thread(target=convert) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(len(same), all(same))
"""


def test_one_frame_converts_from_two_threads_at_once(clip_factory) -> None:
    clip = clip_factory(2, width=1920, height=1080, bitrate="4M")
    done = subprocess.run([sys.executable, "-c", CONVERT_IN_TWO_THREADS, str(clip)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["400", "True"]
