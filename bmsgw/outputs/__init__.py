"""Inverter-side outputs and their registry: every CAN codec gets a CanOutput; servers register here too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from bmsgw.clock import Clock
from bmsgw.config import OutputConfig, Settings
from bmsgw.ems import EmsCommands
from bmsgw.inverter import CAN_CODECS
from bmsgw.inverter.scaling import soc_following_limits
from bmsgw.model import GatewayState

__all__ = ["OUTPUTS", "OUTPUT_CHECKS", "Output", "OutputFactory", "TakesCommands", "state_for"]


class Output(Protocol):
    """A running output: reads the newest state at its own cadence (or on request) and keeps serving."""

    sent: int

    async def run(self) -> None:
        """Serve until cancelled; reopen the transport on its own after failures."""
        ...


@runtime_checkable
class TakesCommands(Protocol):
    """An output that accepts EMS commands; the Gateway hands it the pipeline's EmsCommands."""

    ems: EmsCommands | None


OutputFactory = Callable[[Settings, OutputConfig, Clock, Callable[[], GatewayState]], Output]
"""(settings, output config, clock, newest state) -> Output."""


def state_for(cfg: OutputConfig, state: Callable[[], GatewayState]) -> Callable[[], GatewayState]:
    """The newest state as this output shows it (`soc_follows_limits` applied)."""
    if not cfg.soc_follows_limits:
        return state
    return lambda: soc_following_limits(state())


def _can(settings: Settings, cfg: OutputConfig, clock: Clock, state: Callable[[], GatewayState]) -> Output:
    from bmsgw.outputs.can import CanOutput

    return CanOutput(cfg, clock, state, name=settings.gateway.name)


def _pylontech_rs485(
    settings: Settings, cfg: OutputConfig, clock: Clock, state: Callable[[], GatewayState]
) -> Output:
    from bmsgw.outputs.pylontech_rs485 import PylontechRs485Output

    return PylontechRs485Output(settings, cfg, clock, state)


def _modbus(settings: Settings, cfg: OutputConfig, clock: Clock, state: Callable[[], GatewayState]) -> Output:
    from bmsgw.outputs.modbus import ModbusOutput

    return ModbusOutput(settings, cfg, clock, state)


def _pylontech_hv(
    settings: Settings, cfg: OutputConfig, clock: Clock, state: Callable[[], GatewayState]
) -> Output:
    from bmsgw.outputs.pylontech_hv_can import PylontechHvCanOutput

    return PylontechHvCanOutput(settings, cfg, clock, state)


OUTPUTS: dict[str, OutputFactory] = {
    **dict.fromkeys(CAN_CODECS, _can),
    "pylontech-rs485": _pylontech_rs485,
    "modbus-tcp": _modbus,
    "modbus-rtu": _modbus,
    "pylontech-hv-can": _pylontech_hv,
}


def _serial_or_tcp(cfg: OutputConfig) -> str | None:
    if cfg.port is None and cfg.tcp_port is None:
        return f"{cfg.protocol} needs port (serial device or socket:// URL) and/or tcp_port; neither is set"
    return None


def _modbus_rtu(cfg: OutputConfig) -> str | None:
    if cfg.port is None:
        return "modbus-rtu needs port (the serial device, e.g. /dev/ttyUSB0)"
    if cfg.allow:
        return "allow applies to modbus-tcp only (on RS485 the bus is the trust boundary, docs/security.md)"
    return None


_HV_KEYS = ("current_offset_a", "byte_order", "id_offset")


def _hv_keys_unset(cfg: OutputConfig) -> str | None:
    given = [k for k in _HV_KEYS if k in cfg.model_fields_set]
    return f"{', '.join(given)} applies to pylontech-hv-can only, not {cfg.protocol}" if given else None


def _marker_not_temperature(cfg: OutputConfig) -> str | None:
    if "unknown_temperature_c" not in cfg.model_fields_set:
        return None
    return (
        f"unknown_temperature_c does not apply to {cfg.protocol}: it sends the protocol's 'no value' marker "
        "(0x8000) for an unknown temperature"
    )


def _pylontech_hv_can(cfg: OutputConfig) -> str | None:
    raw = cfg.current_offset_a * 10
    if abs(raw - round(raw)) > 1e-6:
        return f"current_offset_a must be a multiple of 0.1 A (the field's unit), got {cfg.current_offset_a}"
    return None


def _first(*checks: Callable[[OutputConfig], str | None]) -> Callable[[OutputConfig], str | None]:
    return lambda cfg: next((p for check in checks if (p := check(cfg)) is not None), None)


OUTPUT_CHECKS: dict[str, Callable[[OutputConfig], str | None]] = {
    **dict.fromkeys(CAN_CODECS, _hv_keys_unset),
    "sma-can": _first(_hv_keys_unset, _marker_not_temperature),
    "pylontech-rs485": _first(_hv_keys_unset, _serial_or_tcp),
    "modbus-tcp": _first(_hv_keys_unset, _marker_not_temperature),
    "modbus-rtu": _first(_hv_keys_unset, _modbus_rtu, _marker_not_temperature),
    "pylontech-hv-can": _pylontech_hv_can,
}
"""Per-protocol checks of an [[outputs]] entry (run by config validation): the problem, or None."""
