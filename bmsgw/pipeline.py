"""The deterministic heart of the gateway: samples in, GatewayState out. No I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bmsgw.aggregator import Aggregator, Plausibility
from bmsgw.config import Settings
from bmsgw.core import Core, CoreOutput, CoreParams
from bmsgw.core.chemistry import profile
from bmsgw.model import (
    Alarm,
    CellRef,
    GatewayState,
    Limit,
    Limits,
    PackSample,
    PackStatus,
    PackView,
    Reason,
)

__all__ = ["Pipeline", "core_params"]


def core_params(settings: Settings) -> CoreParams:
    """CoreParams from the configuration, chemistry defaults where a threshold is unset."""
    lim = settings.limits.model_dump()
    overrides = {k: v for k, v in lim.items() if v is not None}
    return CoreParams.defaults(
        settings.chemistry,
        tuple(p.cells for p in settings.packs),
        tuple(p.sensors for p in settings.packs),
        tuple(p.capacity_ah for p in settings.packs),
        recovery_ramp_s=settings.gateway.recovery_ramp_s,
        **overrides,
    )


class Pipeline:
    """Aggregator + core; `submit` samples as they arrive, `step(t)` publishes a new state."""

    def __init__(self, settings: Settings, initial_soc: Sequence[float] | None = None) -> None:
        self.settings = settings
        self.params = core_params(settings)
        prof = profile(settings.chemistry)
        self._ids = tuple(p.id for p in settings.packs)
        self._capacity = tuple(p.capacity_ah for p in settings.packs)
        self.aggregator = Aggregator(
            self.params.cells,
            self.params.sensors,
            Plausibility(prof.v_min_physical, prof.v_max_physical),
            settings.gateway.stale_after_s,
            settings.gateway.frozen_after,
        )
        self.core = Core(self.params, initial_soc)
        self.samples = 0
        self.steps = 0
        self.state = self._build(0.0, [None] * len(self._ids), self._statuses_never(), [], None)

    def submit(self, sample: PackSample) -> bool:
        """Offer a sample; False if the aggregator rejected it."""
        self.samples += 1
        return self.aggregator.submit(sample)

    def step(self, t: float) -> GatewayState:
        """Run the core at time t on the newest usable samples and publish the new state."""
        t = max(t, self.state.t)  # time never runs backwards, whatever the sources' timestamps do
        usable, statuses, sensor_alarms = self.aggregator.select(t)
        out = self.core.step(t, usable)
        self.steps += 1
        self.state = self._build(t, usable, statuses, sensor_alarms, out)
        return self.state

    def _statuses_never(self) -> list[PackStatus]:
        return [PackStatus.NEVER_SEEN] * len(self._ids)

    def _build(
        self,
        t: float,
        usable: Sequence[PackSample | None],
        statuses: Sequence[PackStatus],
        sensor_alarms: Sequence[Alarm],
        out: CoreOutput | None,
    ) -> GatewayState:
        views = []
        for i, pid in enumerate(self._ids):
            po = out.packs[i] if out is not None else None
            views.append(
                PackView(
                    pack=i,
                    id=pid,
                    status=statuses[i],
                    sample=self.aggregator.latest(i),
                    soc=po.soc if po is not None else math.nan,
                    soh=po.soh if po is not None else math.nan,
                    cell_soc=po.cell_soc if po is not None else None,
                    balance_mask=po.balance_mask if po is not None else 0,
                    contactor_open_request=po.contactor_open_request if po is not None else False,
                )
            )
        online = [s for s in usable if s is not None]
        # Measurements come from online packs; with none online, keep the last known voltage and
        # temperatures for display but report zero current (the limits carry the fail-safe).
        shown = online or [s for s in (self.aggregator.latest(i) for i in range(len(self._ids))) if s]
        if out is not None:
            limits, soc, soh = out.limits, out.soc, out.soh
            alarms = tuple(sorted((*out.alarms, *sensor_alarms), key=lambda a: (a.since, a.code)))
        else:
            limits, soc, soh, alarms = _no_data_limits(self.params), math.nan, math.nan, ()
        cap = sum(self._capacity[s.pack] for s in online)
        if not shown:
            return GatewayState(
                t=t, packs=tuple(views), soc=soc, soh=soh, voltage=0.0, current=0.0,
                temperature=math.nan, cell_v_min=math.nan, cell_v_max=math.nan,
                cell_v_min_at=CellRef(0, 0), cell_v_max_at=CellRef(0, 0),
                cell_t_min=math.nan, cell_t_max=math.nan,
                cell_t_min_at=CellRef(0, 0), cell_t_max_at=CellRef(0, 0),
                limits=limits, alarms=alarms, capacity_ah=cap,
            )  # fmt: skip
        vmin_at = vmax_at = tmin_at = tmax_at = CellRef(shown[0].pack, 0)
        vmin = tmin = math.inf
        vmax = tmax = -math.inf
        tsum = 0.0
        tcount = 0
        for s in shown:
            j = int(np.argmin(s.cell_v))
            if s.cell_v[j] < vmin:
                vmin, vmin_at = float(s.cell_v[j]), CellRef(s.pack, j)
            j = int(np.argmax(s.cell_v))
            if s.cell_v[j] > vmax:
                vmax, vmax_at = float(s.cell_v[j]), CellRef(s.pack, j)
            j = int(np.argmin(s.cell_t))
            if s.cell_t[j] < tmin:
                tmin, tmin_at = float(s.cell_t[j]), CellRef(s.pack, j)
            j = int(np.argmax(s.cell_t))
            if s.cell_t[j] > tmax:
                tmax, tmax_at = float(s.cell_t[j]), CellRef(s.pack, j)
            tsum += float(np.sum(s.cell_t))
            tcount += s.cell_t.shape[0]
        return GatewayState(
            t=t,
            packs=tuple(views),
            soc=soc,
            soh=soh,
            voltage=sum(s.voltage for s in shown) / len(shown),
            current=sum(s.current for s in online),
            temperature=tsum / tcount,
            cell_v_min=vmin,
            cell_v_max=vmax,
            cell_v_min_at=vmin_at,
            cell_v_max_at=vmax_at,
            cell_t_min=tmin,
            cell_t_max=tmax,
            cell_t_min_at=tmin_at,
            cell_t_max_at=tmax_at,
            limits=limits,
            alarms=alarms,
            capacity_ah=cap,
        )


def _no_data_limits(p: CoreParams) -> Limits:
    """Safe limits before the core ran once: no current, voltages at the chemistry's nominal."""
    cells = p.cells[0]
    nominal = profile(p.chemistry).nominal_v * cells
    return Limits(
        cvl=Limit(nominal, Reason.COMM_LOST),
        ccl=Limit(0.0, Reason.COMM_LOST),
        dcl=Limit(0.0, Reason.COMM_LOST),
        dvl=Limit(p.discharge_voltage_cell_v * cells, Reason.COMM_LOST),
        charge_enable=False,
        discharge_enable=False,
    )
