-- The subscriber's subscription date, address and opt-in date, for the Subscriber:SubscriptionDate,
-- SubscriptionIP and OptInDate personalization tags. Queueing fills them only when the run's content names
-- one of those tags (services/delivery/message.py `uses_subscription_tags`); NULL / '' otherwise.
ALTER TABLE recipients
    ADD COLUMN subscription_time timestamptz,
    ADD COLUMN subscription_ip   text NOT NULL DEFAULT '',
    ADD COLUMN opt_in_time       timestamptz;
