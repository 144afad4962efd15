"""Config validation: unknown keys and bad values are errors that name the key."""

from __future__ import annotations

import pytest

from prefloop.config import PRESETS, load_config, load_preset, parse_config
from prefloop.errors import ConfigError


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError) as exc:
        parse_config({"queue": {"overlapp": 2}}, "prefloop.yaml")
    assert "unknown key 'queue.overlapp'" in str(exc.value)
    assert "did you mean 'overlap'" in str(exc.value)


def test_unknown_section_lists_nothing_misleading():
    with pytest.raises(ConfigError, match="unknown key 'quee'"):
        parse_config({"quee": {}}, "cfg")


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError) as exc:
        parse_config({"queue": {"overlap": -1}}, "cfg")
    assert "queue.overlap" in str(exc.value) and "-1" in str(exc.value)
    with pytest.raises(ConfigError, match="rating_scale must go from low to high"):
        parse_config({"queue": {"rating_scale": [5, 1]}}, "cfg")


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config(["a"], "cfg")


def test_yaml_syntax_error_names_the_file(tmp_path):
    p = tmp_path / "prefloop.yaml"
    p.write_text("queue: [unclosed\n")
    with pytest.raises(ConfigError, match=str(p)):
        load_config(p)


@pytest.mark.parametrize("name", PRESETS)
def test_every_shipped_preset_validates(name):
    cfg = load_preset(name)
    assert cfg.fingerprint() == load_preset(name).fingerprint()


def test_fingerprint_changes_with_settings():
    assert parse_config({"queue": {"overlap": 2}}).fingerprint() != parse_config({}).fingerprint()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("queue:\n  overlap: 2\nannotation: {}\nqueue:\n  overlap: 3\n", r":4: key 'queue' appears twice \(first at line 1\)"),
        ("queue:\n  overlap: 2\n  lease_seconds: 10\n  overlap: 3\n", r":4: key 'queue\.overlap' appears twice \(first at line 2\)"),
        ("judges:\n  panel:\n    - name: a\n      name: b\n", r":4: key 'judges\.panel\[0\]\.name' appears twice"),
    ],
)
def test_a_duplicated_key_is_an_error_naming_key_and_line(tmp_path, text, message):
    p = tmp_path / "prefloop.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=str(p) + message):
        load_config(p)


def test_yaml_and_validation_errors_are_one_line(tmp_path):
    p = tmp_path / "prefloop.yaml"
    p.write_text("queue:\n  overlap: 2\n   lease_seconds: [\n")
    with pytest.raises(ConfigError, match=str(p) + r":3: not valid YAML") as exc:
        load_config(p)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse_config({"queue": {"overlap": -1, "lease_seconds": 0}}, "cfg")
    assert "queue.overlap" in str(exc.value) and "queue.lease_seconds" in str(exc.value) and "\n" not in str(exc.value)
