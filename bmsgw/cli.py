"""Command line: run, simulate, replay, estimate, history export, report, config check/show, --version."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bmsgw import __version__
from bmsgw.config import ConfigError, Settings, Source, flatten, load_settings
from bmsgw.model import Chemistry, GatewayState

__all__ = ["main"]

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bmsgw` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        print(version_text())
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print("bmsgw: invalid configuration:", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


def version_text() -> str:
    """`bmsgw X.Y.Z (core: compiled|pure)`."""
    from bmsgw.core import IS_COMPILED

    return f"bmsgw {__version__} (core: {'compiled' if IS_COMPILED else 'pure'})"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bmsgw", description="Battery BMS to inverter gateway.")
    p.add_argument(
        "--version", action="store_true", help="print the version and whether the core is compiled"
    )
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, config_help: str = "TOML configuration file") -> None:
        sp.add_argument("--config", type=Path, help=config_help)
        sp.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE",
            help="override a configuration key, e.g. --set gateway.stale_after_s=3 (repeatable)",
        )  # fmt: skip
        sp.add_argument("--log-format", choices=("auto", "json", "console"), help="log output format")
        sp.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="log level")

    run = sub.add_parser("run", help="run the gateway service (SIGHUP reloads the configuration)")
    common(run)
    run.add_argument("--stale-after", type=float, metavar="S", help="gateway.stale_after_s")
    run.set_defaults(func=_cmd_run)

    sim = sub.add_parser("simulate", help="run the whole gateway against simulated packs")
    common(sim, "TOML configuration (packs, limits, outputs); default: built-in simulated system")
    sim.add_argument("--packs", type=int, metavar="N", help="number of simulated packs (default 1)")
    sim.add_argument("--cells", type=int, metavar="N", help="cells per pack (default 16)")
    sim.add_argument("--chemistry", choices=[c.value for c in Chemistry], help="cell chemistry (default lfp)")
    sim.add_argument(
        "--duration", type=float, metavar="SECONDS", help="simulated seconds (default: until Ctrl-C)"
    )
    sim.add_argument(
        "--speed", type=float, default=1.0, metavar="FACTOR", help="time acceleration (default 1)"
    )
    sim.add_argument("--scenario", type=Path, metavar="FILE", help="fault-injection scenario (TOML)")
    sim.add_argument(
        "--record", type=Path, metavar="PACKLOG", help="write the pack-side frames (candump log)"
    )
    sim.add_argument(
        "--initial-soc", type=float, metavar="S", help="initial SOC of the simulated cells (0..1)"
    )
    sim.add_argument("--seed", type=int, default=1, help="random seed of the simulated packs")
    sim.add_argument(
        "--start-hour",
        type=float,
        default=11.0,
        metavar="H",
        help="time of day at the start of the solar-day load profile (default 11)",
    )
    sim.add_argument("--quiet", action="store_true", help="no live status, only the summary")
    sim.set_defaults(func=_cmd_simulate)

    rep = sub.add_parser("replay", help="dry-run a recorded pack-bus log (candump .log, .asc, .blf)")
    rep.add_argument("log", type=Path, metavar="LOG")
    common(rep)
    rep.add_argument("--out", type=Path, metavar="INVLOG", help="write inverter-side frames (candump log)")
    rep.add_argument("--realtime", action="store_true", help="pace the replay with the log's timing")
    rep.add_argument(
        "--to-bus",
        metavar="INTERFACE:CHANNEL",
        help="instead, play the frames onto a CAN bus (e.g. socketcan:vcan0)",
    )
    rep.add_argument("--json", action="store_true", help="print the summary as JSON")
    rep.set_defaults(func=_cmd_replay)

    from bmsgw.sources import SERIAL_KINDS

    prb = sub.add_parser("probe", help="read a serial BMS once and print what it reports (exit 2: no answer)")
    prb.add_argument("--source", required=True, choices=list(SERIAL_KINDS), help="BMS kind")
    prb.add_argument("--port", required=True, metavar="PATH", help="serial device or socket://host:port")
    prb.add_argument("--address", type=_address, default=0, metavar="N", help="bus address (e.g. 0x41)")
    prb.add_argument("--baudrate", type=int, metavar="B", help="default: the kind's own")
    prb.add_argument("--json", action="store_true", help="print JSON")
    prb.add_argument("--verbose", action="store_true", help="also print the raw frames in hex")
    prb.set_defaults(func=_cmd_probe)

    hc = sub.add_parser("healthcheck", help="GET /healthz of the running gateway (exit 0 healthy, 1 not)")
    hc.add_argument("--config", type=Path, help="TOML configuration ([web] host and port)")
    hc.add_argument("--url", help="base URL of the web server instead, e.g. http://127.0.0.1:8080")
    hc.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait (default 5)")
    hc.set_defaults(func=_cmd_healthcheck)

    est = sub.add_parser(
        "estimate", help="estimate the SOC of a logged cell offline (CSV t_s,current_a,voltage_v[,…])"
    )
    est.add_argument("input", type=Path, metavar="INPUT.csv")
    est.add_argument("--chemistry", required=True, choices=[c.value for c in Chemistry])
    est.add_argument("--capacity-ah", required=True, type=float, metavar="C", help="rated cell capacity")
    est.add_argument("--ocv", type=Path, metavar="OCV.csv", help="measured OCV table (CSV soc,ocv_v)")
    est.add_argument("--initial-soc", type=float, metavar="S", help="initial SOC 0..1 (default: from OCV)")
    est.add_argument(
        "--current-sign", choices=("charge-positive", "discharge-positive"), default="charge-positive",
        help="sign convention of current_a in INPUT (default charge-positive)",
    )  # fmt: skip
    est.add_argument("-o", "--output", type=Path, metavar="OUT.csv", help="write here (default: stdout)")
    est.set_defaults(func=_cmd_estimate)

    hist = sub.add_parser("history", help="read the history database ([history] in the configuration)")
    hsub = hist.add_subparsers(title="history commands", metavar="ACTION")
    exp = hsub.add_parser("export", help="export rows between two times as CSV or JSON (docs/history.md)")
    common(exp)
    exp.add_argument("--db", type=Path, metavar="FILE", help="the database (default: from the configuration)")
    exp.add_argument(
        "--from", dest="start", metavar="TIME", help="ISO-8601, -24h, now or epoch seconds (default: oldest)"
    )
    exp.add_argument("--to", dest="end", metavar="TIME", help="same forms as --from (default: newest)")
    exp.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default csv)")
    exp.add_argument(
        "--table", choices=(*_history_tables(), "all"), default="system_series",
        help="table to export (default system_series; all: every table, JSON only)",
    )  # fmt: skip
    exp.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here (default: stdout)")
    exp.set_defaults(func=_cmd_history_export)
    hist.set_defaults(func=lambda _: _usage(hist))

    rpt = sub.add_parser("report", help="maintenance or battery-passport report (docs/reports.md)")
    rsub = rpt.add_subparsers(title="reports", metavar="REPORT")
    for name, help_ in (
        ("maintenance", "weak cells, imbalance growth, remaining useful life, recommended actions"),
        ("passport", "EU battery-passport-style record (JSON with --json)"),
    ):
        r = rsub.add_parser(name, help=help_)
        common(r)
        r.add_argument("--db", type=Path, metavar="FILE", help="the database (default: from configuration)")
        r.add_argument("--json", action="store_true", help="print JSON instead of text")
        r.set_defaults(func=_cmd_report, report=name)
    rpt.set_defaults(func=lambda _: _usage(rpt))

    cfg = sub.add_parser("config", help="check or show configuration")
    csub = cfg.add_subparsers(title="config commands", metavar="ACTION")
    chk = csub.add_parser("check", help="validate a configuration file (exit 2 on errors)")
    chk.add_argument("file", type=Path, metavar="FILE")
    chk.set_defaults(func=_cmd_config_check)
    show = csub.add_parser("show", help="print the effective configuration and where each value came from")
    common(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_cmd_config_show)
    cfg.set_defaults(func=lambda _: _usage(cfg))
    return p


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError([f"--set {item!r}: expected KEY=VALUE, e.g. gateway.stale_after_s=3"])
        out[key.strip()] = _scalar(value.strip())
    if args.log_format:
        out["gateway.log_format"] = args.log_format
    if args.log_level:
        out["gateway.log_level"] = args.log_level
    return out


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _setup_logging(settings: Settings) -> None:
    from bmsgw.log import configure

    configure(settings.gateway.log_format, settings.gateway.log_level)


def _cmd_run(args: argparse.Namespace) -> int:
    cli = _overrides(args)
    if args.stale_after is not None:
        cli["gateway.stale_after_s"] = args.stale_after
    settings, origin = load_settings(args.config, cli)
    _setup_logging(settings)
    _warn_token_readable(args.config, origin)
    from bmsgw import daemon

    return daemon.run(settings, args.config, cli)  # SIGHUP reloads, SIGTERM stops (docs/deployment.md)


async def _until_signal(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _cmd_simulate(args: argparse.Namespace) -> int:
    from bmsgw.sources.simulator import SimulationError, simulation_settings

    if args.speed <= 0:
        raise ConfigError([f"--speed = {args.speed}: must be > 0"])
    if args.duration is not None and args.duration <= 0:
        raise ConfigError([f"--duration = {args.duration}: must be > 0"])
    if not 0 <= args.start_hour < 24:
        raise ConfigError([f"--start-hour = {args.start_hour}: must be within 0..24"])
    if args.initial_soc is not None and not 0 <= args.initial_soc <= 1:
        raise ConfigError([f"--initial-soc = {args.initial_soc}: must be within 0..1"])
    base, origin = load_settings(args.config, _overrides(args))
    settings = simulation_settings(
        base, packs=args.packs, cells=args.cells, chemistry=args.chemistry, from_file=args.config is not None
    )
    _setup_logging(settings)
    _warn_token_readable(args.config, origin)
    try:
        summary = asyncio.run(_simulate(settings, args))
    except SimulationError as exc:
        print(f"bmsgw: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(summary)
    return 0


async def _simulate(settings: Settings, args: argparse.Namespace) -> str:
    from bmsgw.app import Gateway
    from bmsgw.clock import SteppedClock
    from bmsgw.replay import ReplaySummary, Tracker
    from bmsgw.sources.can import CanPackSource
    from bmsgw.sources.simulator import SimulatedPacks

    # Wall-clock time (schedules, load profile) starts today at --start-hour, like the solar profile.
    clock = SteppedClock(args.speed, epoch=_today_at(args.start_hour, settings.energy.timezone))
    gateway = Gateway(settings, clock, frame_timestamps=True)
    consumed = next((s for s in gateway.sources if isinstance(s, CanPackSource)), None)
    sim = SimulatedPacks(
        settings, clock, gateway.state, lambda: consumed.last_frame_t if consumed else clock.now(),
        scenario=args.scenario, record=args.record,
        initial_soc=args.initial_soc, seed=args.seed, start_hour=args.start_hour,
    )  # fmt: skip
    # keep: a simulation may run for days (at full charge limits change reason every few seconds)
    summary = ReplaySummary(pack_ids=tuple(p.id for p in settings.packs), keep=SIMULATE_KEEP_EVENTS)
    tracker = Tracker(summary)
    gateway.on_state(tracker.see)
    status = _StatusPrinter(settings, quiet=args.quiet)
    gateway.on_state(status.see)
    await _until_signal(gateway.run(sim.run, duration=args.duration))
    status.finish()
    summary.t_start = 0.0
    summary.t_end = clock.now()
    decoder = consumed.decoder if consumed else None
    if decoder is not None:
        summary.frames_read = decoder.frames
        summary.frames_decoded = decoder.decoded
        summary.frames_rejected = decoder.rejected
        summary.frames_ignored = decoder.ignored
    summary.samples = gateway.pipeline.samples
    summary.frames_out = sum(o.sent for o in gateway.outputs)
    return "simulation summary\n" + sim.describe() + "\n" + summary.render()


SIMULATE_KEEP_EVENTS = 1000  # limit changes and alarm events `simulate` keeps for its summary


def _today_at(hour: float, zone: str) -> float:
    """Epoch seconds of today's local midnight in `zone` ("local": the system's) plus `hour` hours."""
    from datetime import datetime

    from bmsgw.energy_config import time_zone

    now = datetime.now(time_zone(zone)).astimezone(time_zone(zone))
    return now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() + hour * 3600.0


class _StatusPrinter:
    """Compact live status: one line per wall second on a TTY, every 10 s otherwise."""

    def __init__(self, settings: Settings, *, quiet: bool) -> None:
        import time

        self._time = time.monotonic
        self._tty = sys.stdout.isatty()
        self._every = 1.0 if self._tty else 10.0
        self._next = 0.0
        self._quiet = quiet
        self._ids = [p.id for p in settings.packs]

    def see(self, state: GatewayState) -> None:
        now = self._time()
        if self._quiet or now < self._next:
            return
        self._next = now + self._every
        line = format_status(state, self._ids)
        if self._tty:
            sys.stdout.write("\r\033[K" + line)
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def finish(self) -> None:
        if self._tty and not self._quiet:
            sys.stdout.write("\n")


def format_status(state: GatewayState, ids: Sequence[str]) -> str:
    """One status line: time, SOC, V, I, cell extremes with location, limits with reasons, alarms."""
    lim = state.limits
    h, rem = divmod(int(state.t), 3600)
    m, s = divmod(rem, 60)
    if state.usable:
        cells = (
            f"cell {state.cell_v_min:.3f}V@{ids[state.cell_v_min_at.pack]}#{state.cell_v_min_at.cell + 1}"
            f"..{state.cell_v_max:.3f}V@{ids[state.cell_v_max_at.pack]}#{state.cell_v_max_at.cell + 1}"
            f" T {state.cell_t_min:.1f}..{state.cell_t_max:.1f}°C"
        )
        soc = f"SOC {state.soc * 100:5.1f}%" if not math.isnan(state.soc) else "SOC  n/a"
    else:
        cells, soc = "no pack data", "SOC  n/a"
    alarms = ",".join(f"{a.code}:{a.level.name[0]}" for a in state.alarms) or "none"
    return (
        f"{h:02d}:{m:02d}:{s:02d} {soc} {state.voltage:6.2f}V {state.current:+7.1f}A {cells} | "
        f"CVL {lim.cvl.value:.1f}V CCL {lim.ccl.value:.0f}A({lim.ccl.reason}) "
        f"DCL {lim.dcl.value:.0f}A({lim.dcl.reason}) | alarms {alarms}"
    )


def _cmd_replay(args: argparse.Namespace) -> int:
    from bmsgw.replay import ReplayError, play_to_bus, replay

    settings, _ = load_settings(args.config, _overrides(args))
    _setup_logging(settings)
    try:
        if args.to_bus:
            interface, sep, channel = args.to_bus.partition(":")
            if not sep or not interface or not channel:
                raise ConfigError(
                    [f"--to-bus {args.to_bus!r}: expected INTERFACE:CHANNEL, e.g. socketcan:vcan0"]
                )
            sent = play_to_bus(args.log, interface, channel)
            print(f"sent {sent} frames to {interface}:{channel}")
            return 0
        summary = replay(args.log, settings, args.out, realtime=args.realtime)
    except ReplayError as exc:
        print(f"bmsgw: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(summary.render())
    return 0


def _address(text: str) -> int:
    return int(text, 0)


def _cmd_probe(args: argparse.Namespace) -> int:
    from bmsgw.sources.serial_bms import ProbeError, format_probe, probe

    try:
        result = asyncio.run(probe(args.source, args.port, address=args.address, baudrate=args.baudrate))
    except ProbeError as exc:
        print(f"bmsgw: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result.as_dict(args.verbose)) if args.json else format_probe(result, args.verbose))
    return 0


def _warn_token_readable(config: Path | None, origin: dict[str, Source]) -> None:
    if origin.get("web.token") is Source.FILE:
        from bmsgw.telemetry.web import warn_if_secrets_readable

        warn_if_secrets_readable(config, origin)


def _cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when /healthz says healthy, 1 otherwise (never 2: Docker reserves it)."""
    from bmsgw.telemetry.health import base_url, probe

    if args.url:
        url = args.url.rstrip("/")
    else:
        try:
            settings, _ = load_settings(args.config)
        except ConfigError as exc:
            print(f"unhealthy: invalid configuration: {'; '.join(exc.problems)}")
            return 1
        if not settings.web.enabled:
            print("unhealthy: the web server is disabled ([web] enabled = false)")
            return 1
        url = base_url(settings.web)
    ok, reason = probe(url if url.endswith("/healthz") else url + "/healthz", args.timeout)
    print(reason)
    return 0 if ok else 1


def _cmd_estimate(args: argparse.Namespace) -> int:
    from bmsgw.estimate import run_cli

    return run_cli(args)


def _history_tables() -> tuple[str, ...]:
    from bmsgw.telemetry.history_db import TABLES

    return tuple(TABLES)


def _history_db(args: argparse.Namespace) -> tuple[Settings, Path]:
    from bmsgw.telemetry.history_service import db_path

    settings, _ = load_settings(args.config, _overrides(args))
    return settings, args.db if args.db is not None else db_path(settings)


def _cmd_history_export(args: argparse.Namespace) -> int:
    from bmsgw.history_export import run_cli

    _, db = _history_db(args)
    return run_cli(db, args.start, args.end, args.format, args.table, args.output)


def _cmd_report(args: argparse.Namespace) -> int:
    from bmsgw.reports import run_cli

    settings, db = _history_db(args)
    return run_cli(args.report, settings, db, as_json=args.json)


def _cmd_config_check(args: argparse.Namespace) -> int:
    load_settings(args.file, env={})
    print(f"{args.file}: ok")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from bmsgw.pipeline import core_params

    settings, origin = load_settings(args.config, _overrides(args))
    effective = dict(flatten(settings.model_dump(mode="json")))
    params = core_params(settings)
    chem_default = {k for k, v in effective.items() if k.startswith("limits.") and v is None}
    for key in chem_default:
        name = key.removeprefix("limits.")
        value = getattr(params, name)
        # per-pack settings (NaN in CoreParams) resolve to one value per pack
        effective[key] = list(params.per_pack(name)) if math.isnan(value) else value
    if args.json:
        doc = {k: {"value": v, "source": origin.get(k, Source.DEFAULT).value} for k, v in effective.items()}
        print(json.dumps(doc, indent=2))
        return 0
    width = max(len(k) for k in effective)
    for key, value in effective.items():
        src = origin.get(key, Source.DEFAULT).value
        note = f"{settings.chemistry} default" if key in chem_default else src
        print(f"{key:<{width}} = {json.dumps(value)}  # {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
