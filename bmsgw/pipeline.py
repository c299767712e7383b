"""The deterministic heart of the gateway: samples in, GatewayState out. No I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from operator import attrgetter

from bmsgw.aggregator import NO_TEMPS, Aggregator, Plausibility
from bmsgw.bms_request import bind_requests
from bmsgw.config import Settings
from bmsgw.core import Core, CoreOutput, CoreParams
from bmsgw.core.balancing import BalanceMode, BalanceParams, BalancePlanner, Balancing
from bmsgw.core.chemistry import profile
from bmsgw.ems import EmsCommands
from bmsgw.energy_management import EnergyManager, EnergySaved
from bmsgw.model import (
    Alarm,
    CellRef,
    Chemistry,
    GatewayState,
    Limit,
    Limits,
    PackSample,
    PackStatus,
    PackView,
    Reason,
)
from bmsgw.multipack import MultiPack, MultipackParams

__all__ = ["Pipeline", "core_params"]


def balancing(settings: Settings, params: CoreParams) -> Balancing:
    """The balancing planners [balancing] describes (docs/configuration.md)."""
    b = settings.balancing
    soc_rule = b.rule == "soc" or (b.rule == "auto" and settings.chemistry is Chemistry.LFP)
    planners = [
        BalancePlanner(
            p.cells,
            BalanceParams(
                mode=BalanceMode(b.mode),
                soc_based=soc_rule,
                top_soc=b.top_soc,
                delta_ah=b.delta_pct / 100.0 * p.capacity_ah,
                start_v=b.start_v if b.start_v is not None else params.cell_v_max_warn - 0.1,
                delta_v=b.delta_v,
                hyst_v=b.hyst_v,
                rest_current_a=params.rest_current_a,
                bleed_current_a=b.bleed_current_a,
                knee_high_v=b.knee_high_v,
                knee_low_v=b.knee_low_v,
                transfer_current_a=b.transfer_current_a,
                max_transfers=b.max_transfers,
                transfer_efficiency=b.transfer_efficiency,
            ),
        )
        if b.mode != "off"
        else None
        for p in settings.packs
    ]
    return Balancing(planners, [p.capacity_ah for p in settings.packs], b.period_s)


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

    def __init__(
        self,
        settings: Settings,
        initial_soc: Sequence[float] | None = None,
        *,
        initial_cell_soc: Sequence[Sequence[float]] | None = None,
        wall: Callable[[float], float] | None = None,
        energy: EnergySaved | None = None,
    ) -> None:
        """`initial_soc`/`initial_cell_soc`: the core's starting SOC (see Core); None = from OCV.

        `wall`: gateway time → epoch seconds (Clock.wall; None: no wall clock, schedules stay inactive);
        `energy`: restored energy-management state (load profile, full-charge timer).
        """
        self.settings = settings
        self.params = core_params(settings)
        self.balancing = balancing(settings, self.params)
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
        self.core = Core(self.params, initial_soc, initial_cell_soc=initial_cell_soc)
        # Several packs as one battery: current shares, hot-add, isolation (bmsgw/multipack.py).
        self.multipack = MultiPack(len(self._ids), MultipackParams(**settings.multipack.model_dump()))
        # EMS commands (from outputs with `writes = true`, or the web API with a [web] token) tighten the
        # core's limits on every step.
        commanded = any(o.writes for o in settings.outputs) or settings.web.token is not None
        self.ems = EmsCommands() if commanded else None
        # Schedule, reserve, request bits and runtime forecast tighten the core's limits before EMS commands.
        self.wall = wall
        self.management = EnergyManager(settings, energy)
        self._views: list[tuple[tuple[object, ...], PackView] | None] = [None] * len(self._ids)
        # Alarms raised by services beside the pipeline (e.g. history database degraded), by key; they are
        # merged into every state from the next step on and never change the limits.
        self.service_alarms: dict[str, Alarm] = {}
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
        self.multipack.update(t, usable, statuses, sensor_alarms)
        self.multipack.apply(self.core)
        if self.ems is not None:
            for pack in self.ems.take_resets():  # latched-fault resets from the control path
                self.core.reset_latched(pack if pack is None or pack < len(self._ids) else None)
        out = self.core.step(t, usable)
        self.multipack.observe(out)
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
        latest = self.aggregator.newest()
        self.balancing.step(t, usable, out.packs if out is not None else None)
        masks = self.balancing.masks
        transfers = self.balancing.transfers
        views = []
        outs = out.packs if out is not None else (None,) * len(self._ids)
        roles = self.multipack.roles
        cached = self._views
        for i, pid in enumerate(self._ids):
            po = outs[i]
            role = roles[i]
            # Reuse the view when nothing about the pack changed (the core reuses its PackOutput too;
            # samples and outputs compare by identity).
            key = (statuses[i], latest[i], po, role.service, role.share, masks[i], transfers[i])
            prev = cached[i]
            if prev is not None and prev[0] == key:
                views.append(prev[1])
                continue
            view = PackView(
                pack=i,
                id=pid,
                status=statuses[i],
                sample=latest[i],
                soc=po.soc if po is not None else math.nan,
                soh=po.soh if po is not None else math.nan,
                cell_soc=po.cell_soc if po is not None else None,
                balance_mask=masks[i],
                transfers=transfers[i],
                contactor_open_request=role.contactor_open or (po is not None and po.contactor_open_request),
                service=role.service,
                share=role.share,
                health=po.health if po is not None else None,
            )
            cached[i] = (key, view)
            views.append(view)
        online = [s for s in usable if s is not None]
        # Measurements come from online packs; with none online, keep the last known voltage and
        # temperatures for display but report zero current (the limits carry the fail-safe).
        shown = online or [s for s in latest if s is not None]
        serving = self.multipack.serving
        in_service = [s for s in online if serving[s.pack]]
        # capacity of the packs in service (the online ones while none is)
        cap = sum(map(self._capacity.__getitem__, map(_PACK, in_service))) or sum(
            map(self._capacity.__getitem__, map(_PACK, online))
        )
        current = sum(map(_CURRENT, online))
        forecast = None
        if out is not None:
            limits, soc, soh = out.limits, out.soc, out.soh
            limits = bind_requests(limits, in_service or online, self.multipack.shares)
            wall = self.wall(t) if self.wall is not None else None
            limits, forecast = self.management.step(t, wall, limits, soc, current, cap, bool(online))
            if self.ems is not None:
                limits = self.ems.apply(limits, t, soc)
            alarms = tuple(
                sorted(
                    (
                        *self.multipack.system_alarms((*out.alarms, *sensor_alarms)),
                        *self.service_alarms.values(),
                    ),
                    key=_ALARM_ORDER,
                )
            )
        else:
            limits, soc, soh, alarms = _no_data_limits(self.params), math.nan, math.nan, ()
        if not shown:
            nowhere = CellRef(0, 0)
            return GatewayState(
                t=t, packs=tuple(views), soc=soc, soh=soh, voltage=0.0, current=0.0,
                temperature=math.nan, cell_v_min=math.nan, cell_v_max=math.nan,
                cell_v_min_at=nowhere, cell_v_max_at=nowhere, cell_t_min=math.nan, cell_t_max=math.nan,
                cell_t_min_at=nowhere, cell_t_max_at=nowhere, limits=limits, alarms=alarms, capacity_ah=cap,
                forecast=forecast, ccl_pack=out.ccl_pack if out is not None else None,
                dcl_pack=out.dcl_pack if out is not None else None,
            )  # fmt: skip
        extremes = self.aggregator.extremes
        stats = [x for s in shown if (x := extremes[s.pack]) is not None]
        bus = in_service or shown  # held-out packs: not the bus
        vmin = min(stats, key=_VMIN)
        vmax = max(stats, key=_VMAX)
        tstats = [x for x in stats if x.tcount] or [NO_TEMPS]  # packs without sensors do not count
        tmin = min(tstats, key=_TMIN)
        tmax = max(tstats, key=_TMAX)
        return GatewayState(
            t=t,
            packs=tuple(views),
            soc=soc,
            soh=soh,
            voltage=sum(map(_VOLTAGE, bus)) / len(bus),
            current=current,
            temperature=sum(map(_TSUM, tstats)) / max(sum(map(_TCOUNT, tstats)), 1),
            cell_v_min=vmin.vmin,
            cell_v_max=vmax.vmax,
            cell_v_min_at=vmin.vmin_at,
            cell_v_max_at=vmax.vmax_at,
            cell_t_min=tmin.tmin,
            cell_t_max=tmax.tmax,
            cell_t_min_at=tmin.tmin_at,
            cell_t_max_at=tmax.tmax_at,
            limits=limits,
            alarms=alarms,
            capacity_ah=cap,
            forecast=forecast,
            ccl_pack=out.ccl_pack if out is not None else None,
            dcl_pack=out.dcl_pack if out is not None else None,
        )


# C-level keys and field readers for the per-step aggregates (cheaper than lambdas and generators)
_VMIN, _VMAX, _TMIN, _TMAX = map(attrgetter, ("vmin", "vmax", "tmin", "tmax"))
_TSUM, _TCOUNT, _PACK, _CURRENT, _VOLTAGE = map(attrgetter, ("tsum", "tcount", "pack", "current", "voltage"))
_ALARM_ORDER = attrgetter("since", "code")


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
