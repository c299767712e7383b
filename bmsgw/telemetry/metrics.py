"""Prometheus text exposition (format 0.0.4) of the newest GatewayState, written by hand.

Names follow the Prometheus naming guide: `bmsgw_` prefix, base units (volts, amperes, celsius, ratio,
seconds, joules; watts as a convenience), `_total` counters. Measurements of a pack are exported only
while it is online; absent series mean "no data", never a default value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bmsgw.core.balancing import transfers_sent
from bmsgw.model import AlarmLevel, ChargeStage, GatewayState, PackStatus
from bmsgw.telemetry.energy import EnergyCounters

__all__ = ["CONTENT_TYPE", "IoCounter", "PackEnergy", "exposition"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]
_Rows = list[tuple[Labels, float]]


@dataclass(frozen=True, slots=True)
class IoCounter:
    """One sample of a counter kept by a source, output or the pipeline (`name` ends in _total)."""

    name: str
    help: str
    labels: Labels
    value: float


PackEnergy = EnergyCounters
"""The energy counters /metrics exports per pack (the gateway's `energy.EnergyCounters`)."""


def exposition(
    state: GatewayState,
    *,
    version: str,
    compiled: bool,
    energy: PackEnergy | None = None,
    counters: Sequence[IoCounter] = (),
    last_step_age_s: float | None = None,
) -> str:
    """The /metrics document for `state` plus build info, energy and I/O counters."""
    m = _Writer()
    m.gauge(
        "bmsgw_build_info",
        "Build: version and whether the compiled core runs.",
        [((("version", version), ("core", "compiled" if compiled else "pure")), 1)],
    )
    if last_step_age_s is not None:
        m.gauge(
            "bmsgw_last_step_age_seconds",
            "Wall seconds since the pipeline last published a state.",
            [((), last_step_age_s)],
        )
    _system(m, state)
    _limits(m, state)
    _alarms(m, state)
    _packs(m, state)
    if energy is not None:
        for name, help_, attr in (
            ("bmsgw_pack_charged_energy_joules_total", "Energy into the pack since start.", "charged_wh"),
            (
                "bmsgw_pack_discharged_energy_joules_total",
                "Energy out of the pack since start.",
                "discharged_wh",
            ),
        ):
            rows = [
                ((("pack", p.id),), getattr(e, attr) * 3600)
                for p, e in zip(state.packs, energy.meters, strict=True)
            ]
            m.counter(name, help_, rows)
    by_name: dict[str, list[IoCounter]] = {}
    for c in counters:
        by_name.setdefault(c.name, []).append(c)
    for name, group in by_name.items():
        m.counter(name, group[0].help, [(c.labels, c.value) for c in group])
    return m.text()


def _system(m: _Writer, state: GatewayState) -> None:
    m.gauge("bmsgw_soc_ratio", "System state of charge (0..1).", [((), state.soc)])
    m.gauge("bmsgw_soh_ratio", "System state of health (0..1).", [((), state.soh)])
    m.gauge("bmsgw_packs_online", "Packs whose data the core uses.", [((), state.modules_online)])
    m.gauge("bmsgw_packs_configured", "Packs in the configuration.", [((), len(state.packs))])
    if not state.usable:
        return
    m.gauge("bmsgw_voltage_volts", "System voltage (mean of online packs).", [((), state.voltage)])
    m.gauge("bmsgw_current_amperes", "System current, positive = charging.", [((), state.current)])
    m.gauge("bmsgw_power_watts", "System power, positive = charging.", [((), state.voltage * state.current)])
    m.gauge("bmsgw_temperature_celsius", "Mean of all cell temperature sensors.", [((), state.temperature)])
    m.gauge("bmsgw_cell_voltage_min_volts", "Lowest cell voltage.", [((), state.cell_v_min)])
    m.gauge("bmsgw_cell_voltage_max_volts", "Highest cell voltage.", [((), state.cell_v_max)])
    m.gauge("bmsgw_cell_temperature_min_celsius", "Lowest temperature sensor.", [((), state.cell_t_min)])
    m.gauge("bmsgw_cell_temperature_max_celsius", "Highest temperature sensor.", [((), state.cell_t_max)])


def _limits(m: _Writer, state: GatewayState) -> None:
    lim = state.limits
    for name, help_, limit in (
        (
            "bmsgw_charge_voltage_limit_volts",
            "Charge voltage limit (CVL); reason = binding constraint.",
            lim.cvl,
        ),
        (
            "bmsgw_charge_current_limit_amperes",
            "Charge current limit (CCL); reason = binding constraint.",
            lim.ccl,
        ),
        (
            "bmsgw_discharge_current_limit_amperes",
            "Discharge current limit (DCL); reason = binding constraint.",
            lim.dcl,
        ),
        (
            "bmsgw_discharge_voltage_limit_volts",
            "Discharge voltage limit (DVL); reason = binding constraint.",
            lim.dvl,
        ),
    ):
        m.gauge(name, help_, [((("reason", limit.reason.value),), limit.value)])
    m.gauge("bmsgw_charge_enabled", "Charging allowed (1) or not (0).", [((), lim.charge_enable)])
    m.gauge("bmsgw_discharge_enabled", "Discharging allowed (1) or not (0).", [((), lim.discharge_enable)])
    m.gauge(
        "bmsgw_force_charge_requested",
        "Force-charge request flags (1 = requested).",
        [((("level", "1"),), lim.force_charge_1), ((("level", "2"),), lim.force_charge_2)],
    )
    m.gauge("bmsgw_full_charge_requested", "Full-charge request flag.", [((), lim.full_charge_request)])
    m.gauge(
        "bmsgw_charge_stage",
        "Charge-voltage stage behind CVL (1 = current stage).",
        [((("stage", s.value),), s is lim.charge_stage) for s in ChargeStage],
    )
    fc = state.forecast
    if fc is not None:  # +Inf: not within the forecast horizon / not moving that way
        by = (("basis", fc.basis),)
        m.gauge("bmsgw_time_to_empty_seconds", "Forecast time to the reserve.", [(by, fc.time_to_empty_s)])
        m.gauge("bmsgw_time_to_full_seconds", "Forecast time until full.", [(by, fc.time_to_full_s)])


def _alarms(m: _Writer, state: GatewayState) -> None:
    ids = [p.id for p in state.packs]
    m.gauge(
        "bmsgw_alarm_active",
        "Active alarms (1 each); pack is empty for system-wide alarms.",
        [
            (
                (
                    ("code", a.code.value),
                    ("level", a.level.name.lower()),
                    ("pack", ids[a.pack] if a.pack is not None else ""),
                ),
                1,
            )
            for a in state.alarms
        ],
    )
    top = max((a.level for a in state.alarms), default=0)
    levels = ", ".join(f"{lv.value} {lv.name.lower()}" for lv in AlarmLevel)
    m.gauge("bmsgw_alarm_level", f"Highest active alarm level: 0 none, {levels}.", [((), int(top))])


def _packs(m: _Writer, state: GatewayState) -> None:
    status: _Rows = []
    up: _Rows = []
    soc: _Rows = []
    soh: _Rows = []
    cycles: _Rows = []
    cap_ah: _Rows = []
    volts: _Rows = []
    amps: _Rows = []
    watts: _Rows = []
    age: _Rows = []
    bal_n: _Rows = []
    xfer_n: _Rows = []
    xfer_a: _Rows = []
    cell_v: _Rows = []
    cell_soc: _Rows = []
    cell_bal: _Rows = []
    cell_t: _Rows = []
    for view in state.packs:
        pack = (("pack", view.id),)
        online = view.status is PackStatus.ONLINE
        status += [((*pack, ("status", st.value)), view.status is st) for st in PackStatus]
        up.append((pack, online))
        soc.append((pack, view.soc))
        soh.append((pack, view.soh))
        if view.health is not None:
            cycles.append((pack, view.health.equivalent_full_cycles))
            cap_ah.append((pack, view.health.capacity_ah * 3600.0))
        s = view.sample
        if not online or s is None:
            continue
        volts.append((pack, s.voltage))
        amps.append((pack, s.current))
        watts.append((pack, s.voltage * s.current))
        age.append((pack, max(0.0, state.t - s.t)))
        bal_n.append((pack, view.balance_mask.bit_count()))
        moves = transfers_sent(state, view)
        xfer_n.append((pack, len(moves)))
        xfer_a.append((pack, sum(tr.current_a for tr in moves)))
        for c, v in enumerate(s.cell_v.tolist()):
            cell = (*pack, ("cell", str(c + 1)))
            cell_v.append((cell, v))
            cell_bal.append((cell, bool(view.balance_mask >> c & 1)))
            if view.cell_soc is not None and c < len(view.cell_soc):
                cell_soc.append((cell, float(view.cell_soc[c])))
        cell_t += [((*pack, ("sensor", str(k + 1))), x) for k, x in enumerate(s.cell_t.tolist())]
    m.gauge("bmsgw_pack_status", "Pack status as a state set (1 = current status).", status)
    m.gauge("bmsgw_pack_online", "Pack data used by the core (1) or not (0).", up)
    m.gauge("bmsgw_pack_soc_ratio", "Pack state of charge (0..1).", soc)
    m.gauge("bmsgw_pack_soh_ratio", "Pack state of health (0..1).", soh)
    m.gauge("bmsgw_pack_equivalent_full_cycles", "Charge throughput / 2 / rated capacity.", cycles)
    m.gauge("bmsgw_pack_capacity_coulombs", "Usable capacity estimate (weakest cell), A·s.", cap_ah)
    m.gauge("bmsgw_pack_voltage_volts", "Pack voltage.", volts)
    m.gauge("bmsgw_pack_current_amperes", "Pack current, positive = charging.", amps)
    m.gauge("bmsgw_pack_power_watts", "Pack power, positive = charging.", watts)
    m.gauge("bmsgw_pack_sample_age_seconds", "Age of the pack's newest sample (gateway clock).", age)
    m.gauge("bmsgw_pack_balancing_cells", "Cells the gateway asks the pack to bleed.", bal_n)
    m.gauge("bmsgw_pack_balancing_transfers", "Active-balancing transfers the gateway commands.", xfer_n)
    m.gauge(
        "bmsgw_pack_balancing_transfer_current_amperes",
        "Current of the commanded transfers, summed (each drawn from its from-cell).",
        xfer_a,
    )
    m.gauge("bmsgw_cell_voltage_volts", "Cell voltage; cell numbered from 1.", cell_v)
    m.gauge("bmsgw_cell_soc_ratio", "Cell state of charge (0..1).", cell_soc)
    m.gauge("bmsgw_cell_balancing", "Cell bleed requested (1) or not (0).", cell_bal)
    m.gauge("bmsgw_cell_temperature_celsius", "Temperature sensor of a pack; sensor numbered from 1.", cell_t)


class _Writer:
    """Accumulates metric families; NaN samples are left out (absent = no data)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def gauge(self, name: str, help_: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self._family(name, "gauge", help_, samples)

    def counter(self, name: str, help_: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self._family(name, "counter", help_, samples)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"

    def _family(self, name: str, kind: str, help_: str, samples: Iterable[tuple[Labels, float]]) -> None:
        rows = [(labels, float(v)) for labels, v in samples if not math.isnan(float(v))]
        if not rows:
            return
        self._lines.append(f"# HELP {name} {_escape_help(help_)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, v in rows:
            lab = ",".join(f'{k}="{_escape_label(val)}"' for k, val in labels)
            self._lines.append(f"{name}{{{lab}}} {_number(v)}" if lab else f"{name} {_number(v)}")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
