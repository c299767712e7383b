"""Home Assistant discovery config and state document (pure): ids, classes, and templates rendered by Jinja2.

HA renders `value_template` with Jinja2 over `value_json`; rendering the same templates here against the
document we publish checks that every entity reads the value the GatewayState holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pytest

from bmsgw.cli import main
from bmsgw.config import ConfigError, Settings, flatten, load_settings
from bmsgw.model import AlarmCode, ChargeStage, GatewayState, PackSample, Reason
from bmsgw.pipeline import Pipeline
from bmsgw.telemetry.ha_discovery import Topics, discovery_payload, entities, slug, state_payload

# device_class -> allowed units (HA sensor docs); None: the class takes no unit.
UNITS = {"battery": {"%"}, "voltage": {"V"}, "current": {"A"}, "power": {"W"}, "temperature": {"°C"},
         "energy": {"kWh"}, "enum": {None}, "duration": {"s", "min", "h", "d"}}  # fmt: skip
ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


def settings(**mqtt: Any) -> Settings:
    s, _ = load_settings(
        None,
        {
            "gateway.name": "Garage Rack",
            "packs": [
                {"id": "p1", "cells": 4, "sensors": 2},
                {"id": "Pack B", "cells": 4, "sensors": 2, "address": 1},
            ],
            "mqtt": {"enabled": True, **mqtt},
        },
        env={},
    )
    return s


def fed(s: Settings, steps: int = 10, cell0: float = 3.30) -> GatewayState:
    """A state after `steps` samples of both packs (pack 2 discharging, pack 1 charging)."""
    pipe = Pipeline(s)
    state = pipe.state
    for k in range(steps):
        for i, current in enumerate((12.5, -4.0)):
            cells = np.array([cell0, 3.31, 3.29 + i * 0.01, 3.305])
            pipe.submit(PackSample(i, k * 0.5, cells, np.array([21.0 + i, 23.5]), current, float(cells.sum()),
                                   alive=k & 0xF))  # fmt: skip
        state = pipe.step(k * 0.5)
    return state


def render(template: str, doc: dict[str, Any]) -> str:
    return ENV.from_string(template).render(value_json=json.loads(json.dumps(doc, allow_nan=False)))


def components(s: Settings) -> dict[str, dict[str, Any]]:
    cmps: dict[str, dict[str, Any]] = discovery_payload(s, Topics.of(s))["cmps"]
    return cmps


def test_topics_and_device_block() -> None:
    s = settings()
    t = Topics.of(s)
    assert t.state == "bmsgw/garage_rack/state"
    assert t.availability == "bmsgw/garage_rack/availability"
    assert t.discovery == "homeassistant/device/bmsgw_garage_rack/config"
    assert t.ha_status == "homeassistant/status"
    custom = Topics.of(settings(topic_prefix="site/a/battery", discovery_prefix="ha"))
    assert custom.state == "site/a/battery/state"
    assert custom.discovery == "ha/device/bmsgw_garage_rack/config"
    doc = discovery_payload(s, t)
    assert doc["dev"]["ids"] == ["bmsgw_garage_rack"]
    assert doc["dev"]["name"] == "Garage Rack"
    assert doc["o"]["name"] == "bmsgw"
    assert doc["state_topic"] == t.state
    assert doc["availability"] == [
        {"topic": t.availability, "payload_available": "online", "payload_not_available": "offline"}
    ]


def test_unique_ids_stable_and_unique() -> None:
    cmps = components(settings())
    ids = [c["unique_id"] for c in cmps.values()]
    assert len(set(ids)) == len(ids)
    for key, c in cmps.items():
        assert re.fullmatch(r"[a-z0-9_-]+", key)
        assert c["unique_id"] == f"bmsgw_garage_rack_{key}"
        assert c["default_entity_id"] == f"{c['p']}.garage_rack_{key}"
        assert "object_id" not in c  # deprecated in HA 2025.10, dropped in 2026.4
    assert cmps["pack_pack_b_soc"]["value_template"] == "{{ value_json.packs[1].soc }}"
    assert components(settings())["soc"] == cmps["soc"]  # same config → same discovery


def test_classes_units_and_state_classes() -> None:
    cmps = components(settings())
    for key, c in cmps.items():
        dc = c.get("device_class")
        if c["p"] == "binary_sensor":
            assert dc in (None, "problem"), key
            assert "unit_of_measurement" not in c
            continue
        if dc is not None:
            assert c.get("unit_of_measurement") in UNITS[dc], key
        if dc == "enum":
            assert c["options"], key
            assert "state_class" not in c, key
        if dc == "energy":
            assert c["state_class"] == "total_increasing", key
    soc = cmps["soc"]
    assert (soc["device_class"], soc["unit_of_measurement"], soc["state_class"]) == (
        "battery",
        "%",
        "measurement",
    )
    assert cmps["energy_charged"]["unit_of_measurement"] == "kWh"
    assert cmps["energy_discharged"]["device_class"] == "energy"
    assert cmps["ccl_reason"]["options"] == [r.value for r in Reason]
    assert cmps["alarm_level"]["options"] == ["ok", "warning", "alarm", "fault"]


def test_one_problem_sensor_per_alarm_code() -> None:
    cmps = components(settings())
    for code in AlarmCode:
        c = cmps[f"alarm_{code.value}"]
        assert c["p"] == "binary_sensor"
        assert c["device_class"] == "problem"
    problems = [k for k, c in cmps.items() if c.get("device_class") == "problem"]
    assert len(problems) == len(AlarmCode)


def test_only_per_cell_and_per_sensor_entities_disabled_by_default() -> None:
    cmps = components(settings())
    disabled = {k for k, c in cmps.items() if c.get("enabled_by_default") is False}
    expected = {f"pack_{p}_cell_{n}_voltage" for p in ("p1", "pack_b") for n in range(1, 5)}
    expected |= {f"pack_{p}_temperature_{n}" for p in ("p1", "pack_b") for n in (1, 2)}
    assert disabled == expected


def test_templates_read_the_gateway_state() -> None:
    s = settings()
    state = fed(s)
    assert state.usable
    doc = state_payload(state, s, charged_wh=1234.5, discharged_wh=6.0)
    cmps = components(s)

    def value(key: str) -> str:
        return render(cmps[key]["value_template"], doc)

    assert float(value("soc")) == pytest.approx(state.soc * 100, abs=0.01)
    assert float(value("voltage")) == pytest.approx(state.voltage, abs=1e-3)
    assert float(value("current")) == pytest.approx(8.5)
    assert float(value("power")) == pytest.approx(state.voltage * state.current, abs=0.1)
    assert float(value("temperature")) == pytest.approx(state.temperature, abs=0.01)
    assert float(value("cell_v_min")) == pytest.approx(3.29)
    assert float(value("cell_v_max")) == pytest.approx(3.31)
    assert float(value("cell_v_delta")) == pytest.approx(0.02)
    assert float(value("cell_t_max")) == pytest.approx(23.5)
    for key in ("cvl", "ccl", "dcl", "dvl"):
        limit = getattr(state.limits, key)
        assert float(value(key)) == pytest.approx(limit.value, abs=1e-3)
        assert value(f"{key}_reason") == limit.reason.value
    assert value("charge_enable") == ("ON" if state.limits.charge_enable else "OFF")
    assert value("charge_stage") == state.limits.charge_stage.value
    assert cmps["charge_stage"]["options"] == [s.value for s in ChargeStage]
    assert value("packs_online") == "2"
    assert value("energy_charged") == "1.2345"
    assert value("energy_discharged") == "0.006"
    assert value("pack_pack_b_current") == "-4.0"
    assert value("pack_p1_status") == "online"
    assert float(value("pack_pack_b_cell_3_voltage")) == pytest.approx(3.30)
    assert float(value("pack_p1_temperature_2")) == pytest.approx(23.5)
    where = json.loads(render(cmps["cell_v_min"]["json_attributes_template"], doc))
    assert where == {"pack": "p1", "cell": 3}


def test_alarm_sensor_on_with_attributes_then_off() -> None:
    s = settings()
    cmps = components(s)
    alarmed = fed(s, steps=20, cell0=3.80)  # above the LFP alarm level for longer than debounce_s
    assert alarmed.alarm_level(AlarmCode.CELL_OVERVOLTAGE) is not None
    doc = state_payload(alarmed, s, 0.0, 0.0)
    c = cmps["alarm_cell_overvoltage"]
    assert render(c["value_template"], doc) == "ON"
    attrs = json.loads(render(c["json_attributes_template"], doc))
    assert attrs["packs"] == ["Pack B", "p1"]  # both packs' cell 1 is over the limit
    assert attrs["level"] in ("alarm", "fault")
    assert render(cmps["alarm_level"]["value_template"], doc) in ("alarm", "fault")
    clean = state_payload(fed(s), s, 0.0, 0.0)
    assert render(c["value_template"], clean) == "OFF"
    assert json.loads(render(c["json_attributes_template"], clean)) == {}
    assert render(cmps["alarm_level"]["value_template"], clean) == "ok"


def test_every_template_renders_before_any_data() -> None:
    """Unknown values render as "None" (HA: unknown), never a template error."""
    s = settings()
    doc = state_payload(Pipeline(s).step(1.0), s, 0.0, 0.0)
    json.dumps(doc, allow_nan=False)
    for key, c in components(s).items():
        out = render(c["value_template"], doc)
        assert out, key
        if "json_attributes_template" in c:
            assert isinstance(json.loads(render(c["json_attributes_template"], doc)), dict)
    assert render(components(s)["pack_p1_cell_1_voltage"]["value_template"], doc) == "None"
    assert render(components(s)["alarm_comm_lost"]["value_template"], doc) == "ON"


def test_slug() -> None:
    assert slug("Garage Rack #2") == "garage_rack__2"
    assert slug("a-b_C9") == "a-b_c9"


@pytest.mark.parametrize(
    ("mqtt", "expected"),
    [
        ({"topic_prefix": "bmsgw/+/x"}, "mqtt.topic_prefix = 'bmsgw/+/x': expected an MQTT topic"),
        ({"discovery_prefix": "homeassistant/"}, "mqtt.discovery_prefix = 'homeassistant/': expected"),
        ({"password": "hunter2"}, "password is set but username is not"),
        ({"port": 0}, "mqtt.port = 0: Input should be greater than or equal to 1"),
        ({"publish_interval_s": 0}, "mqtt.publish_interval_s = 0"),
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "mqtt.tls_ca_file = '/nonexistent/ca.pem': no such file"),
        ({"qos": 1}, "mqtt.qos: unknown key; allowed keys here: enabled, host, port"),
    ],
)
def test_config_errors_name_key_and_value(mqtt: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"mqtt": {"enabled": True, **mqtt}}, env={})
    assert expected in str(err.value)


def test_pack_ids_must_stay_distinct_as_ids_when_enabled() -> None:
    packs = [{"id": "a b"}, {"id": "a_b", "address": 1}]
    load_settings(None, {"packs": packs}, env={})  # fine without MQTT
    with pytest.raises(ConfigError, match="ids must stay distinct"):
        load_settings(None, {"packs": packs, "mqtt.enabled": True}, env={})


def test_password_is_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nenabled = true\nusername = "gw"\npassword = "s3cret-pw"\n')
    s, origin = load_settings(path, env={})
    assert s.mqtt.password is not None
    assert s.mqtt.password.get_secret_value() == "s3cret-pw"
    shown = dict(flatten(s.model_dump(mode="json")))
    assert "s3cret-pw" not in repr(shown)
    assert "s3cret-pw" not in repr(s)
    assert origin["mqtt.password"].value == "file"


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "examples" / "mqtt.toml"
    assert main(["config", "check", str(example)]) == 0
    s, _ = load_settings(example, env={})
    assert s.mqtt.enabled
    assert Topics.of(s).state == "bmsgw/garage-ess/state"


def test_defaults_disabled() -> None:
    s, _ = load_settings(None, env={})
    assert not s.mqtt.enabled
    assert s.mqtt.port == 1883
    assert s.mqtt.discovery_prefix == "homeassistant"
    assert s.mqtt.publish_interval_s == 5.0
    assert len(entities(s)) > 40
