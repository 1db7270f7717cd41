-- One pace for the whole fleet of delivery workers (issue 16, services/delivery/pacing.py): a token bucket per
-- limit ('all', 'campaign:<id>', 'relay:<name>', 'domain:<domain>[+<domain>...]', 'warmup:<domain>:<day>').
-- Workers lease a few tokens at a time from it with one statement; the refill is computed from the
-- database's clock, so that workers' clocks never matter.
--   rate         tokens per second now: the configured rate, or less after "slow down" replies;
--   ceiling      what the rate recovers to: the configured rate, or an unconfigured domain's observed pace
--                (a daily warm-up bucket: the day's volume);
--   configured   false for a domain that has no configured rate and is paced only because it asked to slow
--                down (the row is deleted once it has recovered to its ceiling);
--   burst        seconds of the rate the bucket holds at most (0: no refill, a daily volume);
--   tokens       tokens in the bucket at refilled_at;
--   granted      what the last lease took (read back by the statement that leased);
--   changed_at   the last change of the rate by adaptation;
--   reserved_until how far ahead recipients set aside for want of tokens are expected to be sent.
CREATE TABLE pacing_buckets (
    key            text PRIMARY KEY,
    rate           double precision NOT NULL,
    ceiling        double precision NOT NULL,
    configured     boolean NOT NULL,
    burst          double precision NOT NULL,
    tokens         double precision NOT NULL,
    granted        double precision NOT NULL DEFAULT 0,
    refilled_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_at     timestamptz NOT NULL DEFAULT '-infinity',
    reserved_until timestamptz NOT NULL DEFAULT clock_timestamp()
);
