"""Home Assistant MQTT discovery: the device config, and the JSON state document its templates read. Pure.

One retained device-discovery message (`<discovery_prefix>/device/<node>/config`, with `dev`, `o` and one
`cmps` entry per entity) and one flat JSON state document (HA units: %, V, A, W, °C, kWh; null where a
value is unknown, so every template renders to HA's "unknown" instead of failing). docs/mqtt.md lists both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bmsgw import __version__
from bmsgw.config import Settings
from bmsgw.core.balancing import transfers_sent
from bmsgw.model import Alarm, AlarmCode, CellRef, ChargeStage, GatewayState, PackStatus, PackView, Reason
from bmsgw.telemetry.snapshot import finite, transfer_list

__all__ = [
    "ALARM_LEVELS",
    "AVAILABLE",
    "NOT_AVAILABLE",
    "Entity",
    "Topics",
    "discovery_payload",
    "entities",
    "slug",
    "state_payload",
]

AVAILABLE, NOT_AVAILABLE = "online", "offline"
ALARM_LEVELS = ("ok", "warning", "alarm", "fault")
"""States of the overall alarm-level sensor: "ok", then AlarmLevel names in rising severity."""


def slug(text: str) -> str:
    """`text` as an MQTT/Home Assistant id: lower case, every character outside [a-z0-9_-] becomes _."""
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic the MQTT service uses, and the node id that prefixes its unique_ids."""

    node: str
    state: str
    availability: str
    discovery: str
    ha_status: str

    @classmethod
    def of(cls, settings: Settings) -> Topics:
        """Topics for this configuration (`topic_prefix` defaults to bmsgw/<gateway.name as a slug>)."""
        m, name = settings.mqtt, slug(settings.gateway.name)
        base = m.topic_prefix or f"bmsgw/{name}"
        return cls(
            node=f"bmsgw_{name}",
            state=f"{base}/state",
            availability=f"{base}/availability",
            discovery=f"{m.discovery_prefix}/device/bmsgw_{name}/config",
            ha_status=f"{m.discovery_prefix}/status",
        )


@dataclass(frozen=True, slots=True)
class Entity:
    """One HA entity; `value` and `attributes` are Jinja expressions over the state document `value_json`."""

    key: str
    name: str
    value: str
    platform: str = "sensor"
    device_class: str | None = None
    unit: str | None = None
    state_class: str | None = None
    precision: int | None = None
    options: tuple[str, ...] | None = None
    attributes: str | None = None
    category: str | None = None
    enabled: bool = True
    icon: str | None = None

    def component(self, name_slug: str, state_topic: str) -> dict[str, Any]:
        """This entity's entry in the device config's `cmps`."""
        template = (
            f"{{{{ 'ON' if {self.value} else 'OFF' }}}}"
            if self.platform == "binary_sensor"
            else f"{{{{ {self.value} }}}}"
        )
        out: dict[str, Any] = {
            "p": self.platform,
            "name": self.name,
            "unique_id": f"bmsgw_{name_slug}_{self.key}",
            "default_entity_id": f"{self.platform}.{name_slug}_{self.key}",
            "value_template": template,
        }
        optional = {
            "device_class": self.device_class,
            "unit_of_measurement": self.unit,
            "state_class": self.state_class,
            "suggested_display_precision": self.precision,
            "options": list(self.options) if self.options is not None else None,
            "entity_category": self.category,
            "icon": self.icon,
        }
        out |= {k: v for k, v in optional.items() if v is not None}
        if self.attributes is not None:
            out["json_attributes_topic"] = state_topic
            out["json_attributes_template"] = f"{{{{ ({self.attributes}) | tojson }}}}"
        if not self.enabled:
            out["enabled_by_default"] = False
        return out


def entities(settings: Settings) -> list[Entity]:
    """Every entity of the gateway device, in a stable order (system, limits, alarms, energy, packs)."""
    out = [
        _measure("soc", "State of charge", "battery", "%", 1),
        Entity("soh", "State of health", "value_json.soh", unit="%", state_class="measurement",
               precision=0, icon="mdi:battery-heart-variant"),
        _measure("voltage", "Voltage", "voltage", "V", 2),
        _measure("current", "Current", "current", "A", 1),
        _measure("power", "Power", "power", "W", 0),
        _measure("temperature", "Temperature", "temperature", "°C", 1),
        _measure("cell_v_min", "Cell voltage min", "voltage", "V", 3, attributes="value_json.cell_v_min_at"),
        _measure("cell_v_max", "Cell voltage max", "voltage", "V", 3, attributes="value_json.cell_v_max_at"),
        _measure("cell_v_delta", "Cell voltage spread", "voltage", "V", 3),
        _measure("cell_t_min", "Cell temperature min", "temperature", "°C", 1,
                 attributes="value_json.cell_t_min_at"),
        _measure("cell_t_max", "Cell temperature max", "temperature", "°C", 1,
                 attributes="value_json.cell_t_max_at"),
    ]  # fmt: skip
    reasons = tuple(r.value for r in Reason)
    for key, name, dc, unit in _LIMITS:
        out.append(_measure(key, name, dc, unit, 1))
        out.append(
            Entity(f"{key}_reason", f"{name} reason", f"value_json.{key}_reason", device_class="enum",
                   options=reasons, category="diagnostic")
        )  # fmt: skip
    out += [
        Entity("charge_enable", "Charge allowed", "value_json.charge_enable", platform="binary_sensor"),
        Entity("discharge_enable", "Discharge allowed", "value_json.discharge_enable",
               platform="binary_sensor"),
        Entity("packs_online", "Packs online", "value_json.packs_online", state_class="measurement",
               category="diagnostic", icon="mdi:battery-sync"),
        Entity("alarm_level", "Alarm level", "value_json.alarm_level", device_class="enum",
               options=ALARM_LEVELS, icon="mdi:alert"),
        Entity("charge_stage", "Charge stage", "value_json.charge_stage", device_class="enum",
               options=tuple(s.value for s in ChargeStage), icon="mdi:battery-charging-high"),
    ]  # fmt: skip
    for code in AlarmCode:
        expr = f"value_json.alarms.{code.value}"
        out.append(
            Entity(f"alarm_{code.value}", _ALARM_NAMES.get(code, code.value.replace("_", " ").capitalize()),
                   expr, platform="binary_sensor", device_class="problem", attributes=f"{expr} or {{}}")
        )  # fmt: skip
    out += [
        Entity("energy_charged", "Energy charged", "value_json.energy_charged_kwh", device_class="energy",
               unit="kWh", state_class="total_increasing", precision=3),
        Entity("energy_discharged", "Energy discharged", "value_json.energy_discharged_kwh",
               device_class="energy", unit="kWh", state_class="total_increasing", precision=3),
        Entity("time_to_empty", "Time to reserve", "value_json.time_to_empty_min", device_class="duration",
               unit="min", state_class="measurement", precision=0, attributes=_BASIS, icon="mdi:timer-sand"),
        Entity("time_to_full", "Time to full", "value_json.time_to_full_min", device_class="duration",
               unit="min", state_class="measurement", precision=0, attributes=_BASIS,
               icon="mdi:battery-clock"),
    ]  # fmt: skip
    for i, pack in enumerate(settings.packs):
        key, at, name = f"pack_{slug(pack.id)}", f"value_json.packs[{i}]", f"Pack {pack.id}"
        out += [
            _measure(f"{key}_soc", f"{name} state of charge", "battery", "%", 1, value=f"{at}.soc"),
            _measure(f"{key}_voltage", f"{name} voltage", "voltage", "V", 2, value=f"{at}.voltage"),
            _measure(f"{key}_current", f"{name} current", "current", "A", 1, value=f"{at}.current"),
            Entity(f"{key}_status", f"{name} status", f"{at}.status", device_class="enum",
                   options=tuple(s.value for s in PackStatus), category="diagnostic"),
        ]  # fmt: skip
        if settings.balancing.mode != "off":
            out.append(
                Entity(f"{key}_balancing", f"{name} balancing", f"{at}.balancing_cells or {at}.transfers",
                       platform="binary_sensor", icon="mdi:scale-balance",
                       attributes=f"{{'cells': {at}.balancing_cells, 'transfers': {at}.transfers}}")
            )  # fmt: skip
        if settings.balancing.mode == "active":
            out.append(_measure(f"{key}_transfer_current", f"{name} balancing transfer current", "current",
                                "A", 1, value=f"{at}.transfer_current"))  # fmt: skip
        out += [
            _measure(f"{key}_cell_{n + 1}_voltage", f"{name} cell {n + 1} voltage", "voltage", "V", 3,
                     value=f"{at}.cell_v[{n}]", enabled=False)
            for n in range(pack.cells)
        ]  # fmt: skip
        out += [
            _measure(f"{key}_temperature_{n + 1}", f"{name} temperature {n + 1}", "temperature", "°C", 1,
                     value=f"{at}.cell_t[{n}]", enabled=False)
            for n in range(pack.sensors)
        ]  # fmt: skip
    return out


def discovery_payload(settings: Settings, topics: Topics) -> dict[str, Any]:
    """The retained device-discovery config: device, origin, shared availability/state topic, components."""
    name_slug = slug(settings.gateway.name)
    return {
        "dev": {
            "ids": [topics.node],
            "name": settings.gateway.name,
            "mf": "bmsgw",
            "mdl": f"{settings.chemistry.value.upper()} battery gateway, {len(settings.packs)} pack(s)",
            "sw": __version__,
        },
        "o": {"name": "bmsgw", "sw": __version__},
        "availability": [
            {
                "topic": topics.availability,
                "payload_available": AVAILABLE,
                "payload_not_available": NOT_AVAILABLE,
            }
        ],
        "state_topic": topics.state,
        "qos": 0,
        "cmps": {e.key: e.component(name_slug, topics.state) for e in entities(settings)},
    }


def state_payload(
    state: GatewayState, settings: Settings, charged_wh: float, discharged_wh: float
) -> dict[str, Any]:
    """The state document every entity's template reads; mirrors `state` (SOC/SOH in %, energy in kWh)."""
    ids = [p.id for p in state.packs]
    lim = state.limits
    out: dict[str, Any] = {
        "t": round(state.t, 3),
        "usable": state.usable,
        "packs_online": state.modules_online,
        "soc": _pct(state.soc),
        "soh": _pct(state.soh),
        "voltage": _round(state.voltage, 3),
        "current": _round(state.current, 3),
        "power": _round(state.voltage * state.current, 1),
        "temperature": _round(state.temperature, 2),
        "cell_v_min": _round(state.cell_v_min, 4),
        "cell_v_max": _round(state.cell_v_max, 4),
        "cell_v_delta": _round(state.cell_v_max - state.cell_v_min, 4),
        "cell_t_min": _round(state.cell_t_min, 2),
        "cell_t_max": _round(state.cell_t_max, 2),
        "cell_v_min_at": _at(state.cell_v_min, state.cell_v_min_at, ids),
        "cell_v_max_at": _at(state.cell_v_max, state.cell_v_max_at, ids),
        "cell_t_min_at": _at(state.cell_t_min, state.cell_t_min_at, ids),
        "cell_t_max_at": _at(state.cell_t_max, state.cell_t_max_at, ids),
    }
    for key, limit in (("cvl", lim.cvl), ("ccl", lim.ccl), ("dcl", lim.dcl), ("dvl", lim.dvl)):
        out[key] = _round(limit.value, 3)
        out[f"{key}_reason"] = limit.reason.value
    top = max((a.level for a in state.alarms), default=None)
    fc = state.forecast
    out |= {
        "charge_enable": lim.charge_enable,
        "discharge_enable": lim.discharge_enable,
        "charge_stage": lim.charge_stage.value,
        "alarm_level": top.name.lower() if top is not None else ALARM_LEVELS[0],
        "alarms": {
            code.value: _alarm([a for a in state.alarms if a.code is code], ids) for code in AlarmCode
        },
        # Runtime forecast in minutes; null while unknown or beyond the forecast horizon.
        "time_to_empty_min": _minutes(fc.time_to_empty_s) if fc is not None else None,
        "time_to_full_min": _minutes(fc.time_to_full_s) if fc is not None else None,
        "forecast_basis": fc.basis if fc is not None else None,
        "energy_charged_kwh": round(charged_wh / 1000, 6),
        "energy_discharged_kwh": round(discharged_wh / 1000, 6),
        "packs": [
            _pack(state, v, cfg.cells, cfg.sensors)
            for v, cfg in zip(state.packs, settings.packs, strict=True)
        ],
    }
    return out


_LIMITS = (
    ("cvl", "Charge voltage limit", "voltage", "V"),
    ("ccl", "Charge current limit", "current", "A"),
    ("dcl", "Discharge current limit", "current", "A"),
    ("dvl", "Discharge voltage limit", "voltage", "V"),
)

_BASIS = "{'basis': value_json.forecast_basis}"
"""Forecast attributes: "load_profile" (learned per hour of week) or "present_current"."""

_ALARM_NAMES = {
    AlarmCode.COMM_LOST: "BMS communication lost",
    AlarmCode.BMS_FAULT: "BMS fault",
    AlarmCode.CHARGE_UNDERTEMPERATURE: "Charge undertemperature (cold charge)",
}


def _measure(
    key: str,
    name: str,
    device_class: str,
    unit: str,
    precision: int,
    *,
    value: str | None = None,
    attributes: str | None = None,
    enabled: bool = True,
) -> Entity:
    return Entity(
        key, name, value or f"value_json.{key}", device_class=device_class, unit=unit,
        state_class="measurement", precision=precision, attributes=attributes, enabled=enabled,
    )  # fmt: skip


def _round(x: float, digits: int) -> float | None:
    v = finite(x)
    return round(v, digits) if v is not None else None


def _minutes(seconds: float) -> float | None:
    v = finite(seconds)
    return round(v / 60, 1) if v is not None else None


def _pct(ratio: float) -> float | None:
    v = finite(ratio)
    return round(v * 100, 2) if v is not None else None


def _at(value: float, at: CellRef, ids: list[str]) -> dict[str, Any]:
    """Where an extreme sits (1-based cell/sensor number), or {} when the extreme is unknown."""
    return {"pack": ids[at.pack], "cell": at.cell + 1} if finite(value) is not None else {}


def _alarm(active: list[Alarm], ids: list[str]) -> dict[str, Any] | None:
    if not active:
        return None
    details = dict.fromkeys(a.detail for a in active if a.detail)
    return {
        "level": max(a.level for a in active).name.lower(),
        "packs": sorted({ids[a.pack] for a in active if a.pack is not None}),
        "detail": "; ".join(details),
    }


def _pack(state: GatewayState, view: PackView, cells: int, sensors: int) -> dict[str, Any]:
    s = view.sample
    cell_v = [_round(x, 4) for x in s.cell_v[:cells]] if s is not None else []
    cell_t = [_round(x, 2) for x in s.cell_t[:sensors]] if s is not None else []
    moves = transfers_sent(state, view)
    return {
        "id": view.id,
        "status": view.status.value,
        "soc": _pct(view.soc),
        "voltage": _round(s.voltage, 3) if s is not None else None,
        "current": _round(s.current, 3) if s is not None else None,
        # Fixed length (the configured counts) so every per-cell template resolves, to null when unknown.
        "cell_v": cell_v + [None] * (cells - len(cell_v)),
        "cell_t": cell_t + [None] * (sensors - len(cell_t)),
        # Balancing: the cells bled (from 1) and the active transfers the gateway commands.
        "balancing_cells": [c + 1 for c in range(cells) if view.balance_mask >> c & 1],
        "transfers": transfer_list(moves),
        "transfer_current": round(sum(tr.current_a for tr in moves), 3) if s is not None else None,
    }
