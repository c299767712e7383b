"""Shared fixtures: fail any test that leaves an asyncio task running; undo logging setup; one MQTT broker.
Under CI (CI set), hypothesis draws the same examples every run."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator

import hypothesis
import pytest
from mosquitto import Mosquitto

# a red CI run must come from the change, not from a new random draw; locally every run explores afresh
# (bench/fuzz.py is the long exploration)
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")


@pytest.fixture(autouse=True)
async def _no_lingering_tasks() -> AsyncIterator[None]:
    """Fail the test if it leaves tasks running on its event loop."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    lingering = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in lingering:
        task.cancel()
    if lingering:
        await asyncio.gather(*lingering, return_exceptions=True)
    assert not lingering, f"test left tasks running: {lingering}"


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """CLI tests configure logging onto captured streams; put the root logger back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One anonymous mosquitto for the tests that do not restart it (each test uses its own topics)."""
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.stop()
