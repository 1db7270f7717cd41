"""Rows for the tag commands (tags.get, tag.create, tag.update, tags.delete, tag.assign/unassign)."""

from __future__ import annotations

from typing import Any

from herald.tag.v1 import tag_pb2

from translator.commands import ERROR_TEXT, Args, Command, Param, render_error_text, unary

NAME_CODES = {"TAG_NAME_INVALID": 3, "TAG_NAME_EMPTY": 4}
NAME_TEXTS = {
    3: "Invalid tag format (only letters, numbers, spaces, hyphens and underscores allowed)",
    4: "Tag cannot be empty after trimming whitespace",
}


def render_tag(tag: tag_pb2.Tag) -> dict[str, Any]:
    return {"TagID": tag.tag_id, "Tag": tag.name, "RelOwnerUserID": tag.owner_user_id}


def list_tags(args: Args) -> tag_pb2.ListTagsRequest:
    return tag_pb2.ListTagsRequest()


def render_tags(response: tag_pb2.ListTagsResponse, args: Args) -> dict[str, Any]:
    return {"ErrorText": "", "TotalTagCount": len(response.tags), "Tags": [render_tag(t) for t in response.tags]}


def create_tag(args: Args) -> tag_pb2.CreateTagRequest:
    return tag_pb2.CreateTagRequest(name=args.str("tag", required=True, max_len=1000))


def render_created(response: tag_pb2.Tag, args: Args) -> dict[str, Any]:
    return {"ErrorText": "", "TagID": response.tag_id}


def update_tag(args: Args) -> tag_pb2.UpdateTagRequest:
    return tag_pb2.UpdateTagRequest(
        tag_id=args.int("tagid", required=True, min=1), name=args.str("tag", required=True, max_len=1000)
    )


def delete_tags(args: Args) -> tag_pb2.DeleteTagsRequest:
    return tag_pb2.DeleteTagsRequest(tag_ids=args.int_list("tags", required=True))


def assign(args: Args) -> tag_pb2.AssignTagRequest:
    return tag_pb2.AssignTagRequest(
        tag_id=args.int("tagid", required=True, min=1), campaign_ids=args.int_list("campaignids", required=True)
    )


def unassign(args: Args) -> tag_pb2.UnassignTagRequest:
    return tag_pb2.UnassignTagRequest(
        tag_id=args.int("tagid", required=True, min=1), campaign_ids=args.int_list("campaignids", required=True)
    )


ASSIGN_CODES = {
    "tagid": 1,
    "TAG_ID_REQUIRED": 1,
    "TAG_NOT_FOUND": 1,
    "campaignids": 2,
    "CAMPAIGN_IDS_REQUIRED": 2,
    "CAMPAIGN_IDS_INVALID": 2,
    "CAMPAIGN_NOT_FOUND": 2,
}
ASSIGN_TEXTS = {1: "Missing or unknown TagID", 2: "Missing or invalid CampaignIDs"}

# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

TAG_NAME = "Tag name: letters, digits, spaces, hyphens and underscores, unique per user (case-insensitive)"
TAG_ID = Param("TagID", "integer", "ID of the tag", required=True)
CAMPAIGN_IDS = Param("CampaignIDs", "integers", "Campaign IDs, comma-separated or an array", required=True)
TAGS_GET_RETURNS = (
    ERROR_TEXT,
    Param("TotalTagCount", "integer", "Number of tags", required=True),
    Param(
        "Tags",
        "array",
        "The caller's tags",
        required=True,
        fields=(
            Param("TagID", "integer", required=True),
            Param("Tag", "string", required=True),
            Param("RelOwnerUserID", "integer", required=True),
        ),
    ),
)

ROWS = [
    Command(
        "tags.get",
        unary(lambda s: s.tag.ListTags, list_tags, render_tags),
        v1_alias=False,
        summary="List the caller's tags",
        returns=TAGS_GET_RETURNS,
    ),
    Command(
        "tag.create",
        unary(lambda s: s.tag.CreateTag, create_tag, render_created),
        shape="int",
        codes={"tag": 1, "tag:malformed": 3, "TAG_NAME_REQUIRED": 1, "TAG_ALREADY_EXISTS": 2, **NAME_CODES},
        texts={1: "Missing required parameter (Tag)", 2: "Tag already exists in the system", **NAME_TEXTS},
        v1_alias=False,
        summary="Create a tag",
        params=(Param("Tag", "string", TAG_NAME, required=True),),
        returns=(ERROR_TEXT, Param("TagID", "integer", "ID of the new tag", required=True)),
    ),
    Command(
        "tag.update",
        unary(lambda s: s.tag.UpdateTag, update_tag, render_error_text),
        shape="list",
        codes={
            "tagid": 1,
            "TAG_ID_REQUIRED": 1,
            "TAG_NOT_FOUND": 1,
            "tag": 2,
            "tag:malformed": 3,
            "TAG_NAME_REQUIRED": 2,
            "TAG_ALREADY_EXISTS": 2,
            **NAME_CODES,
        },
        texts={
            1: "Missing or unknown TagID",
            2: "Missing Tag, or a tag with this name already exists",
            **NAME_TEXTS,
        },
        v1_alias=False,
        summary="Rename a tag",
        params=(TAG_ID, Param("Tag", "string", "The new name. " + TAG_NAME, required=True)),
        returns=(ERROR_TEXT,),
    ),
    Command(
        "tags.delete",
        unary(lambda s: s.tag.DeleteTags, delete_tags, render_error_text),
        shape="list",
        codes={"tags": 1, "TAG_IDS_REQUIRED": 1},
        texts={1: "Missing required parameter (Tags)"},
        v1_alias=False,
        summary="Delete tags (unknown and foreign IDs are ignored)",
        params=(Param("Tags", "integers", "Tag IDs, comma-separated or an array", required=True),),
        returns=(ERROR_TEXT,),
    ),
    Command(
        "tag.assigntocampaigns",
        unary(lambda s: s.tag.AssignTag, assign, render_error_text),
        permission="Campaigns.Get",
        shape="list",
        codes=ASSIGN_CODES,
        texts=ASSIGN_TEXTS,
        v1_alias=False,
        summary="Assign a tag to campaigns",
        params=(TAG_ID, CAMPAIGN_IDS),
        returns=(ERROR_TEXT,),
    ),
    Command(
        "tag.unassignfromcampaigns",
        unary(lambda s: s.tag.UnassignTag, unassign, render_error_text),
        permission="Campaigns.Get",
        shape="list",
        codes=ASSIGN_CODES,
        texts=ASSIGN_TEXTS,
        v1_alias=False,
        summary="Remove a tag from campaigns",
        params=(TAG_ID, CAMPAIGN_IDS),
        returns=(ERROR_TEXT,),
    ),
]
