"""A Consumer with `concurrency`: a long handling does not hold back the next events; each is acked when its own
handling ended, and stopping leaves the unfinished ones unacked (they come back)."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import pytest

from services.common import events
from services.common.natsutil import Subjects
from tests.unit.test_event_consumer_batches import Event, FakeMessage, delivered


class FakeSubscription:
    def __init__(self, messages: list[FakeMessage]) -> None:
        self._messages = messages
        self.asked: list[int] = []

    async def fetch(self, batch: int, **_: float) -> list[FakeMessage]:
        self.asked.append(batch)
        if not self._messages:
            await asyncio.sleep(0.01)
            raise nats.errors.TimeoutError
        taken, self._messages = self._messages[:batch], self._messages[batch:]
        return taken


class FakeJetStream:
    def __init__(self, subscription: FakeSubscription) -> None:
        self._subscription = subscription

    async def pull_subscribe(self, *args: Any, **kwargs: Any) -> FakeSubscription:
        return self._subscription


async def test_a_long_handling_lets_the_next_events_through_and_each_is_acked_when_it_ended() -> None:
    release = asyncio.Event()
    handled: list[int] = []

    async def handle(event: Event) -> None:
        if event.recipient_id == 1:
            await release.wait()
        handled.append(event.recipient_id)

    messages = [delivered(n) for n in (1, 2, 3)]
    subscription = FakeSubscription(list(messages))
    consumer = events.Consumer("test-delivered", events.RECIPIENT_DELIVERED, handle, concurrency=2)
    stop = asyncio.Event()
    run = asyncio.create_task(consumer.run(FakeJetStream(subscription), Subjects("t"), stop))  # type: ignore[arg-type]
    for _ in range(500):
        if handled == [2, 3]:
            break
        await asyncio.sleep(0.01)
    # The first is still being handled: the two after it were handled and acked, it was not.
    assert handled == [2, 3]
    assert messages[0].settled == [] and messages[1].settled == ["ack"] and messages[2].settled == ["ack"]
    # Never more fetched than free slots: one slot stayed busy.
    assert max(subscription.asked[1:], default=1) <= 1
    release.set()
    for _ in range(500):
        if messages[0].settled:
            break
        await asyncio.sleep(0.01)
    assert messages[0].settled == ["ack"]
    stop.set()
    await asyncio.wait_for(run, 5)


async def test_stopping_cancels_a_running_handling_and_leaves_its_message_unacked() -> None:
    started = asyncio.Event()

    async def handle(event: Event) -> None:
        started.set()
        await asyncio.Event().wait()

    message = delivered(1)
    consumer = events.Consumer("test-delivered", events.RECIPIENT_DELIVERED, handle, concurrency=4)
    stop = asyncio.Event()
    run = asyncio.create_task(consumer.run(FakeJetStream(FakeSubscription([message])), Subjects("t"), stop))  # type: ignore[arg-type]
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(run, 5)
    assert "ack" not in message.settled and "nak" not in message.settled


def test_concurrency_with_batches_is_refused() -> None:
    async def handle(event: Event) -> None: ...

    async def handle_batch(batch: Any) -> None: ...

    with pytest.raises(ValueError):
        events.Consumer("d", events.RECIPIENT_DELIVERED, handle, handle_batch=handle_batch, concurrency=2)
