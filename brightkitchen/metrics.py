"""Prometheus metrics shared by the worker and the API (one process registry)."""

from prometheus_client import Counter, Gauge, Histogram

FRAMES_ANALYSED = Counter("brightkitchen_frames_analysed_total", "Frames run through detection", ["camera"])
FRAMES_STALE = Counter("brightkitchen_frames_stale_total", "Frames dropped as stale", ["camera"])
INFERENCE_SECONDS = Histogram(
    "brightkitchen_inference_seconds",
    "Duration of one batched detector call",
    ["model"],
    buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28),
)
BATCH_SIZE = Histogram("brightkitchen_batch_size", "Frames per detector call", ["model"], buckets=(1, 2, 4, 8, 16, 32))
EVENTS_PUBLISHED = Counter("brightkitchen_events_published_total", "Events published", ["rule", "phase"])
EVENTS_STORED = Counter("brightkitchen_events_stored_total", "Event revisions stored", ["phase"])
CAMERA_CONNECTED = Gauge("brightkitchen_camera_connected", "1 when the camera stream is up", ["camera"])
CAMERA_RECONNECTS = Gauge("brightkitchen_camera_reconnects", "Reconnects since start", ["camera"])
INFERENCE_DROPPED = Counter(
    "brightkitchen_inference_frames_dropped_total",
    "Frames not analysed because their inference process died, hung or failed",
    ["model", "reason"],
)
INFERENCE_RESTARTS = Counter("brightkitchen_inference_process_restarts_total", "Inference processes restarted",
                             ["model"])
MODEL_SWAPS = Counter("brightkitchen_model_swaps_total", "Models replaced while running", ["model", "result"])
INFERENCE_SKIPPED = Counter(
    "brightkitchen_inference_skipped_total",
    "Analysed frames whose inference the motion gate skipped (reason: still, schedule)",
    ["camera", "reason"],
)
BACKGROUND_SKIPPED = Counter(
    "brightkitchen_background_work_skipped_total",
    "Work no event waits for (raw frames kept for retraining) not done because too much of it was waiting",
)
