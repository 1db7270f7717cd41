"""The tag service's view of the campaign service: checking that campaigns exist and belong to a tag's owner."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from herald.campaign.v1 import campaign_pb2, campaign_pb2_grpc

from services.common import grpcutil
from services.tag import domain


class CampaignDirectory:
    """Asks the campaign service (with the caller's token and deadline) which campaigns exist."""

    def __init__(self, target: str) -> None:
        self._channel = grpcutil.channel(target)
        self._stub = campaign_pb2_grpc.CampaignServiceStub(self._channel)

    async def require_campaigns_of(self, owner_user_id: int, campaign_ids: Sequence[int]) -> None:
        """Raises CAMPAIGN_NOT_FOUND naming every campaign that is missing or not the owner's."""
        request = campaign_pb2.BatchGetCampaignsRequest(campaign_ids=campaign_ids)
        try:
            response = await self._stub.BatchGetCampaigns(request)
        except grpc.aio.AioRpcError as exc:
            translated = _translated(exc, campaign_ids)
            if translated is exc:
                raise
            raise translated from exc
        # The campaign service already scopes a user's call; the owner check matters for an
        # admin caller, whose token sees every campaign but whose tag belongs to one user.
        owned = {c.campaign_id for c in response.campaigns if c.owner_user_id == owner_user_id}
        missing = [campaign_id for campaign_id in campaign_ids if campaign_id not in owned]
        if missing:
            raise domain.campaigns_not_found(missing)

    async def close(self) -> None:
        await self._channel.close()


def _translated(error: grpc.aio.AioRpcError, campaign_ids: Sequence[int]) -> Exception:
    """Our own error for the campaign service's NOT_FOUND and UNAVAILABLE; other statuses pass through as they are."""
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return domain.campaign_service_unavailable(error.details() or "")
    if error.code() != grpc.StatusCode.NOT_FOUND:
        return error
    failure = grpcutil.decode_error(error)
    descriptions = [v.description for v in failure.violations if v.reason == domain.CAMPAIGN_NOT_FOUND]
    missing = domain.ids_named_in(descriptions or [failure.message], campaign_ids)
    if missing:
        return domain.campaigns_not_found(missing)
    # The campaign service did not say which ids; pass on what it did say rather than guess.
    return domain.campaigns_not_found([], failure.message or "campaigns not found")
