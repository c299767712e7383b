"""Logging: JSON lines for machines, and third-party stdlib loggers come out the same way."""

from __future__ import annotations

import json
import logging

import pytest

from bmsgw.log import configure, get_logger


def test_json_lines_for_ours_and_stdlib(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json", "info")
    get_logger("bmsgw.test").info("pack bus open", channel="can0")
    logging.getLogger("can.interfaces.socketcan").warning("bus error %d", 5)
    logging.getLogger("pymodbus").info("chatty")  # third-party INFO is held back
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert lines[0]["event"] == "pack bus open"
    assert lines[0]["channel"] == "can0"
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
    assert lines[1]["event"] == "bus error 5"
    assert lines[1]["level"] == "warning"
    assert len(lines) == 2


def test_console_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure("console", "debug")
    get_logger("bmsgw.test").debug("hello", x=1)
    err = capsys.readouterr().err
    assert "hello" in err
    assert "x=1" in err
    assert not err.lstrip().startswith("{")


def test_library_floods_are_rate_limited(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json", "info")
    for k in range(500):  # e.g. a Modbus client sending garbage: pymodbus logs every bad frame
        logging.getLogger("pymodbus.logging").error("Unable to decode frame %d", k)
    get_logger("bmsgw.test").warning("ours still pass")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    library = [x for x in lines if x["event"].startswith("Unable")]
    assert len(library) == 20
    assert lines[-1]["event"] == "ours still pass"
    # a minute later (record time) the next one passes and says what was dropped
    record = logging.LogRecord("pymodbus.logging", logging.ERROR, __file__, 1, "later", None, None)
    record.created += 61.0
    handler = logging.getLogger().handlers[0]
    assert handler.filter(record)
    assert "480 more pymodbus messages suppressed" in record.getMessage()


def test_write_refusals_a_client_can_repeat_are_rate_limited(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json", "info")
    refusals = get_logger("bmsgw.outputs.modbus.clients")
    for k in range(100):  # a client not in `allow` writing in a loop
        refusals.warning("modbus write refused", peer="192.0.2.7", address=k)
    get_logger("bmsgw.outputs.modbus").info("modbus serving")  # the output's other records pass
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [x["address"] for x in lines if x["event"] == "modbus write refused"] == list(range(20))
    assert lines[-1]["event"] == "modbus serving"
    # a minute later the next one passes and counts what was dropped, as a field of the JSON line
    handler = logging.getLogger().handlers[0]
    record = logging.LogRecord("bmsgw.outputs.modbus.clients", logging.WARNING, __file__, 1,
                               {"event": "modbus write refused", "address": 100}, None, None)  # fmt: skip
    record.created += 61.0
    assert handler.filter(record)
    assert isinstance(record.msg, dict)
    assert record.msg["suppressed"] == 80


def test_asyncio_write_warnings_a_vanished_client_causes_are_rate_limited(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("json", "info")
    for _ in range(100):  # asyncio logs each write to a connection whose peer has gone
        logging.getLogger("asyncio").warning("socket.send() raised exception.")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert len(lines) == 20
