"""sd_notify against real AF_UNIX datagram sockets: readiness, watchdog liveness, reload, stop, state.

In-process: the Daemon with python-can virtual buses and a fake pack on this event loop. Subprocess:
`bmsgw run` itself under SIGHUP/SIGTERM (its pack bus is a virtual bus inside that process, so no data).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import PackModel, run_fake_pack

from bmsgw import systemd
from bmsgw.config import Settings, load_settings
from bmsgw.daemon import Daemon
from bmsgw.ems import Command
from bmsgw.model import PackStatus
from bmsgw.state import FILE_NAME, StateStore
from bmsgw.transport.can_bus import AsyncCanBus

Message = dict[str, str]


def parse(data: bytes) -> Message:
    return dict(line.split("=", 1) for line in data.decode().split("\n") if line)


@pytest.fixture
def sock_path() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="sd", dir="/tmp")  # AF_UNIX paths are limited to 107 bytes
    yield f"{d}/notify"
    shutil.rmtree(d, ignore_errors=True)


def bind(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    return sock


# --- the protocol -----------------------------------------------------------------------------------


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    assert systemd.watchdog() is False


def test_fields_arrive_as_one_datagram(sock_path: str) -> None:
    with bind(sock_path) as sock:
        assert systemd.notify("READY=1", "STATUS=up", env={"NOTIFY_SOCKET": sock_path})
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_abstract_socket_and_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"bmsgw-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        before = time.monotonic_ns() // 1000
        assert systemd.reloading("re\nloading")
        msg = parse(sock.recv(4096))
        assert msg["RELOADING"] == "1"
        assert before <= int(msg["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000  # CLOCK_MONOTONIC µs
        assert msg["STATUS"] == "re loading"  # one line
        assert systemd.stopping()
        assert parse(sock.recv(4096)) == {"STOPPING": "1"}
        assert systemd.status("SOC 50%")
        assert parse(sock.recv(4096)) == {"STATUS": "SOC 50%"}


def test_unreachable_socket_never_raises(sock_path: str) -> None:
    assert systemd.notify("READY=1", env={"NOTIFY_SOCKET": sock_path}) is False  # nobody bound it
    assert systemd.notify("READY=1", env={"NOTIFY_SOCKET": "@\0bad"}) is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert systemd.watchdog_interval(env) == expected


# --- the daemon in-process --------------------------------------------------------------------------


class Notifications:
    """Every datagram the daemon sends, in order; `next` waits for the next one matching."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.messages: list[tuple[float, Message]] = []
        self._cursor = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            self.messages.append((time.monotonic(), parse(data)))

    async def next(self, pred: Callable[[Message], bool], within: float = 10.0) -> Message:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            while self._cursor < len(self.messages):
                msg = self.messages[self._cursor][1]
                self._cursor += 1
                if pred(msg):
                    return msg
            await asyncio.sleep(0.01)
        raise AssertionError(f"no matching notification within {within}s; got {self.messages[-5:]}")

    def pings_since(self, t: float) -> int:
        return sum(1 for at, m in self.messages if at >= t and "WATCHDOG" in m)


@dataclass
class Rig:
    daemon: Daemon
    pack: PackModel
    notes: Notifications
    config: Path
    text: str
    task: asyncio.Task[None]


def config_text(state_dir: Path, pack_ch: str, out_ch: str, extra: str = "") -> str:
    text = f"""
[gateway]
state_dir = "{state_dir}"
step_period_s = 0.02
state_save_period_s = 1
stale_after_s = 3
recovery_ramp_s = 1
{extra}
[[packs]]
id = "p1"
[can]
interface = "virtual"
channel = "{pack_ch}"
[[outputs]]
protocol = "pylontech-can"
interface = "virtual"
channel = "{out_ch}"
"""
    if "web" in Settings.model_fields:  # the web service is on by default; not under test here
        text += "[web]\nenabled = false\n"
    return text


@pytest.fixture
async def rig(tmp_path: Path, sock_path: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    pack_ch = f"pack-{uuid.uuid4()}"
    config = tmp_path / "bmsgw.toml"
    text = config_text(tmp_path / "state", pack_ch, f"inv-{uuid.uuid4()}")
    config.write_text(text)
    settings, _ = load_settings(config, env={})
    daemon = Daemon(settings, config, env={})
    pack = PackModel()
    with bind(sock_path) as sock:
        notes = Notifications(sock)
        async with AsyncCanBus("virtual", pack_ch) as bus:
            helpers = [asyncio.create_task(notes.run()), asyncio.create_task(run_fake_pack(bus, pack, 0.02))]
            task = asyncio.create_task(daemon.run())
            try:
                yield Rig(daemon, pack, notes, config, text, task)
            finally:
                for t in [task, *helpers]:
                    t.cancel()
                for t in [task, *helpers]:
                    with contextlib.suppress(asyncio.CancelledError):
                        await t


async def online(rig: Rig) -> None:
    deadline = time.monotonic() + 10
    while rig.daemon.gateway.state().packs[0].status is not PackStatus.ONLINE:
        assert time.monotonic() < deadline, "the fake pack never came online"
        await asyncio.sleep(0.02)


async def test_ready_first_then_pings_and_status(rig: Rig) -> None:
    first = await rig.notes.next(lambda m: True)
    assert first["READY"] == "1"
    assert "SOC" in first["STATUS"]
    for _ in range(3):
        await rig.notes.next(lambda m: m.get("WATCHDOG") == "1", within=2)
    status = await rig.notes.next(lambda m: "packs online 1/1" in m.get("STATUS", ""))
    text = status["STATUS"]
    assert "SOC n/a" not in text
    assert "CCL" in text
    assert "DCL" in text
    assert "CVL" in text
    assert "alarms 0" in text


async def test_no_ping_while_the_pipeline_does_not_step(rig: Rig) -> None:
    await rig.notes.next(lambda m: m.get("WATCHDOG") == "1")
    gateway = rig.daemon.gateway
    rig.pack.silent = True  # no samples either: nothing steps the pipeline
    gateway.tick = lambda: None  # type: ignore[method-assign]  # a hung ticker
    await asyncio.sleep(0.3)  # the ping in flight (if any) goes out
    steps, hung_at = gateway.pipeline.steps, time.monotonic()
    await asyncio.sleep(0.8)  # 8 ping intervals
    assert gateway.pipeline.steps == steps
    assert rig.notes.pings_since(hung_at) == 0
    del gateway.tick  # the ticker recovers
    await rig.notes.next(lambda m: m.get("WATCHDOG") == "1", within=2)


async def test_no_ping_once_an_output_task_died(rig: Rig) -> None:
    await rig.notes.next(lambda m: m.get("WATCHDOG") == "1")
    gateway = rig.daemon.gateway
    output_task = gateway.tasks[len(gateway.sources)]
    output_task.cancel()
    await asyncio.sleep(0.3)
    steps, dead_at = gateway.pipeline.steps, time.monotonic()
    await asyncio.sleep(0.8)
    assert gateway.pipeline.steps > steps  # the loop and the pipeline are fine...
    assert rig.notes.pings_since(dead_at) == 0  # ...but a dead output means no ping


async def test_stale_pack_data_is_no_reason_to_stop_pinging(rig: Rig) -> None:
    await online(rig)
    rig.pack.silent = True
    deadline = time.monotonic() + 10
    while rig.daemon.gateway.state().usable:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    lost_at = time.monotonic()
    await asyncio.sleep(0.5)
    assert rig.notes.pings_since(lost_at) >= 3
    await rig.notes.next(lambda m: "comm_lost" in m.get("STATUS", ""))


async def test_invalid_reload_keeps_the_running_configuration(rig: Rig) -> None:
    await rig.notes.next(lambda m: m.get("READY") == "1")
    gateway = rig.daemon.gateway
    rig.config.write_text(rig.text.replace("stale_after_s = 3", "stale_after_s = -1"))
    before = time.monotonic_ns() // 1000
    rig.daemon.reload()
    reloading = await rig.notes.next(lambda m: "RELOADING" in m)
    assert int(reloading["MONOTONIC_USEC"]) >= before
    ready = await rig.notes.next(lambda m: "READY" in m)
    assert "reload rejected (1 problem(s))" in ready["STATUS"]
    assert rig.daemon.gateway is gateway
    assert rig.daemon.settings.gateway.stale_after_s == 3
    assert not rig.task.done()
    await rig.notes.next(lambda m: "WATCHDOG" in m)


async def test_valid_reload_restarts_the_gateway_and_keeps_cell_soc(rig: Rig) -> None:
    await online(rig)
    old = rig.daemon.gateway
    rig.pack.silent = True  # no samples across the reload: the SOC seen after it can only be the kept one
    await asyncio.sleep(0.2)
    kept = old.state().packs[0].cell_soc
    assert kept is not None
    rig.config.write_text(rig.text.replace("[[packs]]", "[limits]\nmax_charge_current_a = 42\n[[packs]]"))
    rig.daemon.reload()
    await rig.notes.next(lambda m: "RELOADING" in m)
    ready = await rig.notes.next(lambda m: "READY" in m)
    assert "rejected" not in ready["STATUS"]
    new = rig.daemon.gateway
    assert new is not old
    assert not any(not t.done() for t in old.tasks)  # the old gateway stopped completely
    assert new.settings.limits.max_charge_current_a == 42
    view = new.state().packs[0]
    assert view.status is not PackStatus.ONLINE
    assert view.cell_soc is not None
    assert view.cell_soc.tolist() == pytest.approx(kept.tolist(), abs=1e-6)  # carried over
    rig.pack.silent = False
    await online(rig)
    await rig.notes.next(lambda m: "WATCHDOG" in m)


async def test_unchanged_reload_is_only_ready_again(rig: Rig) -> None:
    await rig.notes.next(lambda m: m.get("READY") == "1")
    gateway = rig.daemon.gateway
    rig.daemon.reload()
    await rig.notes.next(lambda m: "RELOADING" in m)
    await rig.notes.next(lambda m: "READY" in m)
    assert rig.daemon.gateway is gateway


async def test_state_is_saved_periodically_and_on_stop(rig: Rig) -> None:
    await online(rig)
    path = rig.daemon.store.path
    deadline = time.monotonic() + 5
    while not path.exists():  # state_save_period_s = 1
        assert time.monotonic() < deadline, "no periodic save"
        await asyncio.sleep(0.05)
    rig.daemon.stop()
    await asyncio.wait_for(rig.task, 10)
    stopping = await rig.notes.next(lambda m: "STOPPING" in m)
    assert stopping["STOPPING"] == "1"
    saved = StateStore(path.parent).load()
    assert saved is not None
    final = rig.daemon.gateway.state().packs[0]
    assert final.cell_soc is not None
    assert saved.packs[0].soc == pytest.approx(final.soc)
    assert saved.packs[0].cell_soc == pytest.approx(final.cell_soc.tolist())
    assert not any(not t.done() for t in rig.daemon.gateway.tasks)


async def test_an_ems_command_survives_a_restarting_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    config = tmp_path / "bmsgw.toml"
    text = config_text(tmp_path / "state", f"pack-{uuid.uuid4()}", f"inv-{uuid.uuid4()}")
    text = text.replace('protocol = "pylontech-can"', 'protocol = "pylontech-can"\nwrites = true')
    config.write_text(text)
    settings, _ = load_settings(config, env={})
    daemon = Daemon(settings, config, env={})
    task = asyncio.create_task(daemon.run())
    try:
        old = daemon.gateway
        assert old.pipeline.ems is not None
        old.pipeline.ems.write(Command(max_charge_a=5.0), old.clock.now(), 60.0)
        config.write_text(text.replace("stale_after_s = 3", "stale_after_s = 4"))
        daemon.reload()
        deadline = time.monotonic() + 10
        while daemon.gateway is old:
            assert time.monotonic() < deadline, "no restart"
            await asyncio.sleep(0.02)
        ems = daemon.gateway.pipeline.ems
        assert ems is not None
        now = daemon.gateway.clock.now()
        assert ems.command(now).max_charge_a == 5.0
        assert 50.0 < ems.remaining(now) <= 60.0  # its own deadline, not a fresh one
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)


async def test_a_failing_gateway_ends_the_daemon_and_still_saves(tmp_path: Path) -> None:
    config = tmp_path / "bmsgw.toml"
    config.write_text(config_text(tmp_path / "state", f"pack-{uuid.uuid4()}", f"inv-{uuid.uuid4()}"))
    settings, _ = load_settings(config, env={})
    daemon = Daemon(settings, config, env={})

    async def broken() -> None:
        await asyncio.sleep(0.1)
        raise OSError("adapter unplugged and the source gave up")

    daemon.gateway.sources[0].run = broken  # type: ignore[method-assign]
    with pytest.raises(ExceptionGroup) as err:
        await asyncio.wait_for(daemon.run(), 10)
    assert err.group_contains(OSError, match="adapter unplugged")
    assert (tmp_path / "state" / FILE_NAME).exists()
    assert not any(not t.done() for t in daemon.gateway.tasks)


# --- `bmsgw run` in a subprocess ----------------------------------------------------------------------


class Receiver:
    """Blocking receive with a deadline on a bound notify socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seen: list[Message] = []

    def next(self, pred: Callable[[Message], bool], within: float = 20.0) -> Message:
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                msg = parse(self.sock.recv(65536))
            except TimeoutError:
                break
            self.seen.append(msg)
            if pred(msg):
                return msg
        raise AssertionError(f"no matching notification within {within}s; got {self.seen[-5:]}")


def log_events(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def wait_for_log(path: Path, pred: Callable[[dict[str, Any]], bool], within: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for event in log_events(path):
            if pred(event):
                return event
        time.sleep(0.05)
    raise AssertionError(f"no such log line within {within}s:\n{path.read_text()[-3000:]}")


def test_bmsgw_run_under_sighup_and_sigterm(tmp_path: Path, sock_path: str) -> None:
    config = tmp_path / "bmsgw.toml"
    text = config_text(tmp_path / "state", f"pack-{uuid.uuid4()}", f"inv-{uuid.uuid4()}")
    config.write_text(text)
    log = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BMSGW_", "WATCHDOG_"))}
    env["NOTIFY_SOCKET"] = sock_path
    with bind(sock_path) as sock, log.open("w") as err:
        rx = Receiver(sock)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bmsgw", "run", "--config", str(config), "--log-format", "json"],
            env=env, stderr=err, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert rx.next(lambda m: "READY" in m)["READY"] == "1"

            config.write_text(text.replace("stale_after_s = 3", "stale_after_s = -1"))
            proc.send_signal(signal.SIGHUP)
            rx.next(lambda m: "RELOADING" in m)
            assert "reload rejected" in rx.next(lambda m: "READY" in m)["STATUS"]
            assert proc.poll() is None
            bad = wait_for_log(log, lambda e: "reload rejected" in e.get("event", ""))
            assert bad["problem"].startswith("gateway.stale_after_s = -1")

            config.write_text(text.replace("step_period_s = 0.02", "step_period_s = 0.05"))
            proc.send_signal(signal.SIGHUP)
            rx.next(lambda m: "RELOADING" in m)
            assert "rejected" not in rx.next(lambda m: "READY" in m)["STATUS"]
            done = wait_for_log(log, lambda e: e.get("event") == "configuration reloaded")
            assert done["changed"] == ["gateway.step_period_s"]
            assert done["restart_gateway"] is True

            config.write_text(
                text.replace("step_period_s = 0.02", "step_period_s = 0.05\nlog_level = 'debug'")
            )
            proc.send_signal(signal.SIGHUP)
            rx.next(lambda m: "READY" in m and "RELOADING" not in m)
            wait_for_log(
                log, lambda e: e.get("changed") == ["gateway.log_level"] and e["restart_gateway"] is False
            )

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert rx.next(lambda m: "STOPPING" in m, within=2)["STOPPING"] == "1"
    saved = StateStore(tmp_path / "state").load()
    assert saved is not None
    assert [p.id for p in saved.packs] == ["p1"]
    assert saved.packs[0].soc is None  # the pack never reported in that process
    assert json.loads((tmp_path / "state" / FILE_NAME).read_text())["version"] == 1


# --- the unit file --------------------------------------------------------------------------------------

UNIT = Path(__file__).parent.parent / "systemd" / "bmsgw.service"


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_is_notify_with_watchdog_reload_and_no_privileges() -> None:
    u = unit_settings()
    assert u["Type"] == ["notify"]
    assert u["NotifyAccess"] == ["main"]
    assert u["WatchdogSec"] == ["30"]
    assert u["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert u["DynamicUser"] == ["yes"]
    assert u["StateDirectory"] == ["bmsgw"]
    assert "BMSGW_GATEWAY__STATE_DIR=/var/lib/bmsgw" in u["Environment"]
    assert u["CapabilityBoundingSet"] == [""]
    assert u["SupplementaryGroups"] == ["dialout"]
    assert u["DevicePolicy"] == ["closed"]
    assert {f"char-tty{x} rw" for x in ("USB", "ACM", "AMA")} <= set(u["DeviceAllow"])
    assert "AF_CAN" in u["RestrictAddressFamilies"][0].split()
    assert "PrivateNetwork" not in u  # CAN interfaces live in the host's network namespace
    assert "PrivateDevices" not in u  # would hide /dev/ttyUSB*
    assert u["ProtectSystem"] == ["strict"]


def _systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[1])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_security_exposure_is_ok_or_better(tmp_path: Path) -> None:
    if _systemd_version() < 250:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    exe = shutil.which("bmsgw") or str(Path(sys.executable).with_name("bmsgw"))
    path = tmp_path / "bmsgw.service"
    path.write_text(UNIT.read_text().replace("/usr/local/bin/bmsgw", exe))
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=49", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for bmsgw\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert m, result.stdout + result.stderr
    assert m.group(2) in ("OK", "SAFE", "PERFECT"), m.group(0)  # MEDIUM starts at 5.0
    assert float(m.group(1)) < 5.0
    assert result.returncode == 0, result.stderr  # --threshold=49: exposure 4.9 at most


@pytest.mark.parametrize("doc", ["README.md", "docs/deployment.md"])
def test_networkd_snippets_use_a_bitrate_systemd_accepts(doc: str) -> None:
    text = (UNIT.parent.parent / doc).read_text()
    blocks = [b for b in re.findall(r"```ini\n(.*?)```", text, re.DOTALL) if "[CAN]" in b]
    assert blocks
    for block in blocks:
        (rate,) = re.findall(r"^BitRate=(\S+)$", block, re.MULTILINE)
        assert re.fullmatch(r"\d+[KM]?", rate), f"{doc}: BitRate={rate} (systemd wants 500K, not 500k)"
