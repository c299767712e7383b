"""Balancing planner: passive SOC and voltage rules with hysteresis, active transfers on the knees."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from bmsgw.bms.pack_can import TRANSFER_SLOTS
from bmsgw.config import ConfigError, load_settings
from bmsgw.core.balancing import BalanceMode, BalanceParams, BalancePlanner, safe_transfers
from bmsgw.model import (
    Alarm,
    AlarmCode,
    AlarmLevel,
    BmsFlags,
    Chemistry,
    GatewayState,
    PackSample,
    PackService,
    PackStatus,
    Transfer,
)
from bmsgw.pipeline import Pipeline
from bmsgw.sim.cells import SimPack, SimPackConfig

CAP = np.full(4, 100.0)
V_FLAT = np.full(4, 3.33)


def ahead(soc: float) -> np.ndarray:
    """Cell 1 that much SOC ahead of the others."""
    return np.array([0.0, soc, 0.0, 0.0])


def planner(**kw: object) -> BalancePlanner:
    return BalancePlanner(4, BalanceParams(**kw))  # type: ignore[arg-type]


def test_passive_soc_rule_bleeds_cells_ahead_at_the_top_only() -> None:
    p = planner(delta_ah=0.5)
    soc = np.array([0.80, 0.81, 0.80, 0.80])
    assert p.plan(V_FLAT, soc, CAP, 10.0, 0.0).mask == 0  # below the top of charge: nothing
    soc = np.array([0.95, 0.96, 0.95, 0.953])  # cell 1 is 1 Ah ahead, cell 3 0.3 Ah
    assert p.plan(V_FLAT, soc, CAP, 10.0, 1.0).mask == 0b0010
    assert p.plan(V_FLAT, soc, CAP, -20.0, 2.0).mask == 0  # never while discharging


def test_passive_soc_rule_has_hysteresis() -> None:
    p = planner(delta_ah=0.5)
    base = np.array([0.95, 0.95, 0.95, 0.95])
    assert p.plan(V_FLAT, base + ahead(0.004), CAP, 5.0, 0.0).mask == 0  # 0.4 Ah < 0.5: stays off
    p3 = planner(delta_ah=0.5, bleed_current_a=0.0)
    assert p3.plan(V_FLAT, base + ahead(0.006), CAP, 5.0, 0.0).mask == 0b10
    assert p3.plan(V_FLAT, base + ahead(0.003), CAP, 5.0, 1.0).mask == 0b10  # 0.3 > 0.25: keeps on
    assert p3.plan(V_FLAT, base + ahead(0.002), CAP, 5.0, 2.0).mask == 0  # 0.2 < 0.25: off


def test_passive_soc_rule_weighs_capacity() -> None:
    p = planner(delta_ah=0.5)
    soc = np.array([0.95, 0.95, 0.94, 0.95])
    cap = np.array([100.0, 100.0, 40.0, 100.0])
    # Ah to full: 5, 5, 2.4, 5 — the small cell has the lowest SOC yet fills first, so it is the one bled
    assert p.plan(V_FLAT, soc, cap, 5.0, 0.0).mask == 0b0100


def test_passive_voltage_rule() -> None:
    p = planner(soc_based=False, start_v=4.0, delta_v=0.015, hyst_v=0.005)
    soc = np.full(4, 0.9)
    v = np.array([4.10, 4.13, 4.10, 4.05])
    assert p.plan(v, soc, CAP, 1.0, 0.0).mask == 0b0111  # all ≥ 4.0 V and > 15 mV above the lowest
    v = np.array([4.063, 4.13, 4.05, 4.05])
    assert p.plan(v, soc, CAP, 1.0, 1.0).mask == 0b0011  # cell 0 at 13 mV > 10 mV keeps on; cell 2 off
    assert p.plan(np.array([3.9, 3.95, 3.9, 3.9]), soc, CAP, 1.0, 2.0).mask == 0  # below start_v


def test_active_moves_charge_on_the_knees_only() -> None:
    p = planner(mode=BalanceMode.ACTIVE, transfer_current_a=2.0)
    soc = np.full(4, 0.5)
    plateau = np.array([3.30, 3.31, 3.32, 3.30])
    assert p.plan(plateau, soc, CAP, 20.0, 0.0).transfers == ()  # LFP plateau: cells indistinguishable
    top = np.array([3.42, 3.55, 3.44, 3.41])
    (tr,) = p.plan(top, soc, CAP, 20.0, 1.0).transfers
    assert (tr.source, tr.sink, tr.current_a) == (1, 3, 2.0)  # fullest gives to emptiest
    bottom = np.array([3.05, 3.12, 2.95, 3.10])
    (tr,) = p.plan(bottom, soc, CAP, -50.0, 2.0).transfers
    assert (tr.source, tr.sink) == (1, 2)  # the cell about to run empty is fed
    assert p.plan(np.array([3.45, 3.452, 3.451, 3.45]), soc, CAP, 5.0, 3.0).transfers == ()  # balanced


def test_bookkeeping_of_moved_charge_until_the_next_anchor() -> None:
    p = planner(delta_ah=0.5, bleed_current_a=1.0)
    soc = np.array([0.95, 0.96, 0.95, 0.95])  # cell 1 is 1 Ah ahead
    assert p.plan(V_FLAT, soc, CAP, 5.0, 0.0, anchors=3).mask == 0b10
    # the estimator does not see the bleed; the planner books it (1 A for 30 min = 0.5 Ah)
    assert p.plan(V_FLAT, soc, CAP, 5.0, 1800.0, anchors=3).mask == 0b10  # 0.5 Ah ahead: still on
    assert p.plan(V_FLAT, soc, CAP, 5.0, 3000.0, anchors=3).mask == 0  # 0.17 Ah < half of delta: off
    # a new anchor re-reads the cells: what the estimator says now is the truth again
    assert p.plan(V_FLAT, soc, CAP, 5.0, 2800.0, anchors=4).mask == 0b10


def test_nothing_from_non_finite_estimates() -> None:
    p = planner(delta_ah=0.5)
    soc = np.array([0.95, math.nan, 0.95, 0.95])
    plan = p.plan(V_FLAT, soc, CAP, 5.0, 0.0)
    assert plan.mask == 0
    assert "finite" in plan.why
    with pytest.raises(ValueError, match="4 values"):
        p.plan(V_FLAT[:3], soc[:3], CAP[:3], 5.0, 1.0)


def test_passive_balancing_narrows_the_spread_in_the_simulator() -> None:
    cfg = SimPackConfig(4, Chemistry.LFP, 2.0, sensors=1, initial_soc=0.97, capacity_spread=0.0,
                        soc_spread=0.02, self_discharge_per_day=0.0, seed=5)  # fmt: skip
    pack = SimPack(cfg)
    p = BalancePlanner(4, BalanceParams(delta_ah=0.002, bleed_current_a=0.05))
    spread0 = float(np.ptp(pack.soc_true))
    for k in range(6 * 360):  # 6 h at rest at the top, planning every 10 s on the truth
        r = pack.reading()
        plan = p.plan(r.cell_v, r.soc_true, r.capacity_true, 0.0, 10.0 * k)
        p._shift[:] = 0.0  # the truth already includes the bleed
        pack.set_balance(plan.mask, 0.05)
        pack.step(10.0, 0.0)
    assert spread0 > 0.01
    assert float(np.ptp(pack.soc_true)) < 0.003


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="hyst_v"):
        BalanceParams(delta_v=0.01, hyst_v=0.02)


# --- in the gateway: [balancing] drives the bleed mask the pack bus carries -----------------------------


def _pipeline(chemistry: str = "lfp", **balancing: object) -> Pipeline:
    settings, _ = load_settings(
        None,
        {"packs": [{"id": "p", "cells": 4, "sensors": 1, "capacity_ah": 100, "chemistry": chemistry}],
         "limits.estimator": "counting", "balancing": balancing},
        env={},
    )  # fmt: skip
    top = [0.95, 0.96, 0.95, 0.95]  # cell 1 is 1 Ah ahead at the top of charge
    return Pipeline(settings, [min(top)], initial_cell_soc=[top])


def _run(pipe: Pipeline, v: list[float], current: float, seconds: int = 3) -> GatewayState:
    flags = BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET
    for k in range(seconds):
        t = pipe.state.t + 1.0
        pipe.submit(PackSample(0, t, np.array(v), np.array([25.0]), current, sum(v), flags, alive=k))
        pipe.step(t)
    return pipe.state


def test_gateway_bleeds_the_cell_ahead_at_the_top_of_charge() -> None:
    state = _run(_pipeline(), [3.40, 3.42, 3.40, 3.40], 2.0)
    assert state.packs[0].balance_mask == 0b0010
    state = _run(_pipeline(), [3.40, 3.42, 3.40, 3.40], -20.0)  # discharging: nothing
    assert state.packs[0].balance_mask == 0


def test_gateway_balancing_off_and_voltage_rule() -> None:
    assert _run(_pipeline(mode="off"), [3.40, 3.42, 3.40, 3.40], 2.0).packs[0].balance_mask == 0
    nmc = _pipeline("nmc", start_v=4.0)
    assert _run(nmc, [4.10, 4.10, 4.13, 4.10], 2.0).packs[0].balance_mask == 0b0100


def test_balancing_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match="hyst_v"):
        load_settings(None, {"balancing": {"delta_v": 0.01, "hyst_v": 0.02}}, env={})
    with pytest.raises(ConfigError, match=r"balancing\.mode"):
        load_settings(None, {"balancing": {"mode": "magic"}}, env={})


# --- active mode: transfers on the pack view, and the fail-safe gate before the pack bus -----------------


def test_gateway_active_mode_plans_transfers_not_bleeding() -> None:
    pipe = _pipeline(mode="active", transfer_current_a=1.5)
    state = _run(pipe, [3.42, 3.55, 3.44, 3.41], 2.0)  # top knee while charging
    view = state.packs[0]
    assert view.transfers == (Transfer(1, 3, 1.5),)  # fullest gives to emptiest
    assert view.balance_mask == 0
    assert _run(pipe, [3.30, 3.31, 3.32, 3.30], 2.0).packs[0].transfers == ()  # plateau: nothing
    two = _pipeline(mode="active", max_transfers=2)
    assert _run(two, [3.42, 3.55, 3.44, 3.41], 2.0).packs[0].transfers == (
        Transfer(1, 3, 2.0),
        Transfer(2, 0, 2.0),
    )


def test_safe_transfers_stop_on_stale_data_faults_and_a_lost_link() -> None:
    state = _run(_pipeline(mode="active"), [3.42, 3.55, 3.44, 3.41], 2.0)
    view = state.packs[0]
    assert view.sample is not None
    planned = view.transfers
    assert planned
    assert safe_transfers(state, view, state.t + 1.0, 3.0) == planned
    assert safe_transfers(state, view, state.t + 3.5, 3.0) == ()  # the state is old: the pipeline hangs
    assert safe_transfers(state, replace(view, status=PackStatus.STALE), state.t, 3.0) == ()
    assert safe_transfers(state, replace(view, service=PackService.ISOLATED), state.t, 3.0) == ()
    faulted = replace(view.sample, flags=view.sample.flags | BmsFlags.BMS_FAULT)
    assert safe_transfers(state, replace(view, sample=faulted), state.t, 3.0) == ()

    def with_alarm(code: AlarmCode, level: AlarmLevel, pack: int | None) -> GatewayState:
        return replace(state, alarms=(Alarm(code, level, state.t, pack),))

    assert safe_transfers(with_alarm(AlarmCode.COMM_LOST, AlarmLevel.ALARM, None), view, state.t, 3.0) == ()
    assert (
        safe_transfers(with_alarm(AlarmCode.OVERTEMPERATURE, AlarmLevel.ALARM, 0), view, state.t, 3.0) == ()
    )
    assert (
        safe_transfers(with_alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.FAULT, 0), view, state.t, 3.0) == ()
    )
    # moving charge out of the high cell is what relieves an over-voltage or imbalance alarm
    ov = with_alarm(AlarmCode.CELL_OVERVOLTAGE, AlarmLevel.ALARM, 0)
    assert safe_transfers(ov, view, state.t, 3.0) == planned
    assert (
        safe_transfers(with_alarm(AlarmCode.SENSOR_FAULT, AlarmLevel.ALARM, 1), view, state.t, 3.0) == planned
    )


def test_active_balancing_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="knee_low_v"):
        load_settings(None, {"balancing": {"knee_low_v": 3.5, "knee_high_v": 3.4}}, env={})
    with pytest.raises(ConfigError, match=r"balancing\.max_transfers"):
        load_settings(None, {"balancing": {"max_transfers": TRANSFER_SLOTS + 1}}, env={})
    with pytest.raises(ConfigError, match=r"balancing\.transfer_current_a"):
        load_settings(None, {"balancing": {"transfer_current_a": 41.0}}, env={})
    settings, _ = load_settings(
        None, {"balancing": {"mode": "active", "max_transfers": TRANSFER_SLOTS}}, env={}
    )
    assert settings.balancing.mode == "active"
