"""A cancel that lands in the same loop turn as the awaited data must still cancel (shutdown never hangs).

Python 3.11's ``asyncio.wait_for`` returns the inner result instead when both happen at once, so a task
cancelled just as a serial answer arrived kept polling and the daemon's shutdown waited forever (it hung
the fault matrix in CI). bmsgw uses ``asyncio.timeout``, which does not lose the cancellation.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from fake_bms import BmsModel

from bmsgw.bms import jk
from bmsgw.bms.framing import FrameBuffer
from bmsgw.sources.serial_bms import DRIVERS, Link
from bmsgw.telemetry.web import _Hub

ROOT = Path(__file__).resolve().parent.parent


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_serial_poll_cancelled_as_its_answer_arrives_is_cancelled() -> None:
    a, b = socket.socketpair()
    _, writer = await asyncio.open_unix_connection(sock=a)
    reader = asyncio.StreamReader()  # fed by hand: the answer and the cancel land in one loop turn
    link = Link(reader, writer, FrameBuffer(DRIVERS["jk"]().framing), timeout_s=5.0, attempts=1)
    request = jk.read_all_request()
    (answer,) = BmsModel().answers("jk", request)
    try:
        task = asyncio.create_task(link.ask(request, jk.decode_response))
        await _settle()
        assert not task.done()  # waiting for the answer
        reader.feed_data(answer)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        writer.close()
        b.close()


async def test_a_dashboard_wait_cancelled_as_the_state_is_published_is_cancelled() -> None:
    hub = _Hub()
    task = asyncio.create_task(hub.wait(hub.seq, 5.0))
    await _settle()
    assert not task.done()
    hub.publish("{}")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_no_asyncio_wait_for_in_the_package() -> None:
    users = [p.name for p in (ROOT / "bmsgw").rglob("*.py") if "asyncio.wait_for(" in p.read_text()]
    assert users == [], "use `async with asyncio.timeout(...)`: wait_for can swallow a cancellation on 3.11"
