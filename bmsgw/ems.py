"""Energy-management-system commands: they can only tighten the core's limits, and expire without a heartbeat.

Pure and clock-free: every call gets the time `t` (gateway clock seconds). The Modbus output decodes register
writes into a `Command` and hands it to `EmsCommands.write`; `Pipeline` calls `EmsCommands.apply` after each
core step, so every output sees the tightened limits. Nothing here can raise a current, re-enable a
direction or touch CVL/DVL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from bmsgw.model import Limit, Limits, Reason

__all__ = ["RESERVE_TAPER", "Command", "EmsCommands", "cap", "reserve_factor", "tighten"]

RESERVE_TAPER: Final = 0.02
"""DCL falls linearly from the core's value at reserve + this SOC fraction to 0 at the reserve."""


@dataclass(frozen=True, slots=True)
class Command:
    """What the EMS asked for; the defaults mean "automatic" (no command)."""

    reserve_soc: float | None = None  # fraction 0..1: DCL → 0 at/below it
    max_charge_a: float | None = None  # cap on CCL (A)
    max_discharge_a: float | None = None  # cap on DCL (A)
    force_charge: bool = False  # ask the inverter to charge (Pylontech "force charge request I")
    disconnect: bool = False  # CCL = DCL = 0, both enables off (bmsgw has no contactor of its own)
    inverter_state: int | None = None  # SunSpec 802 SetInvState as last written (informational)
    heartbeat: int = 0  # last control-heartbeat value written (read back to the EMS)

    @property
    def active(self) -> bool:
        """True when the command changes limits or request bits."""
        return (
            self.reserve_soc is not None
            or self.max_charge_a is not None
            or self.max_discharge_a is not None
            or self.force_charge
            or self.disconnect
        )


class EmsCommands:
    """The gateway's current EMS command; reverts to automatic `timeout_s` after the last accepted write."""

    def __init__(self) -> None:
        self._command = Command()
        self._deadline = -math.inf
        self._resets: list[int | None] = []

    def request_reset(self, pack: int | None) -> None:
        """Ask for the core's latched faults of `pack` (None: every pack) to be cleared at the next step."""
        self._resets.append(pack)

    def take_resets(self) -> list[int | None]:
        """The reset requests since the last call (the Pipeline applies them to the core)."""
        out, self._resets = self._resets, []
        return out

    def write(self, command: Command, t: float, timeout_s: float) -> None:
        """Accept `command` at time t; it holds until t + timeout_s unless written again."""
        self._command = command
        self._deadline = t + timeout_s

    def command(self, t: float) -> Command:
        """The command in force at t (the automatic default once the heartbeat deadline has passed)."""
        if t >= self._deadline and self._command != Command():
            self._command = Command()
        return self._command

    def remaining(self, t: float) -> float:
        """Seconds until the command expires (0 when none is in force)."""
        return max(0.0, self._deadline - t) if self.command(t).active else 0.0

    def apply(self, limits: Limits, t: float, soc: float) -> Limits:
        """`limits` tightened by the command in force at t; `soc`: system SOC fraction (NaN = unknown)."""
        return tighten(limits, self.command(t), soc)


def tighten(limits: Limits, cmd: Command, soc: float) -> Limits:
    """`limits` under `cmd`: currents only go down (reason EMS where it binds), enables only go off."""
    if not cmd.active:
        return limits
    ccl, dcl = limits.ccl, limits.dcl
    if cmd.max_charge_a is not None:
        ccl = cap(ccl, cmd.max_charge_a)
    if cmd.max_discharge_a is not None:
        dcl = cap(dcl, cmd.max_discharge_a)
    if cmd.reserve_soc is not None:
        dcl = cap(dcl, dcl.value * reserve_factor(soc, cmd.reserve_soc))
    if cmd.disconnect:
        return replace(
            limits,
            ccl=cap(ccl, 0.0),
            dcl=cap(dcl, 0.0),
            charge_enable=False,
            discharge_enable=False,
            force_charge_1=False,
            force_charge_2=False,
            full_charge_request=False,
        )
    return replace(
        limits,
        ccl=ccl,
        dcl=dcl,
        force_charge_1=limits.force_charge_1 or (cmd.force_charge and limits.charge_enable),
    )


def cap(limit: Limit, value: float, reason: Reason = Reason.EMS) -> Limit:
    """`limit` lowered to `value` when that is strictly tighter (the binding reason becomes `reason`)."""
    value = max(value, 0.0)
    return Limit(value, reason) if value < limit.value else limit


def reserve_factor(soc: float, reserve: float, taper: float = RESERVE_TAPER) -> float:
    """1 above reserve + taper, 0 at/below the reserve (and when SOC is unknown), linear in between."""
    if not math.isfinite(soc) or soc <= reserve:
        return 0.0
    return 1.0 if soc >= reserve + taper else (soc - reserve) / taper
