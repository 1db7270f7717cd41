"""A Consumer with `handle_batch`: one call for what a fetch brought, acks after it, one by one when it fails."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import timestamp_pb2
from herald.delivery.v1 import delivery_pb2

from services.common import events

Event = delivery_pb2.RecipientDeliveredEvent


class FakeMessage:
    """What a Consumer uses of a nats-py Msg: the payload, its headers (none here) and how it was settled."""

    subject = "herald.events.delivery.recipient_delivered"
    headers: dict[str, str] | None = None

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append("nak")

    async def term(self) -> None:
        self.settled.append("term")

    async def in_progress(self) -> None:
        self.settled.append("in_progress")

    @property
    def metadata(self) -> Any:
        raise ValueError("not a JetStream message")


def delivered(recipient_id: int) -> FakeMessage:
    event = Event(
        owner_user_id=3,
        campaign_id=8,
        recipient_id=recipient_id,
        email_address=f"r{recipient_id}@example.com",
        deliver_time=timestamp_pb2.Timestamp(seconds=1_780_000_100),
    )
    return FakeMessage(events.RECIPIENT_DELIVERED.encode(event))


class Recorder:
    def __init__(self, *, batch_fails: bool = False, failing: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.singles: list[int] = []
        self._batch_fails = batch_fails
        self._failing = failing

    async def handle(self, event: Event) -> None:
        self.singles.append(event.recipient_id)
        if event.recipient_id in self._failing:
            raise RuntimeError("cannot apply it")

    async def handle_batch(self, batch: Sequence[Event]) -> None:
        self.batches.append([event.recipient_id for event in batch])
        if self._batch_fails:
            raise RuntimeError("cannot apply the batch")


def consumer(recorder: Recorder, *, batched: bool = True) -> events.Consumer[Event]:
    return events.Consumer(
        "test-delivered",
        events.RECIPIENT_DELIVERED,
        recorder.handle,
        handle_batch=recorder.handle_batch if batched else None,
        batch=100,
    )


async def test_the_decodable_messages_of_a_fetch_are_handled_together_in_order_then_acked() -> None:
    recorder = Recorder()
    messages = [delivered(1), FakeMessage(b"not json"), delivered(2), delivered(3)]
    await consumer(recorder).handle_fetched(messages)  # type: ignore[arg-type]
    assert recorder.batches == [[1, 2, 3]]
    assert recorder.singles == []
    assert [m.settled for m in messages] == [["ack"], ["term"], ["ack"], ["ack"]]


async def test_a_failed_batch_is_handled_one_by_one_and_only_the_failing_event_comes_back() -> None:
    recorder = Recorder(batch_fails=True, failing=frozenset({2}))
    messages = [delivered(1), delivered(2), delivered(3)]
    await consumer(recorder).handle_fetched(messages)  # type: ignore[arg-type]
    assert recorder.batches == [[1, 2, 3]]
    assert recorder.singles == [1, 2, 3]
    assert [m.settled for m in messages] == [["ack"], ["nak"], ["ack"]]


async def test_a_single_message_is_handled_on_its_own() -> None:
    recorder = Recorder()
    message = delivered(1)
    await consumer(recorder).handle_fetched([message])  # type: ignore[list-item]
    assert recorder.batches == []
    assert recorder.singles == [1]
    assert message.settled == ["ack"]


async def test_without_handle_batch_each_message_is_handled_on_its_own_as_before() -> None:
    recorder = Recorder(failing=frozenset({1}))
    messages = [delivered(1), FakeMessage(b"{}"), delivered(2)]
    await consumer(recorder, batched=False).handle_fetched(messages)  # type: ignore[arg-type]
    assert recorder.batches == []
    assert recorder.singles == [1, 2]
    assert [m.settled for m in messages] == [["nak"], ["term"], ["ack"]]
