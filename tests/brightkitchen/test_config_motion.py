"""Config of decode modes, motion measures and motion rules."""

from pathlib import Path

import pytest

from brightkitchen.config import ConfigError, load_config
from tests.brightkitchen.test_config import GOOD

MOTION_RULE = """
  - name: rodent_after_hours
    model: det
    source: motion
    require_no_class: [person]
    schedule: opening
    min_area: 0.002
    max_area: 0.05
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_keep_the_measured_policy_and_detector_rules(tmp_path) -> None:
    config = load_config(write(tmp_path, GOOD), environ={})
    camera = config.sites[0].cameras[0]
    assert camera.decode == "auto" and camera.motion.threshold == 25 and camera.motion.still_below > 0
    rule = config.rules[0]
    assert rule.source == "detector" and not rule.skips_when_still and (rule.min_area, rule.max_area) == (0, 1)


def load_config_text(text: str, tmp_path: Path):
    return load_config(write(tmp_path, text), environ={})


def test_a_motion_rule_sees_moving_blobs_and_allows_skipping_still_frames(tmp_path) -> None:
    config = load_config_text(GOOD + MOTION_RULE, tmp_path)
    rule = config.rules[-1]
    assert rule.classes == ["motion"] and rule.skips_when_still and rule.require_no_class == ["person"]
    explicit = GOOD + MOTION_RULE + "    skip_when_still: false\n"
    assert not load_config_text(explicit.replace("rodent_after_hours", "r2"), tmp_path).rules[-1].skips_when_still


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (GOOD + MOTION_RULE + "    classes: [rodent]\n", "rules[2]", "a motion rule's classes are [motion]"),
        (GOOD + MOTION_RULE.replace("max_area: 0.05", "max_area: 0.001"), "rules[2]", "must be below max_area"),
        (GOOD + MOTION_RULE.replace("source: motion", "source: sound"), "rules[2].source", "'detector' or 'motion'"),
        (GOOD.replace("        url: rtsp://127.0.0.1:8554/cam1", "        url: rtsp://127.0.0.1:8554/cam1\n"
                      "        decode: iframes"), "sites[0].cameras[0].decode", "'auto', 'keyframes' or 'all_frames'"),
        (GOOD.replace("        url: rtsp://127.0.0.1:8554/cam1", "        url: rtsp://127.0.0.1:8554/cam1\n"
                      "        motion: {threshold: 0}"), "sites[0].cameras[0].motion.threshold", "greater than"),
    ],
)
def test_bad_motion_and_decode_settings_name_their_key(tmp_path, text, path, message) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), environ={})
    assert any(p == path and message in m for p, m in e.value.errors), e.value.errors
