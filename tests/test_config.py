from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from albumd.daemon.config import Config, ConfigError, load_config, parse_window
from albumd.daemon.service import window_open

BASE = {"inbox": "/srv/inbox", "archive": "/srv/archive", "state_dir": "/var/lib/albumd"}


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, BASE), environ={})
    assert c.db_url == "sqlite:////var/lib/albumd/albumd.db"
    assert c.inbox_after == "keep"
    assert c.processing_window is None and c.window is None
    assert c.watcher.stable_s == 5.0 and c.watcher.rescan_interval_s == 300
    assert c.default_album == "unsorted" and c.archive_template == "{album}/{stem}"
    assert c.model.path is None and c.model.allow_pickle is False
    assert c.max_attempts == 3 and c.crash_limit == 2


def test_environment_overrides_top_level_and_nested_keys(tmp_path: Path) -> None:
    env = {
        "ALBUMD_BATCH_SIZE": "4",
        "ALBUMD_WATCHER__STABLE_S": "1.5",
        "ALBUMD_PROCESSING_WINDOW": "22:00-06:00",
        "ALBUMD_PIPELINE__TONE__ENABLED": "false",
        "OTHER": "ignored",
    }
    c = load_config(write(tmp_path, BASE), environ=env)
    assert c.batch_size == 4
    assert c.watcher.stable_s == 1.5
    assert c.pipeline.tone.enabled is False
    assert c.window is not None and c.window[0].hour == 22


def test_config_path_from_environment(tmp_path: Path) -> None:
    p = write(tmp_path, {**BASE, "batch_size": 2})
    assert load_config(None, environ={"ALBUMD_CONFIG": str(p)}).batch_size == 2


def test_invalid_value_names_key_and_file(tmp_path: Path) -> None:
    p = write(tmp_path, {**BASE, "watcher": {"stable_s": -1}, "batch_size": "many"})
    with pytest.raises(ConfigError) as err:
        load_config(p, environ={})
    text = str(err.value)
    assert "watcher.stable_s" in text and "batch_size" in text
    assert str(p) in text


def test_invalid_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), environ={"ALBUMD_WATCHER__MODE": "sometimes"})
    assert "watcher.mode" in str(err.value) and "ALBUMD_WATCHER__MODE" in str(err.value)


def test_unknown_and_missing_keys_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"inbox": "/x", "archiv": "/y"}), environ={})
    text = str(err.value)
    assert "archiv: unknown key" in text
    assert "archive: required key is missing" in text and "state_dir: required key is missing" in text


def test_unreadable_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("inbox: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar, environ={})


@pytest.mark.parametrize("text", ["22:00", "25:00-06:00", "10:00-10:00", "ten-six"])
def test_bad_processing_window(text: str) -> None:
    with pytest.raises(ValueError):
        parse_window(text)


def test_template_must_name_the_stem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stem"):
        load_config(write(tmp_path, {**BASE, "archive_template": "{album}/x"}), environ={})
    with pytest.raises(ConfigError, match="archive_template"):
        load_config(write(tmp_path, {**BASE, "archive_template": "{album}/{user}"}), environ={})


def test_window_wraps_midnight() -> None:
    from datetime import datetime

    w = parse_window("22:00-06:00")
    assert window_open(w, datetime(2026, 1, 1, 23, 0))
    assert window_open(w, datetime(2026, 1, 1, 2, 0))  # a restart at 02:00 still works that night
    assert not window_open(w, datetime(2026, 1, 1, 12, 0))
    assert window_open(parse_window("09:00-17:00"), datetime(2026, 1, 1, 12, 0))
    assert not window_open(parse_window("09:00-17:00"), datetime(2026, 1, 1, 17, 0))
    assert window_open(None, datetime(2026, 1, 1, 12, 0))


def test_example_config_is_valid_and_complete() -> None:
    """config.example.yaml documents every key with its default."""
    example = Path(__file__).resolve().parents[1] / "config.example.yaml"
    data = yaml.safe_load(example.read_text())
    c = Config.model_validate(data)
    defaults = Config.model_validate(BASE).model_dump(mode="json")
    got = c.model_dump(mode="json")
    for key in ("inbox", "archive", "state_dir"):
        defaults.pop(key), got.pop(key)
    assert got == defaults

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k not in ("folder_modes",):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(Config.model_validate(BASE).model_dump(mode="json")) <= keys(data)


def test_fingerprint_changes_with_settings(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, BASE), environ={})
    b = load_config(write(tmp_path, BASE), environ={"ALBUMD_BATCH_SIZE": "2"})
    assert a.fingerprint() != b.fingerprint() and len(a.fingerprint()) == 64


def test_example_config_file_is_current() -> None:
    from albumd.daemon.config_example import render

    example = Path(__file__).resolve().parents[1] / "config.example.yaml"
    assert example.read_text() == render(), (
        "regenerate: python -m albumd.daemon.config_example > config.example.yaml"
    )
