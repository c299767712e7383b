"""Shared fixtures: fail any test that leaves an asyncio task running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


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
