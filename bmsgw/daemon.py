"""`bmsgw run` as a service: sd_notify and watchdog, SIGHUP reload, clean SIGTERM stop, estimator state.

Reload re-reads the same sources (file, environment, CLI overrides) and validates them; an invalid result
is logged line by line and the running configuration stays. Log level/format apply in place. Any other
change restarts the Gateway object in-process: tasks are cancelled (buses closed), a new Gateway is built
from the new settings with every cell's SOC carried over (when packs and cells still match) and started;
protection latches and limit ramps start afresh, exactly as after a process start.
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bmsgw import systemd
from bmsgw.app import Gateway
from bmsgw.clock import Clock, MonotonicClock
from bmsgw.config import ConfigError, Settings, flatten, load_settings
from bmsgw.energy_management import EnergyFileError, EnergySaved, EnergyStore
from bmsgw.log import configure, get_logger
from bmsgw.model import Alarm, AlarmCode, AlarmLevel, GatewayState
from bmsgw.pipeline import Pipeline
from bmsgw.state import (
    EstimatorState,
    SocTracker,
    StateFileError,
    StateStore,
    capture,
    restore,
    restore_health,
    restore_latched,
)

__all__ = ["LOG_KEYS", "Daemon", "Liveness", "changed_keys", "run", "status_line"]

_log = get_logger(__name__)
STATE_ALARM = "state"
"""Key of the STATE_RESET alarm in `Pipeline.service_alarms`."""

LOG_KEYS = frozenset({"gateway.log_level", "gateway.log_format"})
"""Keys a reload applies without restarting the gateway."""


def run(settings: Settings, config: Path | None, overrides: Mapping[str, Any]) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or a gateway failure (exit 1); SIGHUP reloads."""
    daemon = Daemon(settings, config, overrides)
    try:
        asyncio.run(daemon.run(signals=True))
    except Exception:
        _log.exception("gateway failed")
        return 1
    return 0


class Daemon:
    """One gateway at a time under reload/stop commands, with sd_notify and periodic state saves."""

    def __init__(
        self,
        settings: Settings,
        config: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Raises ConfigError when gateway.state_dir is not writable."""
        self.settings = settings
        self._config = config
        self._overrides = dict(overrides or {})
        self._env = env
        self.clock: Clock = clock or MonotonicClock()
        self.store = StateStore(settings.gateway.state_dir)
        self.store.prepare()
        self.note = ""  # appended to STATUS, e.g. after a rejected reload
        self._commands: asyncio.Queue[str] = asyncio.Queue()
        self._seq = 0
        self._state_error = ""  # why the saved estimator state was not usable (STATE_RESET alarm), if so
        self._energy = self._load_energy()  # energy management handed to the next gateway built
        self.gateway, self._tracker = self._build(settings, self._load())

    def reload(self) -> None:
        """Ask for a configuration reload (what SIGHUP does)."""
        self._commands.put_nowait("reload")

    def stop(self) -> None:
        """Ask for a clean stop (what SIGTERM/SIGINT do)."""
        self._commands.put_nowait("stop")

    async def run(self, *, signals: bool = False) -> None:
        """Serve until stop() (or cancellation); the estimator state is saved on the way out."""
        loop = asyncio.get_running_loop()
        handlers = {signal.SIGHUP: self.reload, signal.SIGTERM: self.stop, signal.SIGINT: self.stop}
        if signals:
            for sig, fn in handlers.items():
                loop.add_signal_handler(sig, fn)
        interval = systemd.watchdog_interval()
        if interval is not None and interval <= self.settings.gateway.step_period_s:
            _log.warning(
                "WatchdogSec is too short for gateway.step_period_s: pings need a step per interval",
                ping_interval_s=interval, step_period_s=self.settings.gateway.step_period_s,
            )  # fmt: skip
        liveness = Liveness()
        helpers = [
            asyncio.create_task(
                systemd.watchdog_loop(
                    lambda: liveness.check(self.gateway), self.status_line, interval=interval
                )
            ),
            asyncio.create_task(self._autosave()),
        ]
        try:
            await self._serve()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.wait(helpers)  # an autosave under way finishes first: the final save is newer
            if self.save():
                _log.info("estimator state saved", path=str(self.store.path))
            if signals:
                for sig in handlers:
                    loop.remove_signal_handler(sig)

    def status_line(self) -> str:
        """STATUS text: SOC, limits, packs online, alarms, and the note if any."""
        line = status_line(self.gateway.state(), soc_known=any(self._tracker.known))
        return f"{line} | {self.note}" if self.note else line

    def capture(self) -> EstimatorState:
        """The current estimator state."""
        return capture(
            self.settings,
            self.gateway.state(),
            self._tracker.known,
            self.clock.stamp(),
            self.gateway.pipeline.core.export_health(),
            self.gateway.pipeline.core.latched(),
        )

    def save(self) -> bool:
        """Save the estimator and energy state now (blocking); False when the estimator state was not
        written (an error is logged)."""
        self._seq += 1
        return self._write(self.capture(), self._capture_energy(), self._seq)

    async def _serve(self) -> None:
        task = self._start()
        try:
            while await self._next(task) != "stop":
                new = self._reload_settings()
                if new is not None:
                    await _stop(task)
                    self._restart(new)
                    task = self._start()
            systemd.stopping("stopping")
            _log.info("stopping")
        finally:
            await _stop(task)

    def _start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.gateway.run(self._announce_ready))

    async def _announce_ready(self) -> None:
        await asyncio.sleep(0)  # every source, output and service task has taken its first step
        systemd.ready(self.status_line())
        _log.info("gateway running", packs=len(self.settings.packs), outputs=len(self.settings.outputs))

    async def _next(self, gateway: asyncio.Task[None]) -> str:
        """The next command; raises if the gateway task ends on its own (a failure)."""
        get = asyncio.ensure_future(self._commands.get())
        try:
            await asyncio.wait({get, gateway}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            get.cancel()
        if gateway.done():
            gateway.result()  # re-raises the gateway's error
            raise RuntimeError("the gateway stopped on its own")
        return get.result()

    def _reload_settings(self) -> Settings | None:
        """Validate and apply what needs no restart; the new settings if the gateway must restart."""
        systemd.reloading("reloading configuration")
        _log.info("reloading configuration", config=str(self._config) if self._config else None)
        try:
            new, _ = load_settings(self._config, self._overrides, self._env)
            changed = changed_keys(self.settings, new)
            if "gateway.state_dir" in changed:
                StateStore(new.gateway.state_dir).prepare()
        except ConfigError as exc:
            for problem in exc.problems:
                _log.error("reload rejected, keeping the running configuration", problem=problem)
            self.note = f"last reload rejected ({len(exc.problems)} problem(s)), previous configuration kept"
            systemd.ready(self.status_line())
            return None
        self.note = ""
        if not changed:
            _log.info("configuration unchanged")
            systemd.ready(self.status_line())
            return None
        if LOG_KEYS & set(changed):
            configure(new.gateway.log_format, new.gateway.log_level)
        restart = [k for k in changed if k not in LOG_KEYS]
        _log.info("configuration reloaded", changed=changed, restart_gateway=bool(restart))
        if restart:
            return new
        self.settings = new
        systemd.ready(self.status_line())
        return None

    def _restart(self, new: Settings) -> None:
        saved = self.capture()
        self._energy = self._capture_energy()
        old, previous = self.settings, self.gateway
        try:
            self.gateway, self._tracker = self._build(new, saved)
        except Exception:
            _log.exception("cannot build the gateway from the new configuration; keeping the previous one")
            self.note = "last reload failed: running the previous configuration"
            self.gateway, self._tracker = self._build(old, saved)
            return
        finally:
            _carry_ems(previous, self.gateway)
        self.settings = new
        if new.gateway.state_dir != old.gateway.state_dir:
            self.store = StateStore(new.gateway.state_dir)

    def _load(self) -> EstimatorState | None:
        try:
            saved = self.store.load()
        except StateFileError as exc:
            _log.warning("ignoring the saved estimator state; starting from OCV", reason=str(exc))
            self._state_error = f"saved estimator state unreadable, SOC restarted from OCV: {exc}"
            return None
        if saved is None:
            _log.info("no saved estimator state; starting from OCV", path=str(self.store.path))
        return saved

    def _build(self, settings: Settings, saved: EstimatorState | None) -> tuple[Gateway, SocTracker]:
        soc: list[float] | None = None
        cells: list[list[float]] | None = None
        if saved is not None and all(p.soc is None for p in saved.packs):
            _log.info("no pack's SOC known yet; starting from OCV")
        elif saved is not None:
            try:
                soc, cells = restore(settings, saved)
            except ValueError as exc:
                soc = cells = None
                _log.warning("saved estimator state does not fit; starting from OCV", reason=str(exc))
            else:
                _log.info("estimator state restored", soc=[round(x, 4) for x in soc])
        gateway = Gateway(
            settings, self.clock, initial_soc=soc, initial_cell_soc=cells, energy_state=self._energy
        )
        for note in gateway.pipeline.management.notes:
            _log.warning("saved energy state only partly used", reason=note)
        if saved is not None:
            try:
                gateway.pipeline.core.restore_health(restore_health(settings, saved, self.clock.stamp()))
            except ValueError as exc:
                _log.warning("saved health state does not fit; health starts as new", reason=str(exc))
            faults = restore_latched(settings, saved, self.clock.stamp())
            if faults:
                gateway.pipeline.core.restore_latched(faults)
                _log.warning("latched protection faults restored; they need a reset", faults=len(faults))
        if self._state_error:
            gateway.pipeline.service_alarms[STATE_ALARM] = Alarm(
                AlarmCode.STATE_RESET, AlarmLevel.WARNING, self.clock.stamp(), None, self._state_error
            )
        tracker = SocTracker(len(settings.packs), restored=soc is not None)
        gateway.on_state(tracker.see)
        return gateway, tracker

    async def _autosave(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway.state_save_period_s)
            self._seq += 1
            write = asyncio.ensure_future(
                asyncio.to_thread(self._write, self.capture(), self._capture_energy(), self._seq)
            )
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                await write  # never let an older save land after the final one
                raise

    def _write(self, state: EstimatorState, energy: EnergySaved, seq: int) -> bool:
        """Write both states unless a newer `seq` was written (thread-safe); False when the estimator state
        was not written. Errors are logged, never raised."""
        try:
            if not self.store.save(state, seq):
                return False
        except OSError as exc:
            _log.error("cannot save the estimator state", path=str(self.store.path), error=str(exc))
            return False
        self._write_energy(energy)
        return True

    def _capture_energy(self) -> EnergySaved:
        """The energy-management state of the running gateway (load profile, full-charge timer)."""
        return self.gateway.pipeline.management.capture(self.clock.wall(self.clock.now()))

    def _write_energy(self, saved: EnergySaved) -> None:
        """Save `saved` to <state_dir>/energy.json; an error is logged, never raised."""
        store = EnergyStore(self.settings.gateway.state_dir)
        try:
            store.save(saved)
        except OSError as exc:
            _log.error("cannot save the energy state", path=str(store.path), error=str(exc))

    def _load_energy(self) -> EnergySaved | None:
        try:
            return EnergyStore(self.settings.gateway.state_dir).load()
        except EnergyFileError as exc:
            _log.warning("ignoring the saved energy state; the load profile starts afresh", reason=str(exc))
            return None


class Liveness:
    """Watchdog health: the pipeline stepped since the previous check and no source/output/ticker ended."""

    def __init__(self) -> None:
        self._pipeline: Pipeline | None = None
        self._steps = -1

    def check(self, gateway: Gateway) -> bool:
        """True when the gateway proved it is alive since the previous call."""
        pipe = gateway.pipeline
        stepped = pipe is not self._pipeline or pipe.steps != self._steps
        self._pipeline, self._steps = pipe, pipe.steps
        return stepped and bool(gateway.tasks) and not any(t.done() for t in gateway.tasks)


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """Dotted keys whose effective value differs (a changed list of packs/outputs counts as its items)."""
    a = dict(flatten(old.model_dump()))
    b = dict(flatten(new.model_dump()))
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


def status_line(state: GatewayState, *, soc_known: bool = True) -> str:
    """SOC, limits with reasons, packs online, alarm count — one line for `systemctl status`."""
    lim = state.limits
    soc = f"{state.soc * 100:.1f}%" if soc_known and math.isfinite(state.soc) else "n/a"
    return (
        f"SOC {soc} | CVL {lim.cvl.value:.1f}V CCL {lim.ccl.value:.0f}A ({lim.ccl.reason}) "
        f"DCL {lim.dcl.value:.0f}A ({lim.dcl.reason}) | packs online {state.modules_online}/"
        f"{len(state.packs)} | alarms {len(state.alarms)}"
    )


def _carry_ems(old: Gateway, new: Gateway) -> None:
    """An EMS command in force keeps holding (until its own deadline) across a gateway restart."""
    src, dst = old.pipeline.ems, new.pipeline.ems
    t = old.clock.now()
    if src is not None and dst is not None and (left := src.remaining(t)) > 0:
        dst.write(src.command(t), t, left)


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel the gateway task and wait for it; an error raised while it stopped is logged.

    (An error it ended with on its own has already been raised by `Daemon._next`.)
    """
    if task.done():
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and (exc := task.exception()) is not None:
        _log.error("gateway failed while stopping", exc_info=exc)
