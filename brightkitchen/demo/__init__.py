"""`brightkitchen demo`: render the demo kitchen video, serve it over RTSP on loopback, run everything."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

import yaml

from brightkitchen.config import Config, parse_config

log = logging.getLogger("brightkitchen.demo")

DEMO_SECONDS = 40
DEMO_FPS = 25
# Bump when the rendered scenario changes, so a cached video is re-rendered.
DEMO_VIDEO_NAME = "demo-kitchen-v1.h264"


def demo_video(data_dir: Path) -> Path:
    """The demo clip, rendered once by the project's own code (1280x720 H.264, 1 s GOP) and cached."""
    from models.synthetic import render_demo_frames
    from streams.testclip import encode_h264

    path = data_dir / DEMO_VIDEO_NAME
    if not path.exists():
        log.info("rendering the demo kitchen video (%d s) to %s", DEMO_SECONDS, path)
        tmp = path.with_suffix(".part.h264")
        encode_h264(render_demo_frames(DEMO_SECONDS, DEMO_FPS), tmp, fps=DEMO_FPS, gop=DEMO_FPS, bitrate="4M")
        tmp.replace(path)
    return path


def demo_config(data_dir: Path, url: str) -> Config:
    text = resources.files(__package__).joinpath("kitchen.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["sites"][0]["cameras"][0]["url"] = url
    return parse_config(data, "demo config", data_dir)


def camera_source(stack: ExitStack, video: Path) -> str:
    """An RTSP URL on loopback for the video, or the file itself when no RTSP server can be started."""
    from streams.rtsp_launcher import RtspServerProcess, RtspServerUnavailable

    try:
        server = stack.enter_context(RtspServerProcess({"/kitchen-1": video}))
    except RtspServerUnavailable as e:
        log.warning("no RTSP server could be started (%s); reading the demo video file directly", e)
        return str(video)
    url = server.url("/kitchen-1")
    log.info("demo camera served at %s", url)
    return url


def run_demo(data_dir: Path, host: str, port: int, duration_s: float | None) -> None:
    from brightkitchen.service import run_service

    data_dir.mkdir(parents=True, exist_ok=True)
    video = demo_video(data_dir)
    with ExitStack() as stack:
        config = demo_config(data_dir, camera_source(stack, video))
        run_service(config, host, port, duration_s)
