"""natsutil.count_redeliveries counts, per durable consumer, the messages of a fetch that JetStream delivered before."""

from __future__ import annotations

from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from services.common import natsutil


def delivery(num_delivered: int) -> Msg:
    """A message as JetStream delivers it: its reply subject carries the delivery count."""
    return Msg(
        _client=None, subject="herald.x", reply=f"$JS.ACK.STREAM.C.{num_delivered}.10.5.1700000000000000000.0"
    )


def counted(durable: str) -> float:
    return REGISTRY.get_sample_value("herald_jetstream_redeliveries_total", {"durable": durable}) or 0.0


def test_only_messages_delivered_before_are_counted_under_their_durable() -> None:
    before, other = counted("unit-consumer"), counted("unit-other")
    natsutil.count_redeliveries("unit-consumer", [delivery(1), delivery(2), delivery(7), delivery(1)])
    assert counted("unit-consumer") - before == 2
    assert counted("unit-other") == other


def test_a_message_that_is_no_jetstream_delivery_counts_nothing() -> None:
    before = counted("unit-plain")
    natsutil.count_redeliveries("unit-plain", [Msg(_client=None, subject="x", reply="_INBOX.abc")])
    assert counted("unit-plain") == before
