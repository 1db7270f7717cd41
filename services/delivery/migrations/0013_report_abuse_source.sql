-- A complaint made with the message's own report-abuse link (%Link:ReportAbuse%, translator/tracking.py).
ALTER TABLE bounces DROP CONSTRAINT bounces_source_check;
ALTER TABLE bounces ADD CONSTRAINT bounces_source_check
    CHECK (source IN ('smtp_reply', 'dsn', 'plain_text', 'arf', 'ses', 'sendgrid', 'postmark', 'report_abuse_link'));
