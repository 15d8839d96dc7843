import json
from pathlib import Path

import pytest

from brightkitchen.cli import main
from brightkitchen.config import ConfigError, json_schema, load_config

GOOD = """
sites:
  - id: school-1
    timezone: Asia/Shanghai
    schedules:
      opening: [{days: [mon, tue], start: "06:00", end: "20:00"}]
    cameras:
      - id: cam-1
        url: rtsp://127.0.0.1:8554/cam1
        zones: [{name: prep, points: [[0, 0.5], [1, 0.5], [1, 1]]}]
      - id: cam-2
        url: rtsp://user:secret@127.0.0.1:8554/cam2
models:
  - name: det
    path: det.onnx
rules:
  - name: no_hat
    model: det
    classes: [head_bare]
    schedule: opening
  - name: bare_hand
    model: det
    classes: [hand_bare]
    zones: [prep]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_good_config_loads_and_resolves_paths(tmp_path):
    config = load_config(write(tmp_path, GOOD), environ={})
    assert [c.id for _, c in config.cameras()] == ["cam-1", "cam-2"]
    assert config.resolve_path("det.onnx") == tmp_path / "det.onnx"
    # a rule with zones applies only to cameras that have those zones
    cam1, cam2 = (c for _, c in config.cameras())
    assert [r.name for r in config.rules_for(cam1)] == ["no_hat", "bare_hand"]
    assert [r.name for r in config.rules_for(cam2)] == ["no_hat"]


def test_unknown_key_is_named_with_its_path(tmp_path):
    bad = GOOD.replace("    timezone: Asia/Shanghai", "    timezone: Asia/Shanghai\n    tmezone: x")
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, bad), environ={})
    assert ("sites[0].tmezone", "unknown key (not allowed here)") in e.value.errors
    assert str(tmp_path / "config.yaml") in str(e.value)


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (("timezone: Asia/Shanghai", "timezone: Mars/Olympus"), "sites[0].timezone", "unknown time zone"),
        (("[1, 1]]", "[1, 1.5]]"), "sites[0].cameras[0].zones[0].points", "within [0, 1]"),
        (("model: det\n    classes: [head_bare]", "model: nope\n    classes: [head_bare]"), "", "unknown model"),
        (("schedule: opening", "schedule: closing"), "", "has no schedule 'closing'"),
        (("- id: cam-2", "- id: cam-1"), "", "duplicate id 'cam-1'"),
        (("start: \"06:00\"", "start: \"26:00\""), "sites[0].schedules.opening[0].start", "time"),
    ],
)
def test_invalid_values_are_reported(tmp_path, change, path, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD.replace(*change)), environ={})
    assert any(p == path and message in m for p, m in e.value.errors), e.value.errors


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "sites: [\n  - id: x\n bad"), environ={})
    assert "line" in e.value.errors[0][1] and "not valid YAML" in e.value.errors[0][1]


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "absent.yaml", environ={})
    with pytest.raises(ConfigError, match="YAML mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), environ={})


def test_environment_overrides(tmp_path):
    env = {
        "BRIGHTKITCHEN__API__PORT": "9001",
        "BRIGHTKITCHEN__SITES__0__CAMERAS__1__ANALYSIS_FPS": "2.5",
        "BRIGHTKITCHEN__STORAGE__DATABASE": "sqlite:////tmp/x.db",
        "OTHER": "ignored",
    }
    config = load_config(write(tmp_path, GOOD), environ=env)
    assert config.api.port == 9001
    assert config.sites[0].cameras[1].analysis_fps == 2.5
    assert config.storage.database == "sqlite:////tmp/x.db"
    with pytest.raises(ConfigError, match="no such list item"):
        load_config(write(tmp_path, GOOD), environ={"BRIGHTKITCHEN__SITES__7__ID": "x"})
    with pytest.raises(ConfigError, match="api.port"):
        load_config(write(tmp_path, GOOD), environ={"BRIGHTKITCHEN__API__PORT": "not-a-port"})


def test_json_schema_is_generated_and_strict():
    schema = json.loads(json_schema())
    assert schema["additionalProperties"] is False
    assert {"sites", "models", "rules", "storage", "bus", "api"} <= set(schema["properties"])
    assert schema["$defs"]["RuleConfig"]["additionalProperties"] is False


def test_cli_config_check(tmp_path, capsys):
    assert main(["config", "check", str(write(tmp_path, GOOD))]) == 0
    assert "ok (1 sites, 2 cameras, 2 rules)" in capsys.readouterr().out
    assert main(["config", "check", str(write(tmp_path, GOOD.replace("classes:", "clases:", 1)))]) == 2
    err = capsys.readouterr().err
    assert "rules[0].clases: unknown key" in err and "rules[0].classes: Field required" in err


def test_demo_config_is_valid(tmp_path):
    from brightkitchen.demo import demo_config

    config = demo_config(tmp_path, "rtsp://127.0.0.1:1/kitchen-1")
    assert config.sites[0].cameras[0].url == "rtsp://127.0.0.1:1/kitchen-1"
    assert {r.name for r in config.rules} == {"no_hat", "no_mask", "smoking", "rodent", "rodent_after_hours",
                                              "bare_hand_food", "phone"}
