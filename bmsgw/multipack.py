"""Several packs as one virtual battery: current shares, hot-add and isolation. Pure; time passed in.

Per pack a small state machine (:class:`~bmsgw.model.PackService`):

* ``ABSENT`` → ``JOINING`` when its first usable sample arrives. While no pack is in service (start-up,
  or after every pack dropped out) the largest group of usable packs within ``hot_add_window_v`` of each
  other goes straight to ``RUNNING`` (the core's recovery ramp already limits that start).
* ``JOINING``: held out (contactor-open request, nothing of its limits counted) until its pack voltage is
  within ``hot_add_window_v`` of the mean of the packs in service; then ``RAMPING``.
* ``RAMPING``: in service; its admission factor rises 0 → 1 over ``hot_add_ramp_s`` (the core blends the
  system limit from "without it" to "with it"), then ``RUNNING``.
* ``ISOLATED``: a pack in any other state whose core reports a fault (contactor-open request), whose link
  is lost (stale) or whose data is implausible/frozen. Excluded, ``PACK_ISOLATED`` alarm, contactor-open
  request; once its data is usable and fault-free again it rejoins through ``JOINING``.

Current shares: each step with |total current| ≥ ``share_min_current_a`` every pack in service low-pass
filters (time constant ``share_filter_s``) its fraction of the total current of all packs with usable data.
A pack counts as measured after ``share_filter_s`` of such steps since it entered service; until then it
is given an equal share 1/n, and the measured packs share the rest in proportion to their estimates. The
filter advances every 1 % of ``share_filter_s`` at most (sample and hold in between), not on every step: with
many packs a step follows each pack's sample, far more often than a filter of seconds needs.

Incremental: the isolation rules run only when a status, a core fault or a sensor problem changed, and the
roles are rebuilt only when a service state, a measured share or a ramp moved (otherwise ``roles`` is the
same tuple as before).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bmsgw.core import Core, CoreOutput
from bmsgw.model import Alarm, AlarmCode, AlarmLevel, PackSample, PackService, PackStatus

__all__ = ["MultiPack", "MultipackParams", "PackRole"]

_IN_SERVICE = (PackService.RUNNING, PackService.RAMPING)
_SHARE_FLOOR = 0.1  # a measured share is never taken below this × 1/n (a near-zero share never binds)
_ADMIT_MIN = 1e-3  # admission of a ramping pack on its first step
_MAX_DT_S = 5.0  # the share filter never advances more than this per step (sparse steps do not jump)
_MEASURE_STEP = 0.01  # the share filter advances at most every this × share_filter_s


@dataclass(frozen=True, slots=True)
class MultipackParams:
    """Tuning of the multi-pack logic (config section [multipack])."""

    hot_add_window_v: float = 1.0
    hot_add_ramp_s: float = 30.0
    share_min_current_a: float = 5.0
    share_filter_s: float = 10.0


@dataclass(frozen=True, slots=True)
class PackRole:
    """One pack's part at a step: service state, share weight for the core, admission, contactor request."""

    service: PackService
    share: float  # fraction of the system current assumed for this pack (0 when not in service)
    weight: float  # what the core gets as its share (1.0 each while all are equal: exact n × weakest)
    admit: float  # 0 held out … 1 fully admitted
    contactor_open: bool  # the pack's contactor should be open (held out or isolated)
    measured: bool  # share measured (False: the equal share)


class MultiPack:
    """Per-pack service state and current-share estimates; :meth:`update` once per pipeline step."""

    def __init__(self, n_packs: int, params: MultipackParams) -> None:
        self.params = params
        self._n = n_packs
        self._service = [PackService.ABSENT] * n_packs
        self._ramp_t0 = [0.0] * n_packs
        self._iso_since = [0.0] * n_packs
        self._iso_why = [""] * n_packs
        self._est = [math.nan] * n_packs  # filtered fraction of the total current
        self._meas_s = [0.0] * n_packs  # time with significant current since the pack entered service
        self._t_meas: float | None = None  # when the share filter last advanced
        self._faults = [""] * n_packs
        self._no_problems = [""] * n_packs
        # what the isolation rules and the roles were last evaluated on (update skips what did not change)
        self._seen: tuple[tuple[PackStatus, ...], list[str], list[str]] | None = None
        self._roles_svc: tuple[PackService, ...] = ()
        self._roles_t = math.nan
        self._iso_version = 0  # counts _isolate runs (isolation times and causes only change there)
        self._alarms_key: tuple[object, ...] = ()
        self._alarms_out: list[Alarm] = []
        self._serving = (False,) * n_packs
        self._sent: list[tuple[float, float]] = [(1.0, 1.0)] * n_packs  # what the core has (its default)
        self.roles: tuple[PackRole, ...] = tuple(
            PackRole(PackService.ABSENT, 0.0, 1.0, 0.0, False, False) for _ in range(n_packs)
        )
        self._applied: tuple[PackRole, ...] | None = None  # the roles apply() handed to the core
        self.shares: tuple[float, ...] = tuple(r.share for r in self.roles)  # of roles, as one tuple

    def update(
        self,
        t: float,
        usable: Sequence[PackSample | None],
        statuses: Sequence[PackStatus],
        sensor_alarms: Iterable[Alarm] = (),
    ) -> tuple[PackRole, ...]:
        """Advance to time t with the aggregator's view: each pack's usable sample or None, its status and
        the sensor-fault alarms (their detail says why data is unusable); faults come from :meth:`observe`."""
        svc = self._service
        problems = self._no_problems
        for a in sensor_alarms:
            if a.pack is not None:
                if problems is self._no_problems:
                    problems = [""] * self._n
                problems[a.pack] = a.detail
        seen = (tuple(statuses), self._faults, problems)
        if seen != self._seen:  # the rules are idempotent: with the same inputs they change nothing
            self._seen = seen
            self._isolate(t, seen[0], problems)
        if PackService.JOINING in svc:
            self._admit(t, usable)
        measured = False
        if self._t_meas is None:
            self._t_meas = t
        elif t - self._t_meas >= _MEASURE_STEP * self.params.share_filter_s:
            measured = self._measure(min(t - self._t_meas, _MAX_DT_S), usable)
            self._t_meas = t
        ramping = PackService.RAMPING in svc and t != self._roles_t  # admission moves with t
        if measured or ramping or tuple(svc) != self._roles_svc:
            self._roles_t = t
            self.roles = self._roles(t)
            self.shares = tuple(r.share for r in self.roles)
            self._roles_svc = tuple(svc)
            self._serving = tuple(x in _IN_SERVICE for x in svc)
        return self.roles

    def observe(self, out: CoreOutput) -> None:
        """Note which packs the core asks to open (FAULT-level protection); they are isolated next step."""
        faults = [""] * self._n
        for a in out.alarms:
            if a.pack is not None and a.level >= AlarmLevel.FAULT:
                faults[a.pack] = f"{a.code}" + (f" ({a.detail})" if a.detail else "")
        for i, po in enumerate(out.packs):
            if po.contactor_open_request and not faults[i]:
                faults[i] = "contactor-open request"
        self._faults = faults

    def apply(self, core: Core) -> None:
        """Hand the shares and admissions of the last update to the core (only what changed)."""
        if self.roles is self._applied:
            return
        self._applied = self.roles
        for i, r in enumerate(self.roles):
            w = (r.weight, r.admit)
            if self._sent[i] != w:
                core.set_share(i, *w)
                self._sent[i] = w

    def in_service(self, pack: int) -> bool:
        """Whether the pack carries its share of the system limits (RUNNING or RAMPING)."""
        return self._serving[pack]

    @property
    def serving(self) -> tuple[bool, ...]:
        """Per pack, :meth:`in_service` as of the last update."""
        return self._serving

    def system_alarms(self, alarms: Iterable[Alarm]) -> list[Alarm]:
        """The state's alarms (call after :meth:`observe`): while some pack keeps running, the alarms of packs
        out of service are capped at WARNING (they do not stop the packs that run) and each isolated pack
        adds a PACK_ISOLATED warning; with none running (every pack out, or a system shutdown) everything
        stays as raised. A single pack never raises PACK_ISOLATED."""
        alarms = tuple(alarms)
        key = (alarms, self._faults, self._roles_svc, self._iso_version)
        if key != self._alarms_key:  # the same inputs as the last call: the same answer
            self._alarms_key = key
            self._alarms_out = self._system_alarms(alarms)
        return list(self._alarms_out)

    def _system_alarms(self, alarms: tuple[Alarm, ...]) -> list[Alarm]:
        # packs that keep running after this step: in service and not just asked to open by the core
        running = any(s in _IN_SERVICE and not f for s, f in zip(self._service, self._faults, strict=True))
        out = [
            Alarm(a.code, AlarmLevel.WARNING, a.since, a.pack, a.detail)
            if running and a.pack is not None and a.level > AlarmLevel.WARNING and not self.in_service(a.pack)
            else a
            for a in alarms
        ]
        if self._n > 1:
            out += [
                Alarm(AlarmCode.PACK_ISOLATED, AlarmLevel.WARNING, self._iso_since[i], i, self._iso_why[i])
                for i in range(self._n)
                if self._service[i] is PackService.ISOLATED
            ]
        return out

    def _isolate(self, t: float, statuses: Sequence[PackStatus], problems: Sequence[str]) -> None:
        self._iso_version += 1
        svc = self._service
        for i in range(self._n):
            why = _isolation_cause(statuses[i], self._faults[i], problems[i])
            if why:
                if svc[i] is not PackService.ABSENT or statuses[i] is not PackStatus.NEVER_SEEN:
                    if svc[i] is not PackService.ISOLATED:
                        self._iso_since[i] = t
                    svc[i] = PackService.ISOLATED
                    self._iso_why[i] = why
                    self._meas_s[i] = 0.0
            elif svc[i] in (PackService.ABSENT, PackService.ISOLATED):
                svc[i] = PackService.JOINING

    def _admit(self, t: float, usable: Sequence[PackSample | None]) -> None:
        svc = self._service
        window = self.params.hot_add_window_v
        joining = [i for i in range(self._n) if svc[i] is PackService.JOINING and usable[i] is not None]
        if not joining:
            return
        running = [s.voltage for i, s in enumerate(usable) if s is not None and svc[i] in _IN_SERVICE]
        if not running:
            # nothing in service: the largest group of packs that agree with each other starts together
            volts = [_voltage(usable[i]) for i in joining]
            ref = max(volts, key=lambda v: sum(abs(w - v) <= window for w in volts))
            for i in joining:
                if abs(_voltage(usable[i]) - ref) <= window:
                    svc[i] = PackService.RUNNING
                    self._meas_s[i] = 0.0
            return
        ref = sum(running) / len(running)
        for i in joining:
            if abs(_voltage(usable[i]) - ref) <= window:
                svc[i] = PackService.RAMPING if self.params.hot_add_ramp_s > 0.0 else PackService.RUNNING
                self._ramp_t0[i] = t
                self._meas_s[i] = 0.0

    def _measure(self, dt: float, usable: Sequence[PackSample | None]) -> bool:
        """Advance the share filter by `dt`; whether it moved."""
        total = sum(s.current for s in usable if s is not None)
        if dt <= 0.0 or abs(total) < self.params.share_min_current_a:
            return False
        a = 1.0 - math.exp(-dt / self.params.share_filter_s)
        moved = False
        for i, s in enumerate(usable):
            if s is None or self._service[i] not in _IN_SERVICE:
                continue
            r = min(max(s.current / total, 0.0), 1.0)
            est = self._est[i]
            self._est[i] = r if math.isnan(est) or self._meas_s[i] == 0.0 else est + a * (r - est)
            self._meas_s[i] += dt
            moved = True
        return moved

    def _roles(self, t: float) -> tuple[PackRole, ...]:
        svc = self._service
        p = self.params
        members = [i for i in range(self._n) if svc[i] in _IN_SERVICE]
        n = len(members)
        measured = {i for i in members if self._meas_s[i] >= p.share_filter_s}
        shares = [0.0] * self._n
        weights = [1.0] * self._n
        if n and not measured:
            for i in members:
                shares[i] = 1.0 / n
        elif n:
            floor = _SHARE_FLOOR / n
            est = {i: max(self._est[i], floor) for i in measured}
            rest = len(measured) / n  # what the measured packs carry together; the others 1/n each
            total = sum(est.values())
            for i in members:
                shares[i] = weights[i] = est[i] / total * rest if i in measured else 1.0 / n
        roles = []
        for i in range(self._n):
            admit = 0.0
            if svc[i] is PackService.RAMPING:
                # in service from its first step (> 0: its own limit counts at once if it is the lower)
                admit = max((t - self._ramp_t0[i]) / p.hot_add_ramp_s, _ADMIT_MIN)
                if admit >= 1.0:
                    svc[i] = PackService.RUNNING
            if svc[i] is PackService.RUNNING:
                admit = 1.0
            admit = min(max(admit, 0.0), 1.0)
            out = svc[i] in (PackService.JOINING, PackService.ISOLATED)
            roles.append(PackRole(svc[i], shares[i], weights[i], admit, out, i in measured))
        return tuple(roles)


def _voltage(s: PackSample | None) -> float:
    return s.voltage if s is not None else math.nan


def _isolation_cause(status: PackStatus, fault: str, problem: str) -> str:
    if status is PackStatus.STALE:
        return "link lost (no fresh sample)"
    if status in (PackStatus.IMPLAUSIBLE, PackStatus.FROZEN):
        return f"implausible data: {problem}" if problem else "implausible data"
    if status is PackStatus.NEVER_SEEN:
        return "never seen"
    if fault:
        return f"fault: {fault}"
    return ""
