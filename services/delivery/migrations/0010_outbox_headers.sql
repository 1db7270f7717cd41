-- Delivery's outbox carries NATS headers for some messages besides Nats-Msg-Id: a deferred
-- recipient's retry is a JetStream message schedule (Nats-Schedule, Nats-Schedule-Target), published
-- on a subject of its own (services/delivery/retries.py).
ALTER TABLE outbox ADD COLUMN headers jsonb;
