-- Tags and their assignments to campaigns. Campaign ids point into the campaign service's data,
-- so they carry no foreign key; the campaign.deleted consumer removes assignments of deleted campaigns.
CREATE TABLE tags (
    tag_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_user_id bigint      NOT NULL,
    name          text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    -- The case-folded name, computed by the service (Python casefold) so that uniqueness does not
    -- depend on the database's locale the way lower() does.
    name_key      text        NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    update_time   timestamptz NOT NULL DEFAULT now()
);

-- Names are unique per owner, case-insensitively; also serves ListTags' ordering.
CREATE UNIQUE INDEX tags_owner_name_key ON tags (owner_user_id, name_key);

CREATE TABLE campaign_tags (
    tag_id        bigint      NOT NULL REFERENCES tags (tag_id) ON DELETE CASCADE,
    campaign_id   bigint      NOT NULL,
    -- The tag's owner, so campaign-side lookups and campaign.deleted are scoped without a join.
    owner_user_id bigint      NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tag_id, campaign_id)
);

CREATE INDEX campaign_tags_campaign ON campaign_tags (campaign_id, owner_user_id);
