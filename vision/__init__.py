"""Pure compute for brightkitchen: ONNX sessions, detection, classification, tracking, zones, schedules and rules.

Depends on numpy, OpenCV and onnxruntime only.
"""
