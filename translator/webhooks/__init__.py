"""Provider webhooks on the translator: bounces and complaints from Amazon SES (through SNS), SendGrid and
Postmark, for operators who send through a provider rather than their own MTA (docs/bounces.md,
"Provider webhooks").

Each endpoint verifies its provider's signature or secret, names the recipient only by the token Herald
signed into the message (services/common/return_path.py), and records what it verified in delivery
(DeliveryService.RecordBounces), whose classifier judges each report. A provider that is not configured
answers 404.
"""

from __future__ import annotations

from aiohttp import web

from services.common.return_path import ReturnPaths
from translator.commands import Stubs
from translator.identity import IdentityStore
from translator.webhooks._common import BounceSink, Recipients
from translator.webhooks.postmark import PostmarkSecret, PostmarkWebhook
from translator.webhooks.sendgrid import SendGridSignature, SendGridWebhook
from translator.webhooks.ses import SesWebhook
from translator.webhooks.sns import SnsVerifier

__all__ = ["add_routes"]


def add_routes(app: web.Application, identity: IdentityStore, stubs: Stubs) -> None:
    """Serves POST /webhooks/ses, /webhooks/sendgrid and /webhooks/postmark on `app`.

    Raises ValueError for a setting that cannot work (a malformed key or host pattern), so that the
    translator does not start with a webhook that would refuse every call."""
    settings = identity.settings
    recipients = Recipients(ReturnPaths(settings.effective_bounce_domain(), settings.effective_token_secret()))
    sink = BounceSink(identity, stubs)
    limit = settings.webhook_max_body_bytes
    sns = SnsVerifier.from_settings(settings) if settings.ses_webhook_enabled else None
    ses = SesWebhook(sns, recipients, sink, limit)
    sendgrid = SendGridWebhook(SendGridSignature.from_settings(settings), recipients, sink, limit)
    postmark = PostmarkWebhook(PostmarkSecret.from_settings(settings), recipients, sink, limit)
    if sns is not None:

        async def close(_: web.Application) -> None:
            await sns.close()

        app.on_cleanup.append(close)
    app.router.add_post("/webhooks/ses", ses.handle)
    app.router.add_post("/webhooks/sendgrid", sendgrid.handle)
    app.router.add_post("/webhooks/postmark", postmark.handle)
