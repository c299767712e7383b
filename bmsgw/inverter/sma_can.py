"""SMA Sunny Island external-BMS CAN codec (protocol "sma-can"): state → frames, 0x305-0x307 → SI status.

Layout lives in ``dbc/sma.dbc`` (SMA Technical Information "Connecting Batteries with external BMS to
SUNNY ISLAND", FSS-ConnectingBat-TI-en-10; reference protocols.md §5.3, anchors_bridges.md §1.5).
11-bit ids, little endian, 500 kbit/s.

- Inhibit time: frames to the SI must be at least 200 ms apart. The codec declares FRAME_GAP_S = 0.2 and
  CanOutput spaces the six frames by it, so a set takes 1.2 s and each frame repeats every 1.2 s (the SI's
  timeouts are 60 s: no 0x355 → F952 ExtBMSTimeout, standby; no 0x351 → W952).
- Ranges: CVL 41-63 V, CCL/DCL 0-1200 A, DVL 41-48 V. The SI silently rejects out-of-range values and keeps
  the last good one, so every value is clamped into its range (a 40 V DVL goes out as 41 V).
- Invalid markers: 0xFFFF (unsigned) / 0x8000 (signed) make the SI use its default. A NaN value (no data)
  goes out as the marker; so do the 0x35F fields we have no value for (Bat-Type, manufacturer id: no
  SMA-assigned codes). A clamped value never lands on a marker. This includes an unknown battery
  temperature (a pack without sensors): 0x8000, so the SI falls back to its own battery temperature
  sensor; the output key unknown_temperature_c does not apply here.
- 0x35A: 2-bit pairs, 01 active, 10 cleared, 00 not supported; ALARM/FAULT → alarm bytes 0-3 (the SI goes
  to standby until cleared), WARNING → warning bytes 4-7 (logged only). Mapping in
  _can_common.ALARM_PAIRS: over/under-voltage (cell or pack) → high/low voltage, over/under-temperature →
  high/low temperature, cold charge → low temperature charge, discharge/charge over-current → high
  current/high charge current, BMS/sensor fault → BMS internal, cell imbalance → cell imbalance,
  COMM_LOST → general + BMS internal, any FAULT → general. Pairs nothing maps to (high temperature charge,
  contactor, short circuit, generator, reserved) are 00.
- Off-grid the SI does not honour DCL, so the alarm pairs are what stop it when the packs are lost.
- The SI sends 0x305 (its battery V, I, T, SOC), 0x306 (SOH, charging procedure, operating state, active
  error, charge voltage set-point) and 0x307 (relay state) every second; decode_inverter reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bmsgw.inverter._can_common import BMS_VERSION, CLEARED, CanCodecError, LvFrames, load_dbc
from bmsgw.model import Frame, GatewayState

__all__ = [
    "FRAME_GAP_S",
    "FRAME_IDS",
    "INVERTER_IDS",
    "PERIOD_S",
    "CanCodecError",
    "SiBattery",
    "SiRelays",
    "SiState",
    "SiStatus",
    "decode_inverter",
    "encode",
]

FRAME_IDS: Final = (0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F)
FRAME_GAP_S: Final = 0.2  # SMA inhibit time
PERIOD_S: Final = round(len(FRAME_IDS) * FRAME_GAP_S, 3)
INVERTER_IDS: Final = (0x305, 0x306, 0x307)


@dataclass(frozen=True, slots=True)
class SiBattery:
    """0x305: the battery as the Sunny Island measures it; None where it sent the invalid marker."""

    voltage: float | None  # V
    current: float | None  # A, > 0 charging (the SI sends it negative while charging)
    temperature: float | None  # °C
    soc: float | None  # fraction 0..1


@dataclass(frozen=True, slots=True)
class SiState:
    """0x306: SI state; None where it sent the invalid marker."""

    soh: float | None  # fraction 0..1
    charging_procedure: int
    operating_state: int  # 0, 1, 3 or 4 per SMA
    active_error: int | None
    charge_voltage_setpoint: float | None  # V


@dataclass(frozen=True, slots=True)
class SiRelays:
    """0x307: relay state bit field (bytes 0-1) and the raw payload."""

    relay_state: int
    data: bytes


SiStatus = SiBattery | SiState | SiRelays


def encode(state: GatewayState, *, manufacturer: str = "PYLON") -> list[Frame]:
    """The six battery frames 0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F for `state`."""
    return [
        _LV.limits(state.limits),
        _LV.soc(state),
        _LV.measurements(state),
        _LV.alarms(state, cleared=CLEARED),
        _LV.manufacturer(manufacturer),
        _LV.info(state.capacity_ah, version=BMS_VERSION),  # Bat-Type, manufacturer id: invalid
    ]


def decode_inverter(frame: Frame) -> SiStatus | None:
    """SI status from a standard-id 0x305/0x306/0x307 frame, else None; CanCodecError if too short."""
    if frame.extended:
        return None
    if frame.id == 0x305:
        v = _M305.decode(frame.data)
        current, soc = v["BatteryCurrent"], v["SOC"]
        return SiBattery(
            voltage=v["BatteryVoltage"],
            current=None if current is None else -current,
            temperature=v["BatteryTemperature"],
            soc=None if soc is None else soc / 100.0,
        )
    if frame.id == 0x306:
        v = _M306.decode(frame.data)
        soh, error = v["SOH"], v["ActiveError"]
        return SiState(
            soh=None if soh is None else soh / 100.0,
            charging_procedure=int(v["ChargingProcedure"] or 0),
            operating_state=int(v["OperatingState"] or 0),
            active_error=None if error is None else int(error),
            charge_voltage_setpoint=v["ChargeVoltageSetpoint"],
        )
    if frame.id == 0x307:
        v = _M307.decode(frame.data)
        return SiRelays(relay_state=int(v["RelayState"] or 0), data=bytes(frame.data))
    return None


_LV: Final = LvFrames(load_dbc("sma.dbc"))
_M305: Final = _LV.msg(0x305)
_M306: Final = _LV.msg(0x306)
_M307: Final = _LV.msg(0x307)
