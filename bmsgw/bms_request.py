"""Limits a pack's own BMS sends (BmsRequest, e.g. a battery speaking Pylontech/SMA CAN) bind the gateway's
limits: applied after the core, before EMS commands, so what the outputs send never exceeds them. Pure.

Parallel packs: a pack allowed I_i that carries the share s_i of the system current limits the system to
I_i / s_i (shares normalised over the packs that request; equal shares 1/n until measured, as the core
and bmsgw/multipack.py assume). Voltages: the lowest requested CVL and the highest requested DVL bind.
A pack that disables a direction disables it for the system.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from bmsgw.model import Limit, Limits, PackSample, Reason

__all__ = ["bind_requests"]


def bind_requests(limits: Limits, samples: Sequence[PackSample], shares: Sequence[float] = ()) -> Limits:
    """`limits` capped by the requests in `samples` (the packs in service); `shares[pack]` is each pack's
    assumed share of the system current (any scale, > 0; missing or 0 = equal shares)."""
    asking = [(s.pack, s.request) for s in samples if s.request is not None]
    if not asking:
        return limits
    weight = {s.pack: _weight(shares, s.pack) for s in samples}
    total = sum(weight.values())
    cvl, ccl, dcl, dvl = limits.cvl, limits.ccl, limits.dcl, limits.dvl
    charge, discharge = limits.charge_enable, limits.discharge_enable
    for pack, req in asking:
        share = weight[pack] / total
        cvl = _lower(cvl, req.cvl)
        dvl = _higher(dvl, req.dvl)
        ccl = _lower(ccl, None if req.ccl is None else req.ccl / share)
        dcl = _lower(dcl, None if req.dcl is None else req.dcl / share)
        if not req.charge_enable:
            charge, ccl = False, _lower(ccl, 0.0)
        if not req.discharge_enable:
            discharge, dcl = False, _lower(dcl, 0.0)
    if dvl.value > cvl.value:  # the requests contradict each other: charging must still stop at CVL
        dvl = Limit(cvl.value, Reason.BMS_REQUEST)
    return dataclasses.replace(
        limits, cvl=cvl, ccl=ccl, dcl=dcl, dvl=dvl, charge_enable=charge, discharge_enable=discharge
    )


def _weight(shares: Sequence[float], pack: int) -> float:
    w = shares[pack] if pack < len(shares) else 0.0
    return w if w > 0.0 else 1.0


def _lower(limit: Limit, cap: float | None) -> Limit:
    """`limit` lowered to `cap` when that is strictly tighter (the reason becomes BMS_REQUEST)."""
    if cap is None or not cap < limit.value:  # also: a NaN cap never loosens or binds
        return limit
    return Limit(max(cap, 0.0), Reason.BMS_REQUEST)


def _higher(limit: Limit, floor: float | None) -> Limit:
    if floor is None or not floor > limit.value:
        return limit
    return Limit(floor, Reason.BMS_REQUEST)
