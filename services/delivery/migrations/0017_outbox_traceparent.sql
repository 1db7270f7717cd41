-- The W3C traceparent of the span that wrote an outbox row (NULL when tracing is off), in a schema whose outbox
-- predates it (services/common/outbox.sql has it): the relay publishes it as the traceparent header.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent text;
