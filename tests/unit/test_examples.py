"""The files of examples/ load as they are (issue 17.7)."""

from __future__ import annotations

import configparser
from pathlib import Path

from engine.cli.parser import build_parser
from engine.cli.serve import SCHEMA, Settings, resolve_settings
from engine.health.rules import Rules, tomllib

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_serve_toml_loads_and_names_every_setting():
    path = EXAMPLES / "serve.toml"
    s = resolve_settings(build_parser().parse_args(["serve", "--config", str(path)]))
    assert isinstance(s, Settings)
    assert s.data_dir == "/var/lib/ringflow"
    assert s.rules == str(EXAMPLES / "rules.toml")
    assert s.max_queued_bytes == 256 << 20
    # Every key of the schema is in the file, set or commented out.
    text = path.read_text()
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"{key} =" in text, key
    # Flags win over the file.
    s = resolve_settings(build_parser().parse_args(
        ["serve", "--config", str(path), "--workers", "3"]))
    assert s.workers == 3


def test_rules_example_loads():
    rules = Rules.load(EXAMPLES / "rules.toml")
    assert {r.metric for r in rules.rules} == {"cpu", "disk_used"}
    assert tomllib.loads((EXAMPLES / "rules.toml").read_text())["defaults"]["ttl"] == "60s"


def test_systemd_unit_parses_with_the_expected_keys():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(EXAMPLES / "ringflow.service")
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert service["User"] == "ringflow"
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "ringflow"
    assert "/var/lib/ringflow" in service["ExecStart"]
    assert "ringflow serve --config" in service["ExecStart"]
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert key in service
    assert unit["Install"]["WantedBy"] == "multi-user.target"
