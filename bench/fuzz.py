"""Long fuzz run over every decoder and server: zero crashes, zero hangs, no limit from a rejected frame.

    python bench/fuzz.py [--count N] [--network N] [--seed S] [--json]

Each target gets `--count` inputs (default 1,000,000) drawn round-robin from five generators: random
bytes, truncations of valid frames, byte mutations of valid frames, garbage content wrapped in a valid
checksum/CRC (so the payload parsers behind the checksum are reached), and valid frames with runs of
0x00/0xFF (extreme values). A *crash* is any exception other than the codec's own error type; a *hang* is
one input taking longer than `--hang-s`. The network servers (Modbus TCP, Pylontech RS485 over TCP) get
`--network` raw requests each over a real socket, the serial servers (Modbus RTU, Pylontech RS485 on a
serial port) as many on a real pty; each must still answer a valid request afterwards.

The pack-CAN target runs the real `PackFrameDecoder` + `Pipeline`: fuzzed frames are interleaved with a
valid pack stream; every state must have finite limits within the configured maxima, and while no sample
was accepted the charge/discharge limits must stay 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_bms import BmsModel

from bmsgw.bms import daly, daly_modbus, jbd, jk, lv_can, pack_can, pylontech, seplos
from bmsgw.bms.framing import BmsDecodeError, FrameBuffer, Framing
from bmsgw.config import Settings, load_settings
from bmsgw.ems import Command
from bmsgw.inverter import modbus_map, sunspec
from bmsgw.inverter import pylontech_hv_can as hv
from bmsgw.inverter import pylontech_rs485 as rs485
from bmsgw.inverter._can_common import CanCodecError, decode_keepalive
from bmsgw.inverter.sma_can import decode_inverter
from bmsgw.log import configure
from bmsgw.model import BmsFlags, Frame, GatewayState, PackSample
from bmsgw.pipeline import Pipeline
from bmsgw.sources.can import PackFrameDecoder

Decode = Callable[[bytes], object]


@dataclass
class Result:
    """Counts for one target."""

    name: str
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: int = 0
    hangs: int = 0
    max_us: float = 0.0
    seconds: float = 0.0
    answers: int = 0  # servers: responses the server wrote (errors included)
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        d = {k: v for k, v in self.__dict__.items() if k != "examples"}
        d["max_us"] = round(self.max_us, 1)
        d["seconds"] = round(self.seconds, 2)
        if self.examples:
            d["examples"] = self.examples[:3]
        return d


@dataclass(frozen=True)
class Target:
    """A decoder under fuzz: valid seeds, the decode call, its own error type, a checksum wrapper."""

    name: str
    seeds: list[bytes]
    decode: Decode
    errors: tuple[type[Exception], ...]
    wrap: Callable[[bytes], bytes] | None = None  # garbage payload → frame with a valid checksum


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="inputs per decoder target")
    ap.add_argument("--network", type=int, default=1_000_000, help="raw requests per network server")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hang-s", type=float, default=1.0)
    ap.add_argument("--only", default="", help="comma-separated target names")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args(argv)

    configure("console", "warning")
    only = {s for s in args.only.split(",") if s}
    results: list[Result] = []
    for target in targets():
        if only and target.name not in only:
            continue
        results.append(fuzz(target, args.count, args.seed, args.hang_s))
        _print(results[-1])
    for name, stream in streams().items():
        if only and name not in only:
            continue
        results.append(fuzz_stream(name, stream, args.count, args.seed, args.hang_s))
        _print(results[-1])
    if not only or "pack-can-pipeline" in only:
        results.append(fuzz_pack_pipeline(args.count, args.seed, args.hang_s))
        _print(results[-1])
    if args.network and (not only or only & {"modbus-tcp-server", "pylontech-rs485-tcp-server"}):
        for r in asyncio.run(fuzz_servers(args.network, args.seed, only)):
            results.append(r)
            _print(r)
    if args.network and (not only or only & set(SERIAL_SERVERS)):
        for r in asyncio.run(fuzz_serial_servers(args.network, args.seed, only)):
            results.append(r)
            _print(r)
    bad = sum(r.crashes + r.hangs for r in results)
    if args.json:
        print(json.dumps({"targets": [r.as_dict() for r in results], "crashes_and_hangs": bad}))
    return 1 if bad else 0


# --- generators ---------------------------------------------------------------------------------------


def inputs(target: Target, count: int, rng: random.Random) -> Iterator[bytes]:
    """`count` fuzz inputs for `target`, five generators round-robin."""
    seeds = target.seeds
    for k in range(count):
        kind = k % 5
        seed = seeds[rng.randrange(len(seeds))]
        if kind == 0:
            yield rng.randbytes(rng.randrange(0, 2 * len(seed) + 8))
        elif kind == 1:
            yield seed[: rng.randrange(0, len(seed) + 1)]
        elif kind == 2:
            b = bytearray(seed)
            for _ in range(rng.randrange(1, 4)):
                if b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
            yield bytes(b)
        elif kind == 3 and target.wrap is not None:
            yield target.wrap(rng.randbytes(rng.randrange(0, len(seed) + 4)))
        else:
            b = bytearray(seed)
            if b:
                at = rng.randrange(len(b))
                run = rng.randrange(1, 5)
                b[at : at + run] = bytes([rng.choice((0x00, 0xFF))]) * len(b[at : at + run])
            yield bytes(b)


def fuzz(target: Target, count: int, seed: int, hang_s: float) -> Result:
    """Run `count` inputs through `target.decode`."""
    res = Result(target.name)
    rng = random.Random(f"{seed}:{target.name}")
    t0 = time.perf_counter()
    for data in inputs(target, count, rng):
        _one(res, hang_s, data, lambda d=data: target.decode(d), target.errors)
    res.seconds = time.perf_counter() - t0
    return res


def _one(
    res: Result, hang_s: float, data: bytes, call: Callable[[], object], errors: tuple[type, ...]
) -> None:
    res.inputs += 1
    t = time.perf_counter()
    try:
        call()
        res.accepted += 1
    except errors:
        res.rejected += 1
    except Exception as exc:
        res.crashes += 1
        if len(res.examples) < 3:
            res.examples.append(f"{type(exc).__name__}: {exc} <- {data.hex()}")
    dt = time.perf_counter() - t
    res.max_us = max(res.max_us, dt * 1e6)
    if dt > hang_s:
        res.hangs += 1


# --- targets ------------------------------------------------------------------------------------------


def _bms_answers(kind: str, request: bytes) -> list[bytes]:
    return BmsModel(cell_v=[3.2 + 0.01 * i for i in range(16)]).answers(kind, request)


def targets() -> list[Target]:
    """Every pure decoder of a byte payload."""
    jk_seed = _bms_answers("jk", jk.read_all_request())
    jbd_seeds = _bms_answers("jbd", jbd.request(0x03)) + _bms_answers("jbd", jbd.request(0x04))
    daly_seeds = [f for cmd in (0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x98) for f in
                  _bms_answers("daly", daly.request(0x40, cmd))]  # fmt: skip
    dm_seed = _bms_answers("daly-modbus", daly_modbus.read_request())
    rs_requests = [rs485.encode_request(c, 2) for c in (0x42, 0x44, 0x47, 0x92, 0x93, 0x96, 0x4F, 0x51)]
    rs_requests += [rs485.encode_request(c, 0) for c in (0x60, 0x61, 0x62, 0x63)]
    state = _state()
    stack = _stack()
    out: list[Target] = [
        Target("jk", jk_seed, jk.decode_response, (BmsDecodeError,), lambda g: jk._frame(0x06, 0, 2, g)),
        Target("jbd", jbd_seeds, _jbd, (BmsDecodeError,), lambda g: jbd.encode_response(0x03, g[:255])),
        Target(
            "daly",
            daly_seeds,
            daly.decode_frame,
            (BmsDecodeError,),
            lambda g: daly.encode_frame(0x01, 0x90, (g + bytes(8))[:8]),
        ),
        Target(
            "daly-modbus",
            dm_seed,
            _daly_modbus,
            (BmsDecodeError,),
            lambda g: daly_modbus.encode_response(
                list(struct.unpack(f">{len(g) // 2}H", g[: len(g) // 2 * 2]))
            ),
        ),
        Target("pylontech-rs485-frame", rs_requests, rs485.decode_frame, (rs485.Rs485Error,), _rs_wrap),
        Target(
            "pylontech-rs485-client",
            [rs485.encode_frame(rs485.Rs485Frame(0x20, 2, 0x46, 0, p)) for p in _rs_payloads(state)],
            _rs_client,
            (rs485.Rs485Error,),
            _rs_wrap,
        ),
        Target(
            "sma-can-inverter",
            [bytes(8)],
            lambda d: decode_inverter(Frame(0x305 + (d[0] % 3 if d else 0), d[1:9])),
            (CanCodecError,),
        ),
        Target(
            "can-keepalive", [bytes(8)], lambda d: decode_keepalive(Frame(0x305, d[:8])), (CanCodecError,)
        ),
        Target("modbus-writes", [bytes(6)], _modbus_write, ()),
        Target(
            "seplos",
            [
                *_bms_answers("seplos", seplos.request(0x42, 0)),
                *_bms_answers("seplos", seplos.request(0x44, 0)),
            ],
            _seplos,
            (BmsDecodeError,),
            _rs_wrap,
        ),
        Target(
            "pylontech-rs485-input",
            [a for c in (0x42, 0x44) for a in _bms_answers("pylontech-rs485", pylontech.request(c, 2))],
            _pylon_input,
            (BmsDecodeError,),
            _rs_wrap,
        ),
        Target("lv-can-input", [bytes(9)], _lv_can, (BmsDecodeError,)),
        Target(
            "pylontech-hv-can-requests", [bytes(9), bytes([0, 2, 0, 0, 0, 0, 0, 0, 0])], _hv, (CanCodecError,)
        ),
    ]
    out.append(
        Target("pylontech-rs485-server", rs_requests, lambda d: _rs_answer(d, state, stack), (), _rs_wrap)
    )
    return out


def _jbd(frame: bytes) -> object:
    got = jbd.decode_response(frame)
    if got is None:
        return None
    register, data = got
    return jbd.decode_basic(data) if register == 0x03 else jbd.decode_cells(data)


def _daly_modbus(frame: bytes) -> object:
    regs = daly_modbus.decode_response(frame)
    return None if regs is None else daly_modbus.decode_registers(regs)


def _seplos(frame: bytes) -> object:
    info = seplos.decode_response(frame, 0)
    if info is None:
        return None
    for parse in (seplos.decode_telemetry, seplos.decode_alarms):
        with contextlib.suppress(BmsDecodeError):
            parse(info)
    return info


def _pylon_input(frame: bytes) -> object:
    return pylontech.decode_analog_answer(frame, 2) or pylontech.decode_alarm_answer(frame, 2)


_LV_IDS = (0x351, 0x355, 0x356, 0x359, 0x35A, 0x35C, 0x35E, 0x373, 0x305)


def _lv_can(data: bytes) -> object:
    """First byte picks the protocol and id; the rest (0..8 bytes) is the payload."""
    if not data:
        return None
    protocol = ("pylontech-can", "sma-can")[data[0] & 1]
    return lv_can.decode(protocol, Frame(_LV_IDS[(data[0] >> 1) % len(_LV_IDS)], data[1:9]))


_HV_IDS = (0x4200, 0x8200, 0x8210, 0x8240, 0x4201, 0x8201, 0x4210)


def _hv(data: bytes) -> object:
    """First byte picks the id (and an id offset); the rest is the payload."""
    if not data:
        return None
    return hv.decode_inverter(Frame(_HV_IDS[data[0] % len(_HV_IDS)], data[1:9], True), data[0] >> 7)


def _rs_wrap(garbage: bytes) -> bytes:
    return rs485.encode_frame(rs485.Rs485Frame(0x20, garbage[:1][0] if garbage else 2, 0x46, 0x42,
                                               garbage[1 : 1 + rs485.MAX_INFO_BYTES]))  # fmt: skip


def _rs_payloads(state: GatewayState) -> list[bytes]:
    stack = _stack()
    return [rs485.decode_frame(rs485.answer(rs485.encode_request(c, 2), state, stack).reply or b"").info
            for c in (0x42, 0x44, 0x47)]  # fmt: skip


def _rs_client(frame: bytes) -> object:
    f = rs485.decode_frame(frame)
    for parse in (
        lambda: rs485.decode_analog(f.info, all_modules=False),
        lambda: rs485.decode_alarms(f.info, all_modules=False),
        lambda: rs485.decode_system_parameters(f.info),
        lambda: rs485.decode_management(f.info),
    ):
        with contextlib.suppress(rs485.Rs485Error):
            parse()
    return f


def _rs_answer(raw: bytes, state: GatewayState, stack: Any) -> object:
    ans = rs485.answer(raw, state, stack)
    if ans.reply is not None:
        rs485.decode_frame(ans.reply)  # what we send back must itself be a valid frame
    return ans


def _modbus_write(data: bytes) -> object:
    """A write of random registers at a random address to both maps; never raises (errors are values)."""
    address = int.from_bytes(data[:2].ljust(2, b"\0"), "big")
    n = len(data[2:]) // 2
    values = list(struct.unpack(f">{n}H", data[2 : 2 + 2 * n]))
    cmd = Command()
    sunspec.decode_write(40000 + address % 400, values, cmd)
    return modbus_map.decode_write(address % 400, values, cmd)


# --- streams: the serial sources' FrameBuffer + codec under random chunking ----------------------------


def streams() -> dict[str, tuple[Framing, Decode, list[bytes]]]:
    """Byte-stream targets: framing, decoder and seed frames."""
    return {
        "jk-stream": (jk.FRAMING, jk.decode_response, _bms_answers("jk", jk.read_all_request())),
        "jbd-stream": (jbd.FRAMING, _jbd, _bms_answers("jbd", jbd.request(0x03))),
        "daly-stream": (daly.FRAMING, daly.decode_frame, _bms_answers("daly", daly.request(0x40, 0x90))),
        "seplos-stream": (seplos.FRAMING, _seplos, _bms_answers("seplos", seplos.request(0x42, 0))),
    }


def fuzz_stream(
    name: str, spec: tuple[Framing, Decode, list[bytes]], count: int, seed: int, hang_s: float
) -> Result:
    """Random chunks (garbage and frames mixed) through FrameBuffer; every candidate decoded or rejected."""
    framing, decode, seeds = spec
    res = Result(name)
    rng = random.Random(f"{seed}:{name}")
    buf = FrameBuffer(framing)
    t0 = time.perf_counter()
    for k in range(count):
        chunk = rng.randbytes(rng.randrange(0, 40)) if k % 2 else seeds[rng.randrange(len(seeds))]
        if k % 7 == 3:
            chunk = chunk[: rng.randrange(len(chunk) + 1)]
        res.inputs += 1
        t = time.perf_counter()
        try:
            buf.feed(chunk)
            while (frame := buf.next()) is not None:
                try:
                    decode(frame)
                    res.accepted += 1
                except BmsDecodeError:
                    res.rejected += 1
                    buf.reject(frame)
        except Exception as exc:
            res.crashes += 1
            if len(res.examples) < 3:
                res.examples.append(f"{type(exc).__name__}: {exc}")
            buf.clear()
        dt = time.perf_counter() - t
        res.max_us = max(res.max_us, dt * 1e6)
        res.hangs += dt > hang_s
    res.seconds = time.perf_counter() - t0
    return res


# --- pack CAN through the real decoder and pipeline ---------------------------------------------------


def fuzz_pack_pipeline(count: int, seed: int, hang_s: float) -> Result:
    """Fuzzed pack-bus frames into PackFrameDecoder → Pipeline; limits stay sane, none without a sample."""
    settings = _settings(1)
    res = Result("pack-can-pipeline")
    rng = random.Random(f"{seed}:pack-can")
    dec = PackFrameDecoder(settings)
    pipe = Pipeline(settings)
    lim = settings.limits
    max_c, max_d = lim.max_charge_current_a, lim.max_discharge_current_a
    valid = [f for tick in range(10) for f in pack_can.encode_tick(
        tick, 0, [3.30] * 16, [25.0] * 4, 5.0, 52.8, BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET, tick & 15)]  # fmt: skip # noqa: E501
    ids = sorted({f.id for f in valid})
    accepted_samples = 0
    t_sim = 0.0
    t0 = time.perf_counter()
    for k in range(count):
        t_sim += 0.001
        if k >= count // 2 and k % 4 == 0:  # second half: a valid stream under the garbage
            f = valid[(k // 4) % len(valid)]
            fid, data = f.id, f.data
        else:
            fid = rng.choice(ids) if k % 3 else rng.randrange(0x800)
            data = rng.randbytes(rng.randrange(0, 9))
        res.inputs += 1
        t = time.perf_counter()
        try:
            sample = dec.feed(fid, data, t_sim)
            if sample is not None and pipe.submit(sample):
                accepted_samples += 1
            if k % 50 == 0:
                state = pipe.step(t_sim)
                problem = _limit_problem(state, max_c, max_d, accepted_samples)
                if problem:
                    raise AssertionError(problem)
            res.accepted += 1
        except AssertionError as exc:
            res.crashes += 1
            if len(res.examples) < 3:
                res.examples.append(str(exc))
        except Exception as exc:
            res.crashes += 1
            if len(res.examples) < 3:
                res.examples.append(f"{type(exc).__name__}: {exc}")
        dt = time.perf_counter() - t
        res.max_us = max(res.max_us, dt * 1e6)
        res.hangs += dt > hang_s
    res.rejected = dec.rejected + dec.ignored
    res.seconds = time.perf_counter() - t0
    return res


def _limit_problem(state: GatewayState, max_c: float, max_d: float, accepted: int) -> str:
    lm = state.limits
    values = (lm.cvl.value, lm.ccl.value, lm.dcl.value, lm.dvl.value)
    if not all(math.isfinite(v) for v in values):
        return f"non-finite limit {values}"
    if not (0.0 <= lm.ccl.value <= max_c + 1e-9 and 0.0 <= lm.dcl.value <= max_d + 1e-9):
        return f"limit out of range: CCL {lm.ccl.value} DCL {lm.dcl.value}"
    if accepted == 0 and (lm.ccl.value or lm.dcl.value):
        return f"CCL {lm.ccl.value}/DCL {lm.dcl.value} without any accepted sample"
    return ""


# --- network servers ----------------------------------------------------------------------------------


async def fuzz_servers(count: int, seed: int, only: set[str]) -> list[Result]:
    """Raw garbage at the Modbus TCP and Pylontech RS485 TCP servers of a real Gateway's outputs."""
    from bmsgw.clock import SteppedClock
    from bmsgw.outputs import OUTPUTS

    results: list[Result] = []
    rng = random.Random(f"{seed}:net")
    settings, _ = load_settings(
        None,
        {
            "packs": [{"id": "p0", "address": 0, "capacity_ah": 100}],
            "outputs": [
                {"protocol": "modbus-tcp", "tcp_port": 0, "writes": True, "allow": ["127.0.0.1"]},
                {"protocol": "pylontech-rs485", "tcp_port": 0},
            ],
            "web.enabled": False,
        },
        env={},
    )
    pipe = Pipeline(settings)
    _feed(pipe)
    clock = SteppedClock()
    for cfg in settings.outputs:
        name = {"modbus-tcp": "modbus-tcp-server", "pylontech-rs485": "pylontech-rs485-tcp-server"}[
            cfg.protocol
        ]
        if only and name not in only:
            continue
        out = OUTPUTS[cfg.protocol](settings, cfg, clock, lambda: pipe.state)
        task = asyncio.create_task(out.run())
        try:
            port = await _port_of(out)
            res = await _flooded(name, lambda r, p=port, c=cfg: _flood(r, p, count, rng, c.protocol))
            res.answers = out.sent
            results.append(res)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return results


async def _port_of(out: Any) -> int:
    for _ in range(500):
        port = getattr(out, "bound_port", None)
        address = getattr(out, "tcp_address", None)
        if address:
            port = address[1]
        if isinstance(port, int) and port > 0:
            return port
        await asyncio.sleep(0.01)
    raise RuntimeError(f"{type(out).__name__} exposes no bound TCP port")


async def _flood(res: Result, port: int, count: int, rng: random.Random, protocol: str) -> bool:
    """`count` inputs at the TCP server on `port`; whether a fresh connection is answered afterwards."""
    valid = _valid_request(protocol)
    # two clients: garbage on one, reconnected every 64 inputs (the server closes it on a bad MBAP header;
    # a real client would reconnect); well-formed envelopes with random bodies on the other, so they reach
    # the request handler
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for k in range(count):
        data = _garbage(k, valid, rng, protocol)
        res.inputs += 1
        c = 1 if k % 4 == 3 else 0
        if c == 0 and k % 64 == 0:
            conns[0][1].close()
            conns[0] = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = conns[c]
        try:
            writer.write(data)
            # a well-formed request waits for its answer (one at a time, as most clients do); the
            # garbage client is drained now and then
            if c == 1 or k % 16 == 0:
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(65536), 0.01 if c else 0.002)
                if reader.at_eof():
                    raise ConnectionResetError("server closed the connection")
        except (ConnectionError, OSError):
            res.rejected += 1  # the server dropped the connection (allowed): reconnect
            writer.close()
            conns[c] = await asyncio.open_connection("127.0.0.1", port)
    for _, writer in conns:
        writer.close()
    return await _answers(port, valid, protocol)  # a fresh connection


def _garbage(k: int, valid: bytes, rng: random.Random, protocol: str) -> bytes:
    """Input k of a server flood: random bytes, `valid` with one byte changed, a truncation of it, or a
    random request body in a valid envelope (length, CRC or checksum right) so the handler behind is hit."""
    if k % 4 == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if k % 4 == 1:
        data = bytearray(valid)
        data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if k % 4 == 2:
        return valid[: rng.randrange(1, len(valid))]
    pdu = _modbus_pdu(rng)
    if protocol == "modbus-tcp":
        return struct.pack(">HHHB", k & 0xFFFF, 0, len(pdu) + 1, 1) + pdu
    if protocol == "modbus-rtu":
        body = b"\x01" + pdu
        return body + struct.pack("<H", daly_modbus.crc16(body))
    info = rng.randbytes(rng.randrange(0, 12))
    return rs485.encode_frame(rs485.Rs485Frame(0x20, rng.choice((2, 2, 2, 0xFF, rng.randrange(256))), 0x46,
                                               rng.randrange(256), info))  # fmt: skip


def _modbus_pdu(rng: random.Random) -> bytes:
    """A request PDU of the length its function code implies (the RTU framer sizes frames by it), with
    random addresses, counts and values; or an unknown function code with random bytes."""
    fc = rng.choice((1, 2, 3, 4, 5, 6, 8, 15, 16, 22, 23, 43, rng.randrange(256)))
    addr = rng.choice((0, 100, 1000, 40000, 40070, 40200, rng.randrange(65536)))
    count = rng.choice((1, 2, 10, 125, rng.randrange(256)))
    values = rng.randbytes(rng.randrange(0, 2 * 125))
    if fc in (1, 2, 3, 4, 5, 6):
        body = struct.pack(">HH", addr, rng.randrange(65536) if fc in (5, 6) else count)
    elif fc == 8:
        body = struct.pack(">HH", rng.randrange(21), rng.randrange(65536))
    elif fc in (15, 16):
        body = struct.pack(">HHB", addr, count, len(values)) + values
    elif fc == 22:
        body = struct.pack(">HHH", addr, rng.randrange(65536), rng.randrange(65536))
    elif fc == 23:
        body = struct.pack(">HHHHB", addr, count, rng.randrange(65536), count, len(values)) + values
    elif fc == 43:
        body = bytes([0x0E, rng.randrange(1, 5), rng.randrange(256)])
    else:
        body = rng.randbytes(rng.randrange(0, 40))
    return bytes([fc]) + body


SERIAL_SERVERS = {"modbus-rtu-server": "modbus-rtu", "pylontech-rs485-serial-server": "pylontech-rs485"}
"""Serial server targets and the output protocol each runs."""


async def fuzz_serial_servers(count: int, seed: int, only: set[str]) -> list[Result]:
    """Raw garbage on the serial line of a Modbus RTU and a Pylontech RS485 output (a real pty each)."""
    from ptys import pty_pair

    from bmsgw.clock import SteppedClock
    from bmsgw.outputs import OUTPUTS

    results: list[Result] = []
    rng = random.Random(f"{seed}:serial")
    for name, protocol in SERIAL_SERVERS.items():
        if only and name not in only:
            continue
        with pty_pair() as line:
            writes = {"writes": True} if protocol == "modbus-rtu" else {}
            settings = _settings(1, [{"protocol": protocol, "port": line.path, "tcp_port": None, **writes}])
            pipe = Pipeline(settings)
            _feed(pipe)
            out = OUTPUTS[protocol](settings, settings.outputs[0], SteppedClock(), lambda p=pipe: p.state)
            task = asyncio.create_task(out.run())
            try:
                res = await _flooded(name, lambda r, ln=line, pr=protocol: _flood_line(r, ln, count, rng, pr))
                res.answers, res.rejected = out.sent, getattr(out, "errors", 0)
                results.append(res)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return results


async def _flood_line(res: Result, line: Any, count: int, rng: random.Random, protocol: str) -> bool:
    """`count` inputs on the serial line of the server at the far end of `line`; whether it answers after."""
    valid = _valid_request(protocol)
    if not await _line_answers(line, valid, protocol):
        raise RuntimeError("no valid answer before the flood")
    for k in range(count):
        res.inputs += 1
        data = _garbage(k, valid, rng, protocol)
        await _write_line(line, data)  # frames among garbage: the RTU server finds them by CRC
        if k % 16 == 0:
            line.read_available()  # answers to garbage: discarded, so the server never blocks
            await asyncio.sleep(0)
    return await _line_answers(line, valid, protocol)


async def _flooded(name: str, flood: Callable[[Result], Awaitable[bool]]) -> Result:
    """Run `flood` (it counts its inputs into the result and says whether the server still answers a valid
    request afterwards); timed, any exception a crash, no answer a hang."""
    res = Result(name)
    t0 = time.perf_counter()
    try:
        res.accepted = int(await flood(res))
        if not res.accepted:
            res.hangs += 1
            res.examples.append("no valid answer after the flood")
    except Exception as exc:
        res.crashes += 1
        res.examples.append(f"{type(exc).__name__}: {exc}")
    res.seconds = time.perf_counter() - t0
    return res


def _valid_request(protocol: str) -> bytes:
    """A read each server answers: the SunSpec marker over Modbus, 0x42 of module 2 over Pylontech RS485."""
    if protocol == "modbus-tcp":
        return struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 40000, 2)
    if protocol == "modbus-rtu":
        request = bytes([1, 3]) + struct.pack(">HH", 40000, 2)
        return request + struct.pack("<H", daly_modbus.crc16(request))
    return rs485.encode_request(0x42, 2)


async def _write_line(line: Any, data: bytes) -> None:
    """Write all of `data` to the pty, letting the server read whenever the line is full."""
    while data:
        try:
            data = data[os.write(line.fd, data) :]
        except BlockingIOError:
            line.read_available()
            await asyncio.sleep(0.001)


async def _line_answers(line: Any, request: bytes, protocol: str) -> bool:
    """After a quiet gap (an RTU server resynchronises on silence), `request` gets a valid answer."""
    for _ in range(5):
        await asyncio.sleep(0.1)
        while line.read_available():  # noqa: ASYNC110 (drains a pty, not a flag)
            await asyncio.sleep(0.01)
        os.write(line.fd, request)
        got = b""
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            await asyncio.sleep(0.01)
            got += line.read_available()
            if protocol == "modbus-rtu" and b"\x01\x03\x04SunS" in got:
                return True
            if protocol != "modbus-rtu" and got.endswith(b"\r"):
                with contextlib.suppress(rs485.Rs485Error):
                    if rs485.decode_frame(got[got.rfind(b"~") :]).cid2 == 0:
                        return True
                break
    return False


async def _answers(port: int, request: bytes, protocol: str) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(4096), 5.0)
        if protocol == "modbus-tcp":
            return len(data) >= 13 and data[7] == 3 and data[9:13] == b"SunS"
        return rs485.decode_frame(data.rstrip(b"\n")).cid2 == 0
    except (TimeoutError, rs485.Rs485Error, ConnectionError):
        return False
    finally:
        writer.close()


# --- helpers ------------------------------------------------------------------------------------------


def _settings(packs: int, outputs: list[dict[str, Any]] | None = None) -> Settings:
    raw: dict[str, Any] = {"packs": [{"id": f"p{i}", "address": i, "capacity_ah": 100} for i in range(packs)]}
    if outputs is not None:
        raw["outputs"] = outputs
    settings, _ = load_settings(None, {**raw, "web.enabled": False}, env={})
    return settings


def _feed(pipe: Pipeline) -> None:
    n = len(pipe.settings.packs)
    for k in range(5):
        for i in range(n):
            v = np.full(16, 3.30)
            pipe.submit(PackSample(i, float(k), v, np.full(4, 25.0), 5.0, float(v.sum()),
                                   BmsFlags.CHARGE_FET | BmsFlags.DISCHARGE_FET, alive=k))  # fmt: skip
        pipe.step(float(k))


def _state() -> GatewayState:
    pipe = Pipeline(_settings(2))
    _feed(pipe)
    return pipe.state


def _stack() -> rs485.StackInfo:
    from bmsgw.outputs.pylontech_rs485 import stack_info

    settings = _settings(2, [{"protocol": "pylontech-rs485", "tcp_port": 0}])
    return stack_info(settings, settings.outputs[0])


def _print(r: Result) -> None:
    print(
        f"{r.name:28s} {r.inputs:>9d} inputs  {r.accepted:>9d} ok  {r.rejected:>9d} rejected  "
        f"{r.crashes} crashes  {r.hangs} hangs  max {r.max_us:8.1f} µs  {r.seconds:6.1f} s",
        flush=True,
    )
    for e in r.examples:
        print(f"    {e}")


if __name__ == "__main__":
    sys.exit(main())
