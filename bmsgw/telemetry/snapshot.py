"""GatewayState as a JSON-ready dict (the web API's and the dashboard's vocabulary).

SI units as in the model (V, A, W, °C, s; SOC/SOH as ratios 0..1); NaN becomes null; cells and sensors
are numbered from 1 wherever a location is named.
"""

from __future__ import annotations

import math
from typing import Any

from bmsgw.core.balancing import transfers_sent
from bmsgw.model import (
    Alarm,
    BmsFlags,
    CellRef,
    Forecast,
    GatewayState,
    Limit,
    PackHealth,
    PackView,
    Transfer,
)

__all__ = ["finite", "state_dict", "transfer_list"]


def state_dict(state: GatewayState) -> dict[str, Any]:
    """Everything the state holds, JSON-serialisable (no NaN, no numpy types)."""
    ids = [p.id for p in state.packs]
    lim = state.limits
    return {
        "t": state.t,
        "usable": state.usable,
        "packs_online": state.modules_online,
        "soc": finite(state.soc),
        "soh": finite(state.soh),
        "voltage": finite(state.voltage),
        "current": finite(state.current),
        "power": finite(state.voltage * state.current),
        "temperature": finite(state.temperature),
        "capacity_ah": state.capacity_ah,
        "cell_v_min": _extreme(state.cell_v_min, state.cell_v_min_at, ids),
        "cell_v_max": _extreme(state.cell_v_max, state.cell_v_max_at, ids),
        "cell_t_min": _extreme(state.cell_t_min, state.cell_t_min_at, ids),
        "cell_t_max": _extreme(state.cell_t_max, state.cell_t_max_at, ids),
        "limits": {
            "cvl": _limit(lim.cvl),
            "ccl": _limit(lim.ccl),
            "dcl": _limit(lim.dcl),
            "dvl": _limit(lim.dvl),
            "charge_enable": lim.charge_enable,
            "discharge_enable": lim.discharge_enable,
            "force_charge_1": lim.force_charge_1,
            "force_charge_2": lim.force_charge_2,
            "full_charge_request": lim.full_charge_request,
            "charge_stage": lim.charge_stage.value,  # bulk, absorption, float: what CVL follows
            "ccl_pack": ids[state.ccl_pack] if state.ccl_pack is not None else None,  # binding pack
            "dcl_pack": ids[state.dcl_pack] if state.dcl_pack is not None else None,
        },
        "alarms": [_alarm(a, ids) for a in state.alarms],
        "packs": [_pack(p, state) for p in state.packs],
        "forecast": _forecast(state.forecast),
    }


def transfer_list(transfers: tuple[Transfer, ...]) -> list[dict[str, Any]]:
    """Transfers as JSON: `from_cell` gives `current` (A) to `to_cell`, cells numbered from 1."""
    return [{"from_cell": tr.source + 1, "to_cell": tr.sink + 1, "current": tr.current_a} for tr in transfers]


def finite(x: float) -> float | None:
    """x as a float, or None when it is NaN or infinite."""
    x = float(x)
    return x if math.isfinite(x) else None


def _extreme(value: float, at: CellRef, ids: list[str]) -> dict[str, Any] | None:
    if not math.isfinite(value):
        return None
    return {"value": float(value), "pack": ids[at.pack], "cell": at.cell + 1}


def _forecast(fc: Forecast | None) -> dict[str, Any] | None:
    """Seconds to the reserve / to full (null: not within the forecast horizon), or null when unknown."""
    if fc is None:
        return None
    return {"time_to_empty_s": finite(fc.time_to_empty_s), "time_to_full_s": finite(fc.time_to_full_s),
            "basis": fc.basis}  # fmt: skip


def _limit(limit: Limit) -> dict[str, Any]:
    return {"value": finite(limit.value), "reason": limit.reason.value}


def _alarm(alarm: Alarm, ids: list[str]) -> dict[str, Any]:
    return {
        "code": alarm.code.value,
        "level": alarm.level.name.lower(),
        "since": alarm.since,
        "pack": ids[alarm.pack] if alarm.pack is not None else None,
        "detail": alarm.detail,
    }


def _health(h: PackHealth | None) -> dict[str, Any] | None:
    if h is None:
        return None
    return {
        "soh_capacity": finite(h.soh_capacity),
        "soh_resistance": finite(h.soh_resistance),
        "capacity_ah": finite(h.capacity_ah),
        "r0_ohm": finite(h.r0_ohm),
        "equivalent_full_cycles": finite(h.equivalent_full_cycles),
        "calendar_days": finite(h.calendar_days),
        "dod_histogram": list(h.dod_histogram),
        "cell_capacity_ah": [finite(x) for x in h.cell_capacity_ah],
        "cell_r0_ohm": [finite(x) for x in h.cell_r0_ohm],
        "cell_self_discharge_pct_day": [finite(x) for x in h.cell_self_discharge_pct_day],
    }


def _pack(view: PackView, state: GatewayState) -> dict[str, Any]:
    s = view.sample
    out: dict[str, Any] = {
        "index": view.pack,
        "id": view.id,
        "status": view.status.value,
        "soc": finite(view.soc),
        "soh": finite(view.soh),
        "balance_mask": view.balance_mask,
        "transfers": transfer_list(transfers_sent(state, view)),  # active balancing: what goes to the pack
        "contactor_open_request": view.contactor_open_request,
        "service": view.service.value,  # multi-pack: running, ramping, joining, isolated, absent
        "share": finite(view.share),  # fraction of the system current assumed for this pack
        "cell_soc": [finite(x) for x in view.cell_soc] if view.cell_soc is not None else None,
        "health": _health(view.health),
    }
    if s is None:
        return out | {"sample": None}
    n = len(s.cell_v)
    out["sample"] = {
        "t": s.t,
        "age_s": max(0.0, state.t - s.t),
        "voltage": finite(s.voltage),
        "current": finite(s.current),
        "power": finite(s.voltage * s.current),
        "cell_v": [finite(x) for x in s.cell_v],
        "cell_t": [finite(x) for x in s.cell_t],
        "balancing": [bool(view.balance_mask >> i & 1) for i in range(n)],
        "flags": [f.name.lower() for f in BmsFlags if f and f in s.flags and f.name],
        "soc_reported": finite(s.soc_reported) if s.soc_reported is not None else None,
    }
    return out
