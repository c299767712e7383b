"""Modbus output configuration: keys validated with errors that name the key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmsgw.cli import main
from bmsgw.config import ConfigError, load_settings

EXAMPLE = Path(__file__).parent.parent / "examples" / "modbus-ems.toml"


def outputs(**output: object) -> dict[str, object]:
    return {"outputs": [{"protocol": "modbus-tcp", **output}]}


def test_defaults_are_safe() -> None:
    settings, _ = load_settings(None, outputs(), env={})
    out = settings.outputs[0]
    assert (out.host, out.tcp_port, out.unit_id) == ("127.0.0.1", None, 1)
    assert out.writes is False
    assert out.allow == []
    assert out.control_timeout_s == 60.0


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            {"allow": ["192.168.1.300"]},
            "outputs[0].allow = ['192.168.1.300']: '192.168.1.300' is not an IP address",
        ),
        ({"allow": ["10.0.0.0/8", "ems"]}, "'ems' is not an IP address or network (e.g. 192.168.1.10"),
        (
            {"control_timeout_s": 0},
            "outputs[0].control_timeout_s = 0: Input should be greater than or equal to 1",
        ),
        ({"unit_id": 248}, "outputs[0].unit_id = 248: Input should be less than or equal to 247"),
        ({"tcp_port": 70000}, "outputs[0].tcp_port = 70000: Input should be less than or equal to 65535"),
        ({"protocol": "modbus-rtu"}, "modbus-rtu needs port (the serial device"),
        (
            {"protocol": "modbus-rtu", "port": "/dev/ttyUSB0", "allow": ["10.0.0.1"]},
            "allow applies to modbus-tcp",
        ),
        ({"writes": "sometimes"}, "outputs[0].writes = 'sometimes': Input should be a valid boolean"),
    ],
)
def test_errors(output: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, outputs(**output), env={})
    assert any(expected in line for line in err.value.problems), err.value.problems


def test_networks_are_allowed() -> None:
    settings, _ = load_settings(
        None, outputs(writes=True, allow=["192.168.1.0/24", "::1", "10.0.0.7"]), env={}
    )
    assert settings.outputs[0].allow == ["192.168.1.0/24", "::1", "10.0.0.7"]


def test_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out
