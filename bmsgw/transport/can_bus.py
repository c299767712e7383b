"""python-can bus ↔ asyncio: frames in through a bounded buffer, frames out without blocking the loop."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import can

from bmsgw.model import Frame

__all__ = ["AsyncCanBus", "CanBusError"]


class CanBusError(Exception):
    """The bus failed (bus-off, adapter gone, interface missing); reopen to recover."""


class AsyncCanBus:
    """One python-can bus bridged to the running event loop; moves frames, never interprets them."""

    def __init__(
        self,
        interface: str,
        channel: str,
        bitrate: int | None = None,
        *,
        buffer: int = 65536,
        receive_own_messages: bool = False,
        **kwargs: Any,
    ) -> None:
        self.interface = interface
        self.channel = channel
        self._kwargs: dict[str, Any] = dict(kwargs)
        if bitrate is not None and interface not in ("virtual", "udp_multicast"):
            self._kwargs["bitrate"] = bitrate
        if receive_own_messages:
            self._kwargs["receive_own_messages"] = True
        self._buffer: collections.deque[can.Message] = collections.deque(maxlen=buffer)
        self._wakeup = asyncio.Event()
        self._error: Exception | None = None
        self._bus: can.BusABC | None = None
        self._notifier: can.Notifier | None = None
        self.overruns = 0
        self.error_frames = 0

    async def open(self) -> None:
        """Open the bus; raises CanBusError naming the interface on failure."""
        loop = asyncio.get_running_loop()
        try:
            self._bus = await loop.run_in_executor(
                None, lambda: can.Bus(interface=self.interface, channel=self.channel, **self._kwargs)
            )
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            raise CanBusError(f"cannot open CAN {self.interface}:{self.channel}: {exc}") from exc
        self._error = None
        # A short receive timeout lets close() stop the notifier thread promptly.
        self._notifier = can.Notifier(self._bus, [_Listener(self)], timeout=0.1, loop=loop)

    async def close(self) -> None:
        """Stop receiving and release the bus."""
        if self._notifier is not None:
            self._notifier.stop(timeout=1.0)
            self._notifier = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    async def __aenter__(self) -> AsyncCanBus:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def recv(self) -> can.Message:
        """Next received data frame; error frames are counted and skipped."""
        while True:
            while self._buffer:
                msg = self._buffer.popleft()
                if msg.is_error_frame:
                    self.error_frames += 1
                    continue
                return msg
            if self._error is not None:
                raise CanBusError(f"CAN {self.interface}:{self.channel} failed: {self._error}")
            self._wakeup.clear()
            await self._wakeup.wait()

    def recv_nowait(self) -> can.Message | None:
        """A buffered data frame if one is waiting, else None."""
        while self._buffer:
            msg = self._buffer.popleft()
            if not msg.is_error_frame:
                return msg
            self.error_frames += 1
        return None

    async def send(self, frame: Frame, timestamp: float = 0.0) -> None:
        """Transmit one frame; raises CanBusError if the bus rejects it."""
        if self._bus is None:
            raise CanBusError(f"CAN {self.interface}:{self.channel} is not open")
        msg = can.Message(
            arbitration_id=frame.id,
            data=frame.data,
            is_extended_id=frame.extended,
            timestamp=timestamp,
        )
        try:
            self._bus.send(msg, timeout=0.05)
        except can.CanError as exc:
            raise CanBusError(f"CAN {self.interface}:{self.channel} send failed: {exc}") from exc

    def _received(self, msg: can.Message) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.overruns += 1
        self._buffer.append(msg)
        self._wakeup.set()

    def _failed(self, exc: Exception) -> None:
        self._error = exc
        self._wakeup.set()


class _Listener(can.Listener):
    """Runs on the event loop (python-can schedules it there when given a loop)."""

    def __init__(self, bus: AsyncCanBus) -> None:
        self._bus = bus

    def on_message_received(self, msg: can.Message) -> None:
        self._bus._received(msg)

    def on_error(self, exc: Exception) -> None:
        self._bus._failed(exc)
