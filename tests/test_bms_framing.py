"""Shared stream resync (bmsgw/bms/framing.py) for every serial BMS framing."""

from __future__ import annotations

import numpy as np
import pytest
from fake_bms import FRAMINGS, load_ascii_frames, load_frames
from hypothesis import given
from hypothesis import strategies as st
from test_pylontech_rs485 import CAPTURES

from bmsgw.bms import daly, daly_modbus, jbd, jk, pylontech, seplos
from bmsgw.bms.framing import BmsDecodeError, BmsReading, FrameBuffer, resync
from bmsgw.model import BmsFlags

DECODERS = {
    "jk": jk.decode_response,
    "jbd": jbd.decode_response,
    "daly": daly.decode_frame,
    "daly-modbus": daly_modbus.decode_response,
    "seplos": lambda frame: seplos.decode_response(frame, 0),
    "pylontech-rs485": lambda frame: pylontech.decode_answer(frame, 2),
}
GOOD = {
    "jk": load_frames("jk")["status_14s"],
    "jbd": load_frames("jbd")["sp04s034_4s_basic"],
    "daly": load_frames("daly")["reply_90_4s_at_rest"],
    "daly-modbus": load_frames("daly_modbus")["realtime_24s"],
    "seplos": load_ascii_frames("seplos")["telemetry_16s"],
    "pylontech-rs485": CAPTURES["us3000c_0x42_single"],
}


def test_resync_finds_whole_and_cut_off_markers() -> None:
    assert resync(b"xx\x4e\x57yy", b"\x4e\x57") == 2
    assert resync(b"xx\x4e\x57yy", b"\x4e\x57", 3) == 6
    assert resync(b"xxxx\x4e", b"\x4e\x57") == 4  # may be the start of a marker: keep it
    assert resync(b"xxxx", b"\x4e\x57") == 4
    assert resync(b"", b"\xdd") == 0


@pytest.mark.parametrize("kind", list(FRAMINGS))
def test_a_frame_hidden_in_a_rejected_candidate_is_found(kind: str) -> None:
    good = GOOD[kind]
    start = FRAMINGS[kind].start
    # A bogus frame start right before a real frame: the candidate swallows part of the real one.
    buf = FrameBuffer(FRAMINGS[kind])
    buf.feed(b"junk" + start + good[len(start) :][:3] + good + good)
    decoded = []
    while (frame := buf.next()) is not None:
        try:
            decoded.append(DECODERS[kind](frame))
        except BmsDecodeError:
            buf.reject(frame)
    assert len(decoded) == 2
    if kind in ("seplos", "pylontech-rs485"):  # the ASCII header is checked: the stray start is garbage
        assert buf.garbage >= 4 + len(start)
    else:
        assert buf.rejected >= 1
        assert buf.garbage >= 4


@pytest.mark.parametrize("kind", list(FRAMINGS))
@given(chunks=st.lists(st.binary(max_size=80), max_size=10))
def test_random_bytes_never_raise_and_candidates_are_well_formed(kind: str, chunks: list[bytes]) -> None:
    framing = FRAMINGS[kind]
    buf = FrameBuffer(framing, max_bytes=512)
    for chunk in [*chunks, GOOD[kind]]:
        buf.feed(chunk)
        while (frame := buf.next()) is not None:
            assert frame.startswith(framing.start)
            assert len(frame) == framing.length(frame[: framing.header_len])
            try:
                DECODERS[kind](frame)
            except BmsDecodeError:
                buf.reject(frame)
    assert len(buf) <= 512


def test_reading_becomes_a_pack_sample() -> None:
    r = BmsReading((3.3, 3.4), (20.0,), -5.0, 6.7, BmsFlags.CHARGE_FET, 0.5)
    s = r.sample(pack=2, t=12.5, alive=7)
    assert (s.pack, s.t, s.alive, s.current, s.voltage, s.soc_reported) == (2, 12.5, 7, -5.0, 6.7, 0.5)
    assert np.array_equal(s.cell_v, [3.3, 3.4])
    assert not s.cell_v.flags.writeable
