"""What a camera cannot cost less than on this box: decoding the frames it analyses and detecting in them.

The capacity benchmark measures both on one thread, with nothing else running, and reports how many
cameras they alone would fill the box with: the design's limit on this machine, against which the
cameras it does take (readers, inference processes, rules, snapshots and the API included) are measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import av

from benchmarks.inference_bench import frames
from brightkitchen.config import Config
from streams.detectors import load_model
from streams.reader import new_decoder

DECODE_ROUNDS = 2
DETECT_BATCH = 8  # the batch the worker reaches when it is busy, and the cheapest per image


@dataclass(frozen=True)
class DecodeCost:
    """CPU ms of the readers' decoders on one thread: per keyframe (keyframes only) and per frame (every frame)."""

    keyframe_ms: float
    frame_ms: float


def decode_cost(clip: Path) -> DecodeCost:
    """Decode the clip as the readers do: its keyframes alone with the keyframes decoder, then every frame."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        codec, extradata = stream.codec_context.name, stream.codec_context.extradata
        packets = [(bytes(p), p.is_keyframe) for p in container.demux(stream) if p.size]
    keyframes = [data for data, key in packets if key]
    return DecodeCost(_cpu_ms_per_picture(codec, extradata, keyframes, keyframes_only=True),
                      _cpu_ms_per_picture(codec, extradata, [data for data, _ in packets], keyframes_only=False))


def _cpu_ms_per_picture(codec: str, extradata: bytes | None, packets: list[bytes], *, keyframes_only: bool) -> float:
    pictures, start = 0, time.process_time()
    for _ in range(DECODE_ROUNDS):
        decoder = new_decoder(codec, extradata, keyframes_only)
        for packet in packets:
            pictures += len(decoder.decode(av.Packet(packet)))
        pictures += len(decoder.decode(None))
    return 1000 * (time.process_time() - start) / max(1, pictures)


def detector_ms(config: Config, width: int, height: int, seconds: float = 3.0) -> float:
    """CPU ms per image of the config's detectors together, each in this process on one thread, at batch 8
    of kitchen frames shrunk as the readers shrink a width x height camera's."""
    total = 0.0
    for entry in config.models:
        model = load_model(config, entry.model_copy(update={"processes": 1, "threads": 1}))
        try:
            images = frames(DETECT_BATCH, model.detector.input_size, (width, height))
            sizes = [(width, height)] * DETECT_BATCH
            model.detector.detect(images, sizes)  # the first call compiles and allocates
            calls, start, end = 0, time.process_time(), time.monotonic() + seconds
            while time.monotonic() < end or calls < 2:
                model.detector.detect(images, sizes)
                calls += 1
            total += 1000 * (time.process_time() - start) / (calls * DETECT_BATCH)
        finally:
            model.close()
    return total
