"""The audience domain and store are packages of small modules; the names callers use stay where they were.

services/audience/domain.py and store.py were split into packages (one private module per part)
whose __init__ re-exports every public name, so `domain.X` and `store.X` keep working. These are the
names the single modules had: dropping a re-export fails here, not in a service at run time.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from services.audience import domain, store

DOMAIN_NAMES = """
ADMIN_CANNOT_OWN BOUNCE_TYPES BOUNCE_TYPE_INVALID Bundle CHUNK_SIZE_INVALID CONFIRMATION_EMAIL_CONTENT_TYPE_INVALID
CONFIRMATION_EMAIL_FAILED CONFIRMATION_EMAIL_FIELD_REQUIRED CONFIRMATION_EMAIL_HTML_REQUIRED
CONFIRMATION_EMAIL_MODE_INVALID CONFIRMATION_EMAIL_PLAIN_REQUIRED CONFIRMATION_EMAIL_TEMPLATE_REQUIRED
CUSTOM_FIELD_INVALID ConfirmationEmail Criterion DEFAULT_CHUNK EMAIL_ADDRESS_INVALID EMAIL_ADDRESS_REQUIRED
EMAIL_NOT_FOUND IP_ADDRESS_INVALID IP_ADDRESS_REQUIRED LIST_IDS_REQUIRED LIST_ID_REQUIRED LIST_NAME_REQUIRED
LIST_NAME_TOO_LONG LIST_NOT_FOUND MAX_CHUNK MAX_CUSTOM_FIELDS MAX_CUSTOM_VALUE MAX_EMAIL_LENGTH MAX_NAME
MAX_SOURCE_REF MAX_SUPPRESSIONS_PER_CALL MAX_TEXT MailingList NewList NewSegment NewSubscriber OPT_IN_MODES
OPT_IN_MODE_INVALID OPT_IN_TIME_REQUIRED ORDER_COLUMNS PAGE_INVALID RANDOMNESS_AUDIENCE_SIZE_INVALID
RULES_BUNDLE_INVALID RULES_INVALID RULE_TYPE_UNSUPPORTED SEARCH_COLUMNS SEARCH_FIELD_INVALID SEGMENT_IDS_REQUIRED
SEGMENT_ID_INVALID SEGMENT_NAME_REQUIRED SEGMENT_NAME_TOO_LONG SEGMENT_NOT_FOUND SEGMENT_OPERATOR_INVALID
SEGMENT_OPERATOR_REQUIRED SOURCES STATUSES STATUS_INVALID SUBSCRIBER_ALREADY_EXISTS SUBSCRIBER_ALREADY_UNSUBSCRIBED
SUBSCRIBER_IDS_INVALID SUBSCRIBER_NOT_FOUND SUBSCRIBER_SELECTOR_REQUIRED SUBSCRIBER_UNSUBSCRIBED SUBSCRIBING
SUBSCRIPTION_IP_INVALID SegmentRecord Selection Source SubscriberRecord TARGETING_INVALID TEXT_INVALID Targeting
UNSUBSCRIBING UNSUBSCRIPTION_IP_INVALID check_confirmation_email check_custom_fields check_email check_list_rules
check_page check_segment_references chunk_size confirmation_email_failed default_confirmation_email_name
duplicate_verdict email_key is_ip_address list_not_found normalise_email normalise_source order_column
owner_of_new owner_scope parse_bundle rules_selection search_column segment_not_found sources_not_found
subscriber_exists subscriber_not_found suppression_keys unique_ids unique_ids_str unowned_sources
unsubscribe_selection validate_ids validate_list_id validate_new_list validate_new_segment validate_new_subscriber
validate_targeting
""".split()

STORE_NAMES = """
LIST_ORDER RecipientQuery RecipientRow SCHEMA added_suppression_count custom_fields_of deleted_list_count
deleted_segment_count deleted_subscriber_count existing_subscriber inserted_list inserted_segment
inserted_subscriber_id is_suppressed list_by_id list_with_confirmation_email lists lists_by_id lists_page
member_count metadata recipient_count recipient_rows segments segments_containing segments_of_lists
selected_statuses subscriber_by subscribers subscribers_page suppressions unsubscribable_count
unsubscribed_subscribers unsuppressed_count updated_subscriber_id
""".split()


@pytest.mark.parametrize(("package", "names"), [(domain, DOMAIN_NAMES), (store, STORE_NAMES)])
def test_every_name_of_the_former_module_is_still_exported(package: object, names: list[str]) -> None:
    exported = set(getattr(package, "__all__", ()))
    assert [name for name in names if name not in exported or not hasattr(package, name)] == []


@pytest.mark.parametrize("package", [domain, store])
def test_every_exported_name_exists(package: object) -> None:
    assert [name for name in getattr(package, "__all__", ()) if not hasattr(package, name)] == []


def test_the_store_tables_are_tables_not_the_modules_of_the_same_part() -> None:
    # store/_lists.py and the `lists` table share a part's name: the package must hand out the table.
    for name in ("lists", "subscribers", "segments", "suppressions"):
        assert isinstance(getattr(store, name), sa.Table), name
