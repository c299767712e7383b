"""/metrics: parsed with prometheus_client's own parser; names, units, labels and values checked."""

from __future__ import annotations

import math
import re
import uuid

import numpy as np
import pytest
from fakes import PackModel
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from web_rig import web_rig, web_settings

from bmsgw import __version__
from bmsgw.core import IS_COMPILED
from bmsgw.model import (
    Alarm,
    AlarmCode,
    AlarmLevel,
    CellRef,
    ChargeStage,
    GatewayState,
    Limit,
    Limits,
    PackSample,
    PackStatus,
    PackView,
    Reason,
)
from bmsgw.pipeline import Pipeline
from bmsgw.telemetry.metrics import IoCounter, PackEnergy, exposition

# Prometheus naming: base units, plural suffix; watts as the one convenience unit; _total for counters.
UNIT = re.compile(r"_(volts|amperes|celsius|ratio|seconds|joules|watts|coulombs)$")
UNITLESS = {  # counts, states and flags
    "bmsgw_build_info", "bmsgw_packs_online", "bmsgw_packs_configured", "bmsgw_charge_enabled",
    "bmsgw_discharge_enabled", "bmsgw_force_charge_requested", "bmsgw_full_charge_requested",
    "bmsgw_alarm_active", "bmsgw_alarm_level", "bmsgw_pack_status", "bmsgw_pack_online",
    "bmsgw_pack_balancing_cells", "bmsgw_cell_balancing", "bmsgw_pack_equivalent_full_cycles",
    "bmsgw_pack_balancing_transfers", "bmsgw_charge_stage",
}  # fmt: skip


def parse(text: str) -> dict[str, list[Sample]]:
    """Metric name -> samples, via prometheus_client (which raises on malformed exposition)."""
    families = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name.startswith("bmsgw_"), fam.name
        name = fam.name + "_total" if fam.type == "counter" else fam.name  # the parser strips _total
        assert name not in families, f"{name} exposed twice"
        families[name] = fam.samples
        if fam.type == "counter":
            assert all(s.name == name for s in fam.samples), fam.name
        else:
            assert fam.type == "gauge", fam.name
            assert fam.name in UNITLESS or UNIT.search(fam.name), f"{fam.name}: no base unit suffix"
    return families


def by_labels(samples: list[Sample], **labels: str) -> Sample:
    hits = [s for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (labels, samples)
    return hits[0]


async def test_metrics_of_a_running_gateway() -> None:
    pack = PackModel(current=-15.0)
    pack.cell_v = np.round(np.linspace(3.281, 3.296, 16), 3)
    pack.cell_t = np.array([20.0, 21.0, 22.0, 23.5])
    async with web_rig(pack) as rig:
        await rig.until(lambda s: s.usable and s.limits.dcl.value == 80.0, within=15, what="settled")
        async with rig.http.get(rig.url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
        state = rig.gateway.state()
    m = parse(text)
    build = m["bmsgw_build_info"][0]
    assert build.labels == {"version": __version__, "core": "compiled" if IS_COMPILED else "pure"}
    assert build.value == 1
    cells = m["bmsgw_cell_voltage_volts"]
    assert len(cells) == 16
    for i, v in enumerate(pack.cell_v):
        s = by_labels(cells, pack="p1", cell=str(i + 1))
        assert s.value == pytest.approx(v)
    assert by_labels(m["bmsgw_cell_temperature_celsius"], pack="p1", sensor="4").value == 23.5
    assert m["bmsgw_soc_ratio"][0].value == pytest.approx(state.soc, abs=0.01)
    assert 0 < m["bmsgw_soc_ratio"][0].value < 1
    assert m["bmsgw_voltage_volts"][0].value == pytest.approx(float(np.sum(pack.cell_v)), abs=0.01)
    assert m["bmsgw_current_amperes"][0].value == pytest.approx(-15.0)
    assert by_labels(m["bmsgw_pack_current_amperes"], pack="p1").value == pytest.approx(-15.0)
    ccl = m["bmsgw_charge_current_limit_amperes"]
    assert [(s.labels, s.value) for s in ccl] == [({"reason": "config"}, 50.0)]
    assert m["bmsgw_discharge_current_limit_amperes"][0].value == 80.0
    assert by_labels(m["bmsgw_pack_status"], pack="p1", status="online").value == 1
    assert by_labels(m["bmsgw_pack_status"], pack="p1", status="stale").value == 0
    assert m["bmsgw_packs_online"][0].value == 1
    assert m["bmsgw_alarm_level"][0].value == 0
    assert "bmsgw_alarm_active" not in m  # no alarm: no series rather than a zero
    frames = by_labels(m["bmsgw_source_frames_received_total"], source="can")
    assert frames.value > 0
    assert by_labels(m["bmsgw_source_frames_rejected_total"], source="can").value == 0
    assert m["bmsgw_samples_total"][0].value > 0
    assert m["bmsgw_core_steps_total"][0].value >= m["bmsgw_samples_total"][0].value / 2
    # Discharging at 15 A for a while: energy flowed out, none in.
    assert by_labels(m["bmsgw_pack_discharged_energy_joules_total"], pack="p1").value > 0
    assert by_labels(m["bmsgw_pack_charged_energy_joules_total"], pack="p1").value == 0
    assert 0 <= m["bmsgw_last_step_age_seconds"][0].value < 1
    health = state.packs[0].health
    assert health is not None
    cycles = by_labels(m["bmsgw_pack_equivalent_full_cycles"], pack="p1").value
    assert cycles == pytest.approx(health.equivalent_full_cycles, abs=1e-3)
    cap = by_labels(m["bmsgw_pack_capacity_coulombs"], pack="p1").value
    assert cap == pytest.approx(health.capacity_ah * 3600.0, rel=1e-3)
    stages = {s.labels["stage"]: s.value for s in m["bmsgw_charge_stage"]}
    assert stages == {s.value: float(s is state.limits.charge_stage) for s in ChargeStage}


def _state(alarms: tuple[Alarm, ...], pack_id: str, status: PackStatus = PackStatus.ONLINE) -> GatewayState:
    sample = PackSample(0, 9.0, np.array([3.3, 3.31]), np.array([25.0]), current=2.0, voltage=6.61)
    view = PackView(0, pack_id, status, sample, soc=0.5, soh=math.nan, cell_soc=np.array([0.49, 0.51]),
                    balance_mask=0b10)  # fmt: skip
    lim = Limits(Limit(7.1, Reason.CONFIG), Limit(0.0, Reason.CELL_OVERVOLTAGE), Limit(10.0, Reason.CONFIG),
                 Limit(5.0, Reason.CONFIG), charge_enable=False, discharge_enable=True)  # fmt: skip
    at = CellRef(0, 1)
    return GatewayState(
        t=10.0, packs=(view,), soc=0.5, soh=math.nan, voltage=6.61, current=2.0, temperature=25.0,
        cell_v_min=3.3, cell_v_max=3.31, cell_v_min_at=CellRef(0, 0), cell_v_max_at=at, cell_t_min=25.0,
        cell_t_max=25.0, cell_t_min_at=at, cell_t_max_at=at, limits=lim, alarms=alarms, capacity_ah=1.0,
    )  # fmt: skip


def test_alarms_labels_escaping_and_absent_values() -> None:
    odd = 'rack "A"\\1\nnorth'  # pack ids are free text: quotes, backslash, newline must be escaped
    alarms = (
        Alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.ALARM, 3.0, 0, "cell 2 at 3.7 V"),
        Alarm(AlarmCode.COMM_LOST, AlarmLevel.WARNING, 4.0, None),
    )
    counters = [IoCounter("bmsgw_test_frames_total", "Frames.", (("port", odd),), 7)]
    m = parse(exposition(_state(alarms, odd), version="9.9", compiled=False, counters=counters))
    active = m["bmsgw_alarm_active"]
    assert by_labels(active, code="cell_overvoltage").labels == {
        "code": "cell_overvoltage", "level": "alarm", "pack": odd,
    }  # fmt: skip
    assert by_labels(active, code="comm_lost").labels["pack"] == ""  # system-wide
    assert m["bmsgw_alarm_level"][0].value == 2
    assert by_labels(m["bmsgw_cell_voltage_volts"], pack=odd, cell="2").value == 3.31
    assert by_labels(m["bmsgw_cell_balancing"], pack=odd, cell="2").value == 1
    assert by_labels(m["bmsgw_cell_balancing"], pack=odd, cell="1").value == 0
    assert by_labels(m["bmsgw_cell_soc_ratio"], pack=odd, cell="1").value == 0.49
    assert m["bmsgw_charge_current_limit_amperes"][0].labels == {"reason": "cell_overvoltage"}
    assert m["bmsgw_charge_enabled"][0].value == 0
    assert m["bmsgw_test_frames_total"][0].labels == {"port": odd}
    assert "bmsgw_soh_ratio" not in m  # NaN: left out, never exported as a made-up number
    assert "bmsgw_pack_soh_ratio" not in m


def test_offline_pack_exports_no_measurements() -> None:
    m = parse(exposition(_state((), "p1", PackStatus.STALE), version="1", compiled=True))
    assert by_labels(m["bmsgw_pack_online"], pack="p1").value == 0
    assert by_labels(m["bmsgw_pack_status"], pack="p1", status="stale").value == 1
    for name in ("bmsgw_cell_voltage_volts", "bmsgw_pack_voltage_volts", "bmsgw_cell_temperature_celsius"):
        assert name not in m
    assert by_labels(m["bmsgw_pack_soc_ratio"], pack="p1").value == 0.5  # an estimate, kept while offline


def test_pack_energy_integrates_new_online_samples_only() -> None:
    settings = web_settings(f"pack-{uuid.uuid4()}")
    pipe = Pipeline(settings)
    energy = PackEnergy(1, max_gap_s=3.0)
    for k in range(11):  # 1 s of 100 A discharge at ~52.8 V, then the same state again
        t = 100.0 + k * 0.1
        s = PackSample(0, t, np.full(16, 3.3), np.full(4, 25.0), current=-100.0, voltage=52.8, alive=k % 16)
        pipe.submit(s)
        state = pipe.step(t)
        energy.see(state)
        energy.see(state)  # the same sample twice is not counted twice
    meter = energy.meters[0]
    assert meter.discharged_wh * 3600 == pytest.approx(100.0 * 52.8 * 1.0)
    assert meter.charged_wh == 0
