"""Pure compute for brightkitchen: ONNX sessions, detection, classification, tracking, zones, schedules and rules.

Depends on numpy, OpenCV and onnxruntime; OpenVINO runs models when installed, and onnx makes their int8 and
fp16 copies.
"""
