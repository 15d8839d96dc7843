"""Which detector class decodes a model: told by the output format its card names."""

from __future__ import annotations

from vision.detector import YoloDetector
from vision.faces import RetinaFaceDetector

Detector = YoloDetector | RetinaFaceDetector


def detector_class(output_format: str | None) -> type[Detector]:
    """RetinaFace for cards whose output format starts with "retinaface"; any ultralytics YOLO export otherwise
    (also without a card, from the ONNX metadata)."""
    if output_format and output_format.lower().startswith("retinaface"):
        return RetinaFaceDetector
    return YoloDetector
