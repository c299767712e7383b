"""Configuration: TOML file < environment (BMSGW_<SECTION>__<KEY>) < CLI flags, validated by pydantic."""

from __future__ import annotations

import enum
import ipaddress
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from bmsgw.energy_config import EnergySection, ScheduleWindow
from bmsgw.model import Chemistry

__all__ = [
    "CanSection",
    "ConfigError",
    "GatewaySection",
    "HistorySection",
    "LimitsSection",
    "MqttSection",
    "OutputConfig",
    "PackConfig",
    "Settings",
    "Source",
    "WebSection",
    "flatten",
    "load_settings",
]


class ConfigError(Exception):
    """Invalid configuration; `problems` holds one line per bad key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Source(enum.StrEnum):
    """Where an effective configuration value came from."""

    DEFAULT = "default"
    FILE = "file"
    ENV = "env"
    CLI = "cli"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """[gateway]: identity, state and freshness."""

    name: str = Field("bmsgw", min_length=1, max_length=64)
    state_dir: Path = Path("/var/lib/bmsgw")
    state_save_period_s: float = Field(300.0, ge=1, le=86400)
    stale_after_s: float = Field(5.0, gt=0, le=600)
    recovery_ramp_s: float = Field(60.0, ge=0, le=3600)
    step_period_s: float = Field(0.25, gt=0, le=5)
    sample_window_s: float = Field(1.0, gt=0, le=30)
    frozen_after: int = Field(5, ge=2, le=1000)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class PackConfig(_Section):
    """[[packs]]: one battery module/pack."""

    id: str = Field(min_length=1, max_length=32)
    source: str = "can"
    cells: int = Field(16, ge=1, le=32)
    sensors: int = Field(4, ge=0, le=12)
    chemistry: Chemistry = Chemistry.LFP
    capacity_ah: float = Field(100.0, gt=0, le=10000)
    address: int = Field(0, ge=0, le=255)
    port: str | None = Field(None, min_length=1)
    baudrate: int | None = Field(None, ge=1200, le=921_600)
    poll_interval_s: float = Field(1.0, gt=0, le=60)
    # serial kinds: "inverted" = this BMS reports the current with the opposite sign to its protocol
    current_sign: Literal["normal", "inverted"] = "normal"

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        from bmsgw.sources import SOURCES

        if v not in SOURCES:
            raise ValueError(f"unknown source {v!r}; allowed: {', '.join(SOURCES)}")
        return v

    @model_validator(mode="after")
    def _can_address(self) -> PackConfig:
        if self.source == "can" and self.address > 15:
            raise ValueError(f"address {self.address}: CAN pack modules are numbered 0..15")
        return self


class CanSection(_Section):
    """[can]: the pack-side CAN bus (python-can interface name, channel, bitrate)."""

    interface: str = "socketcan"
    channel: str = "can0"
    bitrate: int = Field(500_000, ge=10_000, le=1_000_000)


class MultipackSection(_Section):
    """[multipack]: several packs as one battery: hot-add window and ramp, current-share measurement."""

    hot_add_window_v: float = Field(1.0, gt=0, le=100)
    hot_add_ramp_s: float = Field(30.0, ge=0, le=3600)
    share_min_current_a: float = Field(5.0, gt=0, le=5000)
    share_filter_s: float = Field(10.0, gt=0, le=3600)


class BalancingSection(_Section):
    """[balancing]: the balancing planner (core/balancing.py): bleed masks or transfers sent to the packs."""

    mode: Literal["passive", "active", "off"] = "passive"
    rule: Literal["auto", "soc", "voltage"] = "auto"  # auto: SOC at the top of charge for LFP, else voltage
    period_s: float = Field(1.0, gt=0, le=600)
    top_soc: float = Field(0.90, ge=0.5, le=1.0)
    delta_pct: float = Field(0.2, gt=0, le=10)  # SOC rule: start at this spread (% of rated capacity)
    start_v: float | None = Field(None, gt=0, lt=6)  # voltage rule; None: cell_v_max_warn − 0.1 V
    delta_v: float = Field(0.015, gt=0, le=0.5)
    hyst_v: float = Field(0.005, ge=0, le=0.5)
    bleed_current_a: float = Field(0.2, ge=0, le=10)  # what the pack's bleed resistors draw per cell
    # active: pack.dbc GatewayBalanceTransfer carries 2 transfers of at most 40.95 A
    transfer_current_a: float = Field(2.0, gt=0, le=40)
    max_transfers: int = Field(1, ge=1, le=2)
    transfer_efficiency: float = Field(0.85, gt=0, le=1)
    knee_high_v: float = Field(3.40, gt=0, lt=6)  # soc rule: transfers while charging above this
    knee_low_v: float = Field(3.15, gt=0, lt=6)  # soc rule: transfers while discharging below this

    @model_validator(mode="after")
    def _hysteresis(self) -> BalancingSection:
        if self.hyst_v >= self.delta_v:
            raise ValueError(f"hyst_v ({self.hyst_v}) must be below delta_v ({self.delta_v})")
        if self.knee_low_v >= self.knee_high_v:
            raise ValueError(f"knee_low_v ({self.knee_low_v}) must be below knee_high_v ({self.knee_high_v})")
        return self


class LimitsSection(_Section):
    """[limits]: per-pack current limits and protection thresholds; None = chemistry default."""

    max_charge_current_a: float = Field(100.0, gt=0, le=5000)
    max_discharge_current_a: float = Field(100.0, gt=0, le=5000)
    cell_v_max_alarm: float | None = Field(None, gt=0, lt=6)
    cell_v_max_warn: float | None = Field(None, gt=0, lt=6)
    cell_v_min_warn: float | None = Field(None, gt=0, lt=6)
    cell_v_min_alarm: float | None = Field(None, gt=0, lt=6)
    cell_v_hysteresis: float = Field(0.05, ge=0, le=1)
    charge_voltage_cell_v: float | None = Field(None, gt=0, lt=6)
    discharge_voltage_cell_v: float | None = Field(None, gt=0, lt=6)
    charge_temp_min_c: float = Field(0.0, ge=-40, le=60)
    charge_temp_max_c: float = Field(45.0, ge=-40, le=90)
    discharge_temp_min_c: float = Field(-20.0, ge=-40, le=60)
    discharge_temp_max_c: float = Field(55.0, ge=-40, le=90)
    temp_warn_margin_c: float = Field(5.0, ge=0, le=30)
    temp_hysteresis_c: float = Field(3.0, ge=0, le=30)
    overcurrent_factor: float = Field(1.2, ge=1, le=10)
    overcurrent_time_s: float = Field(2.0, ge=0, le=600)
    debounce_s: float = Field(1.0, ge=0, le=600)
    rest_current_a: float = Field(0.5, ge=0, le=100)
    rest_time_s: float = Field(1800.0, ge=0, le=86400)
    # Coulomb counting + anchors until the EKF is validated against a simulator with LFP hysteresis.
    estimator: Literal["counting", "ekf"] = "counting"
    hysteresis_sigma: float | None = Field(None, ge=0, le=2)  # None: CoreParams' default (0.15)
    full_tail_current_a: float | None = Field(None, gt=0, le=5000)  # None: 0.05 C of each pack
    full_voltage_margin_v: float = Field(0.05, ge=0, le=1)
    full_hold_s: float = Field(60.0, ge=0, le=3600)
    empty_voltage_cell_v: float | None = Field(None, gt=0, lt=6)  # None: cell_v_min_alarm
    # protection tier 3, pack voltage (per cell), spread, derating, charge stages, thermal staging
    # (bmsgw/core/core.py CoreParams; None = the chemistry's default; docs/configuration.md)
    cell_v_max_fault: float | None = Field(None, gt=0, lt=6)
    cell_v_min_fault: float | None = Field(None, gt=0, lt=6)
    pack_v_max_warn: float | None = Field(None, gt=0, lt=6)
    pack_v_max_alarm: float | None = Field(None, gt=0, lt=6)
    pack_v_max_fault: float | None = Field(None, gt=0, lt=6)
    pack_v_min_warn: float | None = Field(None, gt=0, lt=6)
    pack_v_min_alarm: float | None = Field(None, gt=0, lt=6)
    pack_v_min_fault: float | None = Field(None, gt=0, lt=6)
    temp_fault_margin_c: float = Field(10.0, ge=0, le=50)
    overcurrent_fault_factor: float = Field(2.0, gt=1, le=20)
    overcurrent_fault_time_s: float = Field(0.2, ge=0, le=60)
    imbalance_warn_v: float | None = Field(None, gt=0, lt=3)
    imbalance_alarm_v: float | None = Field(None, gt=0, lt=3)
    imbalance_fault_v: float | None = Field(None, gt=0, lt=3)
    sensor_fault_time_s: float = Field(10.0, ge=0, le=3600)
    soc_charge_derate_start: float = Field(0.90, ge=0, le=1)
    soc_discharge_derate_start: float = Field(0.10, ge=0, le=1)
    soc_derate_floor: float = Field(0.10, ge=0, le=1)
    float_voltage_cell_v: float | None = Field(None, gt=0, lt=6)
    absorption_time_max_s: float = Field(3600.0, ge=0, le=86400)
    rebulk_soc: float = Field(0.85, ge=0, le=1)
    rebulk_spread_v: float = Field(0.08, ge=0, le=3)
    tr_rate_warn_c_s: float = Field(0.3, gt=0, le=10)
    tr_rate_alarm_c_s: float = Field(0.6, gt=0, le=10)
    tr_rate_confirm_c_s: float = Field(1.0, gt=0, le=10)
    tr_confirm_s: float = Field(3.0, ge=0, le=60)
    tr_delta_warn_c: float = Field(15.0, gt=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> LimitsSection:
        v = [self.cell_v_min_alarm, self.cell_v_min_warn, self.cell_v_max_warn, self.cell_v_max_alarm]
        given = [x for x in v if x is not None]
        if given != sorted(given):
            raise ValueError(
                "cell voltage thresholds must satisfy cell_v_min_alarm < cell_v_min_warn "
                "< cell_v_max_warn < cell_v_max_alarm"
            )
        if self.charge_temp_min_c >= self.charge_temp_max_c:
            raise ValueError("charge_temp_min_c must be below charge_temp_max_c")
        if self.discharge_temp_min_c >= self.discharge_temp_max_c:
            raise ValueError("discharge_temp_min_c must be below discharge_temp_max_c")
        if self.overcurrent_fault_factor <= self.overcurrent_factor:
            raise ValueError(
                f"overcurrent_fault_factor = {self.overcurrent_fault_factor:g} must be above "
                f"overcurrent_factor = {self.overcurrent_factor:g}"
            )
        if self.soc_discharge_derate_start >= self.soc_charge_derate_start:
            raise ValueError("soc_discharge_derate_start must be below soc_charge_derate_start")
        if not self.tr_rate_warn_c_s < self.tr_rate_alarm_c_s < self.tr_rate_confirm_c_s:
            raise ValueError(
                "thermal rates must satisfy tr_rate_warn_c_s < tr_rate_alarm_c_s < tr_rate_confirm_c_s"
            )
        return self


class OutputConfig(_Section):
    """[[outputs]]: one inverter-side protocol and its transport."""

    protocol: str
    interface: str = "socketcan"
    channel: str = "can1"
    bitrate: int = Field(500_000, ge=10_000, le=1_000_000)
    log: Path | None = None
    manufacturer: str = Field("PYLON", max_length=8)
    port: str | None = Field(None, min_length=1)
    baudrate: int | None = Field(None, ge=1200, le=921_600)
    host: str = "127.0.0.1"
    tcp_port: int | None = Field(None, ge=0, le=65535)  # 0: any free port (tests)
    address: int = Field(2, ge=1, le=0xEF)  # Pylontech RS485 ADR of the first module (pack i: + i)
    unit_id: int = Field(1, ge=1, le=247)
    writes: bool = False
    allow: list[str] = Field(default_factory=list, max_length=64)
    control_timeout_s: float = Field(60.0, ge=1, le=3600)
    # pylontech-hv-can interop knobs (inverters differ): current field offset, u16 byte order, id suffix
    current_offset_a: float = Field(3000.0, ge=0, le=6553.5)
    byte_order: Literal["little", "big"] = "little"
    id_offset: int = Field(0, ge=0, le=15)
    # °C sent for an unknown temperature (no sensors) where the protocol has no "no value" marker;
    # default = bmsgw.inverter.scaling.UNKNOWN_TEMPERATURE_C (not imported: it would load every codec)
    unknown_temperature_c: float = Field(25.0, ge=-40, le=80, allow_inf_nan=False)
    # SOC 100 % while charging is forbidden, 0 % while discharging is: for inverters that obey only the SOC
    soc_follows_limits: bool = False

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        from bmsgw.outputs import OUTPUTS

        if v not in OUTPUTS:
            raise ValueError(f"unknown protocol {v!r}; allowed: {', '.join(OUTPUTS)}")
        return v

    @field_validator("allow")
    @classmethod
    def _ip_networks(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 192.168.1.10, 192.168.1.0/24, ::1)"
                ) from None
        return v

    @field_validator("manufacturer")
    @classmethod
    def _ascii(cls, v: str) -> str:
        if not v.isascii():
            raise ValueError("manufacturer must be ASCII (at most 8 characters)")
        return v

    @model_validator(mode="after")
    def _protocol_checks(self) -> OutputConfig:
        from bmsgw.outputs import OUTPUT_CHECKS

        check = OUTPUT_CHECKS.get(self.protocol)
        problem = check(self) if check is not None else None
        if problem is not None:
            raise ValueError(problem)
        return self


class WebSection(_Section):
    """[web]: dashboard, JSON API, Prometheus metrics and health check over HTTP."""

    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1, max_length=253)
    port: int = Field(8080, ge=0, le=65535)  # 0: any free port (tests)
    token: SecretStr | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if any(c.isspace() or c in "/[]" for c in v):
            raise ValueError("expected an IP address or host name, e.g. 127.0.0.1 or 0.0.0.0")
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        secret = v.get_secret_value()
        if not 16 <= len(secret) <= 256:
            raise ValueError(f"token must be 16..256 characters long, got {len(secret)}")
        if not all(33 <= ord(c) < 127 for c in secret):
            raise ValueError("token must be printable ASCII without spaces (it travels in an HTTP header)")
        return v


class MqttSection(_Section):
    """[mqtt]: publish the state to an MQTT broker, with Home Assistant discovery (docs/mqtt.md)."""

    enabled: bool = False
    host: str = Field("127.0.0.1", min_length=1, max_length=253)
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = Field(None, min_length=1, max_length=256)
    password: SecretStr | None = None
    client_id: str | None = Field(None, min_length=1, max_length=128)
    topic_prefix: str | None = Field(None, min_length=1, max_length=128)
    discovery: bool = True
    discovery_prefix: str = Field("homeassistant", min_length=1, max_length=128)
    publish_interval_s: float = Field(5.0, ge=0.1, le=3600)
    keepalive_s: int = Field(60, ge=5, le=3600)
    tls: bool = False
    tls_ca_file: Path | None = None

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is not None and (any(c in "+#\0" for c in v) or v.startswith("/") or v.endswith("/")):
            raise ValueError("expected an MQTT topic without wildcards (+ #) or a leading/trailing /")
        return v

    @field_validator("tls_ca_file")
    @classmethod
    def _ca_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError("no such file (a PEM file of the CA certificates to trust)")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> MqttSection:
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        return self


class HistorySection(_Section):
    """[history]: the SQLite history database under gateway.state_dir (docs/history.md)."""

    enabled: bool = False
    path: Path = Path("history.db")  # relative paths are under gateway.state_dir
    series_period_s: float = Field(60.0, ge=1, le=3600)
    cells_period_s: float = Field(300.0, ge=10, le=86400)
    health_period_s: float = Field(3600.0, ge=60, le=86400)
    flush_period_s: float = Field(10.0, ge=0.5, le=600)
    series_retention_days: float = Field(400.0, gt=0, le=36500)
    cells_retention_days: float = Field(90.0, gt=0, le=36500)
    events_retention_days: float = Field(3650.0, gt=0, le=36500)
    max_size_mb: float = Field(1024.0, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _periods(self) -> HistorySection:
        if self.cells_period_s < self.series_period_s:
            raise ValueError("cells_period_s must be >= series_period_s")
        return self


def _default_packs() -> list[PackConfig]:
    return [PackConfig(id="pack1")]


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="BMSGW_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    gateway: GatewaySection = GatewaySection()
    packs: list[PackConfig] = Field(default_factory=_default_packs, min_length=1, max_length=16)
    can: CanSection = CanSection()
    limits: LimitsSection = LimitsSection()
    multipack: MultipackSection = MultipackSection()
    balancing: BalancingSection = BalancingSection()
    outputs: list[OutputConfig] = Field(default_factory=list, max_length=8)
    web: WebSection = WebSection()
    mqtt: MqttSection = MqttSection()
    energy: EnergySection = EnergySection()
    schedule: list[ScheduleWindow] = Field(default_factory=list, max_length=32)
    history: HistorySection = HistorySection()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        ids = [p.id for p in self.packs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"packs: ids must be unique, got {ids}")
        addrs = [p.address for p in self.packs if p.source == "can"]
        if len(set(addrs)) != len(addrs):
            raise ValueError(f"packs: CAN packs need distinct address values, got {addrs}")
        chems = {p.chemistry for p in self.packs}
        if len(chems) > 1:
            raise ValueError("packs: all packs must share one chemistry (lfp or nmc)")
        from bmsgw.sources import check_packs

        problems = check_packs(self.packs)  # per-kind rules (serial port, bus address) from the registry
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _core_thresholds(self) -> Settings:
        """[limits] together with the chemistry's defaults must make a valid core (tiers nested, …)."""
        from bmsgw.pipeline import core_params

        try:
            core_params(self)
        except ValueError as exc:
            raise ValueError(f"limits: {exc}") from None
        return self

    @model_validator(mode="after")
    def _mqtt_ids(self) -> Settings:
        from bmsgw.telemetry.ha_discovery import slug

        slugs = [slug(p.id) for p in self.packs]
        if self.mqtt.enabled and len(set(slugs)) != len(slugs):
            raise ValueError(
                f"packs: with [mqtt] enabled, ids must stay distinct as MQTT/Home Assistant ids "
                f"(letters, digits, _ and -; others become _), got {slugs}"
            )
        return self

    @property
    def chemistry(self) -> Chemistry:
        """The system chemistry (shared by every pack)."""
        return self.packs[0].chemistry


def load_settings(
    path: Path | None = None,
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Settings, dict[str, Source]]:
    """Merge file < env < cli, validate, and return the settings with each leaf key's source."""
    layers: list[tuple[Source, dict[str, Any]]] = []
    if path is not None:
        layers.append((Source.FILE, _read_toml(path)))
    layers.append((Source.ENV, _read_env(env)))
    if cli:
        layers.append((Source.CLI, _nest(cli)))
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = _deep_merge(merged, layer)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, merged)) from None
    origin: dict[str, Source] = {}
    for key, _ in flatten(settings.model_dump(mode="json")):
        origin[key] = Source.DEFAULT
        for src, layer in layers:
            if _has_path(layer, key):
                origin[key] = src
    return settings, origin


def flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (dotted.key, value) for every leaf; list items as key[i]."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        for i, v in enumerate(obj):
            yield from flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None


def _read_env(env: Mapping[str, str] | None) -> dict[str, Any]:
    source = EnvSettingsSource(Settings, env_prefix="BMSGW_", env_nested_delimiter="__", case_sensitive=False)
    if env is not None:
        source.env_vars = {k.lower(): v for k, v in env.items()}
    try:
        return dict(source())
    except Exception as exc:  # pydantic-settings raises SettingsError on undecodable JSON
        raise ConfigError([f"environment: {exc}"]) from None


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _has_path(layer: Mapping[str, Any], dotted: str) -> bool:
    node: Any = layer
    for part in dotted.replace("[", ".[").split("."):
        if part.startswith("["):
            idx = int(part[1:-1])
            if not isinstance(node, list) or idx >= len(node):
                return False
            node = node[idx]
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return isinstance(node, list)  # a whole list (e.g. packs) given by this layer
    return True


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_for(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))[0] if getattr(ann, "__origin__", None) is list else ann
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
        else:
            return None
    return model


def _is_secret(loc: tuple[int | str, ...]) -> bool:
    """True for a SecretStr field: its value never goes into an error message."""
    parent = _model_for(loc[:-1])
    field = parent.model_fields.get(str(loc[-1])) if parent else None
    return field is not None and "SecretStr" in str(field.annotation)


def _explain(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = err["loc"]
        where = _loc(loc)
        if err["type"] == "extra_forbidden":
            parent = _model_for(loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else "see docs/configuration.md"
            problems.append(f"{where}: unknown key; allowed keys here: {allowed}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            problems.append(f"{where}: required key is missing")
        elif loc:
            shown = "<secret>" if _is_secret(loc) else repr(err["input"])
            problems.append(f"{where} = {shown}: {msg}")
        else:
            problems.append(f"{msg}")
    return problems
