"""Shared immutable data model: samples in, estimates/limits/alarms out.

Units are SI (V, A, °C, Ah, s); current > 0 means charging. Scaling lives only in codecs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


class Chemistry(enum.StrEnum):
    """Cell chemistry; selects OCV curve and default thresholds."""

    LFP = "lfp"
    NMC = "nmc"


class Frame(NamedTuple):
    """One CAN frame as codecs see it: arbitration id, payload, 29-bit flag."""

    id: int
    data: bytes
    extended: bool = False


class BmsFlags(enum.IntFlag):
    """Status/alarm bits a pack BMS reports about itself (pack.dbc PackStatus/PackInfo)."""

    NONE = 0
    CHARGE_FET = 1 << 0
    DISCHARGE_FET = 1 << 1
    BALANCING = 1 << 2
    CONTACTOR_CLOSED = 1 << 3
    BMS_FAULT = 1 << 4
    ALARM_CELL_OV = 1 << 8
    ALARM_CELL_UV = 1 << 9
    ALARM_OVERTEMP = 1 << 10
    ALARM_UNDERTEMP = 1 << 11
    ALARM_CHARGE_OC = 1 << 12
    ALARM_DISCHARGE_OC = 1 << 13
    ALARM_SHORT_CIRCUIT = 1 << 14
    ALARM_INTERNAL = 1 << 15


@dataclass(frozen=True, slots=True)
class BmsRequest:
    """Limits a pack's own BMS sends (a battery speaking an inverter protocol): V and A >= 0, None = not
    sent. They bind the gateway's limits (Reason.BMS_REQUEST): what goes out never exceeds them."""

    cvl: float | None = None
    ccl: float | None = None
    dcl: float | None = None
    dvl: float | None = None
    charge_enable: bool = True
    discharge_enable: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class PackSample:
    """One complete reading of pack `pack` (index into the configured packs) taken at time t (s)."""

    pack: int
    t: float
    cell_v: F64
    cell_t: F64
    current: float
    voltage: float
    flags: BmsFlags = BmsFlags.NONE
    alive: int = 0
    soc_reported: float | None = None
    request: BmsRequest | None = None  # the pack BMS's own limits, where its protocol carries them


class Reason(enum.StrEnum):
    """Why a limit has its value (the binding constraint)."""

    CONFIG = "config"
    CELL_VOLTAGE_HIGH = "cell_voltage_high"
    CELL_VOLTAGE_LOW = "cell_voltage_low"
    CELL_OVERVOLTAGE = "cell_overvoltage"
    CELL_UNDERVOLTAGE = "cell_undervoltage"
    TEMPERATURE_HIGH = "temperature_high"
    TEMPERATURE_LOW = "temperature_low"
    OVERTEMPERATURE = "overtemperature"
    UNDERTEMPERATURE = "undertemperature"
    COLD_CHARGE = "cold_charge"
    OVERCURRENT = "overcurrent"
    SOC_FULL = "soc_full"
    SOC_EMPTY = "soc_empty"
    BMS_REQUEST = "bms_request"
    FAULT = "fault"
    COMM_LOST = "comm_lost"
    RECOVERY = "recovery"
    PACK_VOLTAGE = "pack_voltage"
    EMS = "ems"  # an energy-management system command tightened it (bmsgw/ems.py)
    RESERVE = "reserve"  # the backup reserve SOC taper ([energy] reserve_soc_pct, bmsgw/reserve.py)
    SCHEDULE = "schedule"  # a time-of-use window ([[schedule]], bmsgw/schedule.py)
    CELL_IMBALANCE = "cell_imbalance"  # cell-voltage spread (core protection)
    SENSOR_FAULT = "sensor_fault"  # a reading the core cannot use (core protection)
    THERMAL_RUNAWAY = "thermal_runaway"  # rising temperature staging (core protection)


@dataclass(frozen=True, slots=True)
class Limit:
    """A limit value (V or A) and the reason that bound it."""

    value: float
    reason: Reason


class ChargeStage(enum.StrEnum):
    """Charge-voltage stage behind CVL (core): bulk and absorption at the charge voltage, then float."""

    BULK = "bulk"
    ABSORPTION = "absorption"
    FLOAT = "float"


@dataclass(frozen=True, slots=True)
class Limits:
    """What the inverter is allowed to do: CVL/DVL in V, CCL/DCL in A (both >= 0), request bits."""

    cvl: Limit
    ccl: Limit
    dcl: Limit
    dvl: Limit
    charge_enable: bool
    discharge_enable: bool
    force_charge_1: bool = False
    force_charge_2: bool = False
    full_charge_request: bool = False
    charge_stage: ChargeStage = ChargeStage.BULK


class AlarmLevel(enum.IntEnum):
    """Severity: WARNING derates, ALARM zeroes that direction, FAULT opens contactors."""

    WARNING = 1
    ALARM = 2
    FAULT = 3


class AlarmCode(enum.StrEnum):
    """What an alarm is about."""

    COMM_LOST = "comm_lost"
    SENSOR_FAULT = "sensor_fault"
    CELL_OVERVOLTAGE = "cell_overvoltage"
    CELL_UNDERVOLTAGE = "cell_undervoltage"
    OVERTEMPERATURE = "overtemperature"
    UNDERTEMPERATURE = "undertemperature"
    CHARGE_UNDERTEMPERATURE = "charge_undertemperature"
    CHARGE_OVERCURRENT = "charge_overcurrent"
    DISCHARGE_OVERCURRENT = "discharge_overcurrent"
    PACK_OVERVOLTAGE = "pack_overvoltage"
    PACK_UNDERVOLTAGE = "pack_undervoltage"
    CELL_IMBALANCE = "cell_imbalance"
    BMS_FAULT = "bms_fault"
    PACK_ISOLATED = "pack_isolated"  # one pack taken out of a multi-pack system (bmsgw/multipack.py)
    HISTORY_DEGRADED = "history_degraded"  # history database not writable (telemetry/history_service.py)
    THERMAL_RUNAWAY = "thermal_runaway"  # dT/dt staging up to the GB 38031 confirmation (core protection)
    STATE_RESET = "state_reset"  # saved estimator state unreadable: SOC restarted from OCV (daemon.py)


@dataclass(frozen=True, slots=True)
class Alarm:
    """An active alarm; `pack` is None for system-wide alarms."""

    code: AlarmCode
    level: AlarmLevel
    since: float
    pack: int | None = None
    detail: str = ""


class PackStatus(enum.StrEnum):
    """Whether a pack's data is used by the core."""

    ONLINE = "online"
    NEVER_SEEN = "never_seen"
    STALE = "stale"
    IMPLAUSIBLE = "implausible"
    FROZEN = "frozen"


class PackService(enum.StrEnum):
    """A pack's part in the virtual battery of several packs (bmsgw/multipack.py)."""

    RUNNING = "running"  # in service
    RAMPING = "ramping"  # in service, its share of the limits ramping in after a hot-add
    JOINING = "joining"  # usable data, held out (contactor open) until its voltage matches the others
    ISOLATED = "isolated"  # excluded: fault, lost link or implausible data; rejoins via JOINING
    ABSENT = "absent"  # never seen


class CellRef(NamedTuple):
    """Where an extreme value sits: pack index and cell (or sensor) index, both 0-based."""

    pack: int
    cell: int


@dataclass(frozen=True, slots=True, eq=False)
class PackHealth:
    """Slow health estimates of one pack: what SOH, maintenance and the battery passport are built from."""

    soh: float  # min(soh_capacity, soh_resistance), 0..1
    soh_capacity: float  # weakest cell's capacity / rated capacity
    soh_resistance: float  # 1 at the baseline R0 (learnt over the first steps), 0 at twice it
    capacity_ah: float  # usable pack capacity (weakest cell)
    cell_capacity_ah: F64
    r0_ohm: float  # pack-mean cell R0 at 25 °C
    cell_r0_ohm: F64  # per-cell R0 at 25 °C (nan until a current step was seen)
    equivalent_full_cycles: float
    dod_histogram: tuple[int, ...]  # completed half-cycles per 10 %-depth bin (0–10 %, …, 90–100 %)
    calendar_days: float  # since the estimator state was first created
    cell_self_discharge_pct_day: F64  # SOC loss per cell vs the pack mean at rest, %/day (> 0: leaks)


@dataclass(frozen=True, slots=True)
class Forecast:
    """Runtime forecast: seconds until empty (at the reserve) and until full; inf when not moving that way."""

    time_to_empty_s: float
    time_to_full_s: float
    basis: str = ""  # "load_profile" (learned per hour of week) or "present_current"


@dataclass(frozen=True, slots=True)
class Transfer:
    """Active balancing: move `current_a` (A, >= 0) out of cell `source` into cell `sink` (0-based cells)."""

    source: int
    sink: int
    current_a: float


@dataclass(frozen=True, slots=True, eq=False)
class PackView:
    """One pack as the outputs see it."""

    pack: int
    id: str
    status: PackStatus
    sample: PackSample | None
    soc: float
    soh: float
    cell_soc: F64 | None = None
    balance_mask: int = 0
    transfers: tuple[Transfer, ...] = ()  # active balancing plan (sent as pack.dbc GatewayBalanceTransfer)
    contactor_open_request: bool = False
    health: PackHealth | None = None
    service: PackService = PackService.RUNNING
    share: float = float("nan")  # fraction of the system current assumed for this pack (0 out of service)

    @property
    def in_service(self) -> bool:
        """Its data is used and it carries its share of the system limits."""
        return self.status is PackStatus.ONLINE and self.service in (PackService.RUNNING, PackService.RAMPING)


@dataclass(frozen=True, slots=True, eq=False)
class GatewayState:
    """Immutable snapshot the core publishes; every output reads the newest one."""

    t: float
    packs: tuple[PackView, ...]
    soc: float
    soh: float
    voltage: float
    current: float
    temperature: float
    cell_v_min: float
    cell_v_max: float
    cell_v_min_at: CellRef
    cell_v_max_at: CellRef
    cell_t_min: float
    cell_t_max: float
    cell_t_min_at: CellRef
    cell_t_max_at: CellRef
    limits: Limits
    alarms: tuple[Alarm, ...] = field(default=())
    capacity_ah: float = 0.0
    forecast: Forecast | None = None
    ccl_pack: int | None = None  # pack whose limit (over its current share) bound CCL; None: no pack did
    dcl_pack: int | None = None

    @property
    def usable(self) -> bool:
        """True when at least one pack feeds the core."""
        return any(p.status is PackStatus.ONLINE for p in self.packs)

    @property
    def modules_online(self) -> int:
        """Number of packs in use (held-out and isolated packs do not count)."""
        return sum(p.in_service for p in self.packs)

    def alarm_level(self, code: AlarmCode) -> AlarmLevel | None:
        """Highest active level for `code`, or None."""
        levels = [a.level for a in self.alarms if a.code is code]
        return max(levels) if levels else None
