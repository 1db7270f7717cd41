"""Row for campaigns.archive.geturl: the public archive URL of a tag, optionally storing the tag's HTML template."""

from __future__ import annotations

from typing import Any

from herald.tag.v1 import tag_pb2

from translator.commands import Args, Command, Context, Param, Problems, validate_only


def archive_url(public_url: str, tag_id: int) -> str:
    """RULINGS 12: the archive page of a tag, whatever template it is rendered into."""
    return f"{public_url}/archive/tag/{tag_id}"


async def get_url(args: Args, ctx: Context) -> dict[str, Any]:
    tag_id = args.int("tagid", required=True, min=1)
    template_url = args.str("templateurl")
    if not tag_id:
        # A missing or malformed TagID is code 1, the first check, whatever else is wrong.
        raise Problems(args.problems)
    # The tag is looked up before the template is stored: "not found" (2) comes before a bad
    # TemplateURL (3) in the order of checks, while the service checks the URL first.
    failure = await validate_only(ctx, ctx.stubs.tag.GetTag, tag_pb2.GetTagRequest(tag_id=tag_id))
    if failure is not None or args.problems:
        raise Problems(args.problems, failure)
    if template_url:
        request = tag_pb2.SetArchiveTemplateRequest(tag_id=tag_id, archive_template_url=template_url)
        await ctx.call(ctx.stubs.tag.SetArchiveTemplate, request)
    return {"URL": archive_url(ctx.public_url, tag_id)}


ROWS = [
    Command(
        "campaigns.archive.geturl",
        get_url,
        permission="Campaigns.Get",
        shape="int",
        codes={
            "tagid": 1,
            "TAG_ID_REQUIRED": 1,
            "TAG_NOT_FOUND": 2,
            # Herald's extension (RULINGS 12): the seed lists no code for a malformed TemplateURL.
            "templateurl": 3,
            "TEMPLATE_URL_INVALID": 3,
        },
        texts={
            1: "Missing required parameter (TagID)",
            2: "Tag not found or doesn't belong to user",
            3: "Invalid TemplateURL (must be an absolute http or https URL)",
        },
        summary="The public archive page of a tag's sent campaigns; optionally store the HTML template it is shown in",
        params=(
            Param("TagID", "integer", "ID of the tag for the archive URL", required=True),
            Param(
                "TemplateURL",
                "string",
                "An absolute http(s) URL of an HTML template with %Archive:Campaigns% where the list goes",
                format="uri",
            ),
        ),
        returns=(Param("URL", "string", "<public URL>/archive/tag/<TagID>", required=True, format="uri"),),
    ),
]
