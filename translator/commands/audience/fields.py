"""Rows for the custom field commands: customfield.create, customfield.update, customfields.delete and customfields.get.

Settings are legacy words both ways: FieldType "Drop down", ValidationMethod "Numbers and letters",
Visibility "User Only", IsRequired/IsUnique/IsGlobal "Yes" or "No" (as the legacy rows answer them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import field_mask_pb2
from herald.audience.v1 import audience_pb2

from services.common.flags import FALSE_STRINGS, TRUE_STRINGS
from translator.commands import (
    ERROR_TEXT,
    MAX_TEXT,
    Args,
    Command,
    Context,
    Param,
    Problems,
    flagged_fields,
    render_error_text,
    unary,
    validate_only,
)
from translator.commands.audience.legacy import ORDER_TYPE, SUBSCRIBER_LIST_ID, UNKNOWN_ENUM, scalar_text
from translator.params import ParamError, legacy_name

FIELD_TYPES = {
    "Single line": audience_pb2.CUSTOM_FIELD_TYPE_SINGLE_LINE,
    "Paragraph text": audience_pb2.CUSTOM_FIELD_TYPE_PARAGRAPH_TEXT,
    "Multiple choice": audience_pb2.CUSTOM_FIELD_TYPE_MULTIPLE_CHOICE,
    "Drop down": audience_pb2.CUSTOM_FIELD_TYPE_DROP_DOWN,
    "Checkboxes": audience_pb2.CUSTOM_FIELD_TYPE_CHECKBOXES,
    "Hidden field": audience_pb2.CUSTOM_FIELD_TYPE_HIDDEN_FIELD,
    "Date field": audience_pb2.CUSTOM_FIELD_TYPE_DATE_FIELD,
    "Time field": audience_pb2.CUSTOM_FIELD_TYPE_TIME_FIELD,
}
VALIDATION_METHODS = {
    "Disabled": audience_pb2.VALIDATION_METHOD_DISABLED,
    "Numbers": audience_pb2.VALIDATION_METHOD_NUMBERS,
    "Letters": audience_pb2.VALIDATION_METHOD_LETTERS,
    "Numbers and letters": audience_pb2.VALIDATION_METHOD_NUMBERS_AND_LETTERS,
    "Email address": audience_pb2.VALIDATION_METHOD_EMAIL_ADDRESS,
    "URL": audience_pb2.VALIDATION_METHOD_URL,
    "Date": audience_pb2.VALIDATION_METHOD_DATE,
    "Time": audience_pb2.VALIDATION_METHOD_TIME,
    "Custom": audience_pb2.VALIDATION_METHOD_CUSTOM,
}
VISIBILITIES = {
    "Public": audience_pb2.CUSTOM_FIELD_VISIBILITY_PUBLIC,
    "User Only": audience_pb2.CUSTOM_FIELD_VISIBILITY_USER_ONLY,
    "Hidden": audience_pb2.CUSTOM_FIELD_VISIBILITY_HIDDEN,
}
# DataType, the simplified spelling of customfield.create (5.9.4): (field type, validation method or None).
# "datetime" and "timestamp" name no type Herald has (code 7).
DATA_TYPES: Mapping[str, tuple[Any, Any]] = {
    "text": (audience_pb2.CUSTOM_FIELD_TYPE_SINGLE_LINE, None),
    "longtext": (audience_pb2.CUSTOM_FIELD_TYPE_PARAGRAPH_TEXT, None),
    "number": (audience_pb2.CUSTOM_FIELD_TYPE_SINGLE_LINE, audience_pb2.VALIDATION_METHOD_NUMBERS),
    "date": (audience_pb2.CUSTOM_FIELD_TYPE_DATE_FIELD, None),
    "time": (audience_pb2.CUSTOM_FIELD_TYPE_TIME_FIELD, None),
    "single-select": (audience_pb2.CUSTOM_FIELD_TYPE_DROP_DOWN, None),
    "multi-select": (audience_pb2.CUSTOM_FIELD_TYPE_CHECKBOXES, None),
}
FIELD_ORDER = {
    "fieldname": audience_pb2.CUSTOM_FIELD_ORDER_FIELD_NAME,
    "customfieldid": audience_pb2.CUSTOM_FIELD_ORDER_FIELD_CUSTOM_FIELD_ID,
    "fieldtype": audience_pb2.CUSTOM_FIELD_ORDER_FIELD_TYPE,
    "isrequired": audience_pb2.CUSTOM_FIELD_ORDER_FIELD_REQUIRED,
    "isunique": audience_pb2.CUSTOM_FIELD_ORDER_FIELD_UNIQUE,
    "visibility": audience_pb2.CUSTOM_FIELD_ORDER_FIELD_VISIBILITY,
    "isglobal": audience_pb2.CUSTOM_FIELD_ORDER_FIELD_GLOBAL,
}
TYPE_NAMES = {value: name for name, value in FIELD_TYPES.items()}
METHOD_NAMES = {value: name for name, value in VALIDATION_METHODS.items()}
VISIBILITY_NAMES = {value: name for name, value in VISIBILITIES.items()}
# Legacy parameter → the field the service reports it under.
FIELD_PATHS = {
    "subscriberlistid": "custom_field.list_id",
    "fieldname": "custom_field.name",
    "fieldtype": "custom_field.type",
    "datatype": "custom_field.type",
    "defaultvalue": "custom_field.default_value",
    "validationmethod": "custom_field.validation_method",
    "validationrule": "custom_field.validation_rule",
    "mergetagalias": "custom_field.merge_tag_alias",
    "optionlabel": "custom_field.options",
    "optionvalue": "custom_field.options",
    "optionselected": "custom_field.options",
    "visibility": "custom_field.visibility",
    "years": "custom_field.first_year",
    "customfieldid": "custom_field.custom_field_id",
}


def _enum(args: Args, name: str, values: Mapping[str, Any]) -> Any | None:
    """A legacy enum parameter's value (case-insensitively; "_" reads as a space); UNKNOWN_ENUM for a value
    outside it, which the service reports; None when not given."""
    text = args.str(name, max_len=100)
    if not text.strip():
        return None
    return {legacy_name(key): value for key, value in values.items()}.get(legacy_name(text), UNKNOWN_ENUM)


def yes_no(args: Args, name: str) -> bool | None:
    """IsRequired, IsUnique, IsGlobal: Yes or No (or a legacy boolean spelling); anything else is malformed."""
    raw = args.params.raw(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        return raw
    text = scalar_text(raw)
    word = (text or "").strip().lower()
    if word in TRUE_STRINGS:
        return True
    if word in FALSE_STRINGS:
        return False
    args.problems.append(ParamError(name, "malformed", f"{name} must be Yes or No"))
    return None


def _items(args: Args, name: str) -> list[str] | None:
    """OptionLabel, OptionValue, OptionSelected: an array (or a comma-separated string) of texts, positions
    kept; None when not given."""
    raw = args.params.raw(name)
    if raw is None:
        return None
    values = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, list) else None
    texts = [scalar_text(item) for item in values] if values is not None else None
    if texts is None or any(text is None for text in texts):
        args.problems.append(ParamError(name, "malformed", f"{name} must be an array of texts"))
        return None
    return [text or "" for text in texts]


def options(args: Args) -> list[audience_pb2.CustomFieldOption] | None:
    """The options of OptionLabel (the labels), OptionValue (the stored values, the labels when not given)
    and OptionSelected (option values, or positions in the arrays, of the pre-selected ones); None when
    OptionLabel is not given (an update keeps the options then)."""
    labels = _items(args, "optionlabel")
    values = _items(args, "optionvalue")
    selected = set(_items(args, "optionselected") or [])
    if labels is None:
        return None
    if values is None or not any(value.strip() for value in values):
        values = labels
    if len(values) != len(labels):
        args.problems.append(ParamError("optionvalue", "malformed", "OptionValue needs one value per OptionLabel"))
        return None
    return [
        audience_pb2.CustomFieldOption(
            label=label, value=value, selected=value in selected or str(index) in selected
        )
        for index, (label, value) in enumerate(zip(labels, values, strict=True))
    ]


def years(args: Args) -> tuple[int, int] | None:
    """Years "YYYY-YYYY": the range a Date field accepts; None when not given."""
    text = args.str("years", max_len=100).strip()
    if not text:
        return None
    first, _, last = text.partition("-")
    if not (first.strip().isdigit() and last.strip().isdigit()):
        args.problems.append(ParamError("years", "malformed", "Years must be YYYY-YYYY"))
        return None
    return int(first), int(last)


def _settings(args: Args, field: audience_pb2.CustomField, given: Callable[[str], bool]) -> list[str]:
    """Reads the settings both commands share into `field`; the update mask paths of those given."""
    paths: list[str] = []
    if given("defaultvalue"):
        field.default_value = args.str("defaultvalue", max_len=MAX_TEXT)
        paths.append("default_value")
    method = _enum(args, "validationmethod", VALIDATION_METHODS)
    if method is not None:
        field.validation_method = method
        paths.append("validation_method")
    if given("validationrule"):
        field.validation_rule = args.str("validationrule", max_len=MAX_TEXT)
        paths.append("validation_rule")
    if given("mergetagalias"):
        field.merge_tag_alias = args.str("mergetagalias", max_len=MAX_TEXT)
        paths.append("merge_tag_alias")
    chosen = options(args)
    if chosen is not None:
        field.options.extend(chosen)
        paths.append("options")
    visibility = _enum(args, "visibility", VISIBILITIES)
    if visibility is not None:
        field.visibility = visibility
        paths.append("visibility")
    for name, attribute in (("isrequired", "required"), ("isunique", "unique"), ("isglobal", "is_global")):
        flag = yes_no(args, name)
        if flag is not None:
            setattr(field, attribute, flag)
            paths.append(attribute)
    span = years(args)
    if span is not None:
        field.first_year, field.last_year = span
        paths.extend(("first_year", "last_year"))
    return paths


def _given(args: Args) -> Callable[[str], bool]:
    return lambda name: args.params.raw(name) is not None


async def create_field(args: Args, ctx: Context) -> dict[str, Any]:
    field = audience_pb2.CustomField(
        list_id=args.int("subscriberlistid", required=True, min=1),
        name=args.str("fieldname", max_len=MAX_TEXT),
    )
    preset = args.str("presetname", max_len=100)
    if preset.strip():
        args.problems.append(ParamError("presetname", "malformed", "Herald has no custom field presets"))
    _settings(args, field, _given(args))
    data_type = args.str("datatype", max_len=100).strip().lower()
    field_type = _enum(args, "fieldtype", FIELD_TYPES)
    if data_type:
        if data_type not in DATA_TYPES:
            args.problems.append(ParamError("datatype", "malformed", f"DataType {data_type!r} is not served"))
        else:
            # DataType overrides FieldType, and "number" the validation method (5.9.4).
            field.type, method = DATA_TYPES[data_type]
            if method is not None:
                field.validation_method = method
    elif field_type is not None:
        field.type = field_type
    elif "fieldtype" not in {p.name for p in args.problems}:
        args.problems.append(ParamError("fieldtype", "missing", "FieldType is required"))
    if not field.name.strip() and "fieldname" not in {p.name for p in args.problems}:
        args.problems.append(ParamError("fieldname", "missing", "FieldName is required"))
    request = audience_pb2.CreateCustomFieldRequest(custom_field=field)
    method_of = ctx.stubs.audience.CreateCustomField
    if args.problems:
        request.validate_only = True
        failure = await validate_only(ctx, method_of, request, judged_fields=flagged_fields(args, FIELD_PATHS))
        raise Problems(args.problems, failure)
    created = await ctx.call(method_of, request)
    return {"ErrorText": "", "CustomFieldID": created.custom_field_id}


async def update_field(args: Args, ctx: Context) -> dict[str, Any]:
    field = audience_pb2.CustomField(
        custom_field_id=args.int("customfieldid", required=True, min=1),
        name=args.str("fieldname", max_len=MAX_TEXT),
    )
    paths = ["name", "type", *_settings(args, field, _given(args))]
    field_type = _enum(args, "fieldtype", FIELD_TYPES)
    if field_type is None:
        if "fieldtype" not in {p.name for p in args.problems}:
            args.problems.append(ParamError("fieldtype", "missing", "FieldType is required"))
    else:
        field.type = field_type
    if not field.name.strip() and "fieldname" not in {p.name for p in args.problems}:
        args.problems.append(ParamError("fieldname", "missing", "FieldName is required"))
    # SubscriberListID may only repeat the field's list (5.9.3); a value that is no list ID is passed over,
    # as the legacy server did.
    raw_list = args.params.raw("subscriberlistid")
    list_text = scalar_text(raw_list) if raw_list is not None else None
    if list_text and list_text.strip().isdigit() and len(list_text.strip()) <= 18 and int(list_text) > 0:
        field.list_id = int(list_text)
        paths.append("list_id")
    request = audience_pb2.UpdateCustomFieldRequest(
        custom_field=field, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    method = ctx.stubs.audience.UpdateCustomField
    if args.problems:
        request.validate_only = True
        if field.custom_field_id:
            judged = flagged_fields(args, FIELD_PATHS)
            failure = await validate_only(ctx, method, request, judged_fields=judged)
            raise Problems(args.problems, failure)
        raise Problems(args.problems)
    await ctx.call(method, request)
    return {"ErrorText": ""}


def delete_fields(args: Args) -> audience_pb2.DeleteCustomFieldsRequest:
    return audience_pb2.DeleteCustomFieldsRequest(custom_field_ids=args.int_list("customfields", required=True))


def yes(flag: bool) -> str:
    return "Yes" if flag else "No"


def render_field(field: audience_pb2.CustomField) -> dict[str, Any]:
    return {
        "CustomFieldID": field.custom_field_id,
        "RelListID": field.list_id,
        "RelOwnerUserID": field.owner_user_id,
        "FieldName": field.name,
        "FieldType": TYPE_NAMES.get(field.type, ""),
        "FieldDefaultValue": field.default_value,
        "ValidationMethod": METHOD_NAMES.get(field.validation_method, ""),
        "ValidationRule": field.validation_rule,
        "MergeTagAlias": field.merge_tag_alias,
        "IsRequired": yes(field.required),
        "IsUnique": yes(field.unique),
        "Visibility": VISIBILITY_NAMES.get(field.visibility, ""),
        "IsGlobal": yes(field.is_global),
        "Options": [{"Label": o.label, "Value": o.value, "Selected": o.selected} for o in field.options],
        "Years": f"{field.first_year}-{field.last_year}" if field.first_year else "",
        # The personalization tags that show the field's value.
        "PersonalizationTags": [
            f"%Subscriber:CustomField{field.custom_field_id}%",
            *([f"%Subscriber:{field.merge_tag_alias}%"] if field.merge_tag_alias else []),
        ],
    }


def list_fields(args: Args) -> audience_pb2.ListCustomFieldsRequest:
    order = str(args.params.raw("orderfield") or "").replace(" ", "").lower()
    return audience_pb2.ListCustomFieldsRequest(
        list_id=args.int("subscriberlistid", required=True, min=1),
        include_global=args.bool("returnglobalcustomfields", default=False),
        order_by=FIELD_ORDER.get(order, audience_pb2.CUSTOM_FIELD_ORDER_FIELD_NAME),
        descending=str(args.params.raw("ordertype") or "").strip().upper() == "DESC",
    )


def render_fields(response: audience_pb2.ListCustomFieldsResponse, args: Args) -> dict[str, Any]:
    rows = [render_field(field) for field in response.custom_fields]
    return {"ErrorText": "", "TotalFieldCount": len(rows), "CustomFields": rows}


# Codes both commands share, Herald's own from 15 on (no legacy code says these).
SETTING_CODES = {
    "VALIDATION_RULE_REQUIRED": 4,
    "CUSTOM_FIELD_TYPE_INVALID": 7,
    "visibility": 9,
    "VISIBILITY_INVALID": 9,
    "isrequired": 10,
    "isunique": 11,
    "isglobal": 12,
    "validationrule": 15,
    "VALIDATION_RULE_INVALID": 15,
    "optionlabel": 16,
    "optionvalue": 16,
    "optionselected": 16,
    "years": 16,
    "defaultvalue": 16,
    "CUSTOM_FIELD_OPTIONS_INVALID": 16,
    "DEFAULT_VALUE_INVALID": 16,
    "YEARS_INVALID": 16,
    "TEXT_INVALID": 17,
    "MERGE_TAG_ALIAS_TAKEN": 1000,
    "mergetagalias": 1001,
    "MERGE_TAG_ALIAS_INVALID": 1001,
    "MERGE_TAG_ALIAS_RESERVED": 1002,
}
SETTING_TEXTS = {
    4: "Missing validation rule",
    7: "Invalid field type",
    9: "Invalid visibility value",
    10: "Invalid IsRequired value",
    11: "Invalid IsUnique value",
    12: "Invalid IsGlobal value",
    15: "Invalid validation rule (an RE2 regular expression, for the Custom method only)",
    16: "Invalid options, years or default value for the field type",
    17: "Field name or text too long (250 characters) or with NUL characters",
    1000: "Merge tag alias code has been set for another custom field",
    1001: "Merge tag alias code includes invalid characters",
    1002: "Merge tag alias cannot use a reserved subscriber field name",
}

# Declared parameters and answers (the OpenAPI document; handlers read nothing else) ------------

SETTING_PARAMS = (
    Param("DefaultValue", "string", "What a new subscriber gets when no value is given; at most 250 characters"),
    Param(
        "ValidationMethod",
        "string",
        "How values are validated",
        default="Disabled",
        enum=tuple(VALIDATION_METHODS),
    ),
    Param("ValidationRule", "string", "The Custom method's regular expression (RE2; /pattern/flags allowed)"),
    Param("MergeTagAlias", "string", "Subscriber:<alias> in personalization: letters, digits, _ . - (64)"),
    Param("OptionLabel", "strings", "The options' labels (choice types)"),
    Param("OptionValue", "strings", "The options' stored values, one per label (default: the labels)"),
    Param("OptionSelected", "strings", "Values (or positions) of the options selected by default"),
    Param("IsRequired", "string", "Yes or No", default="No", enum=("Yes", "No")),
    Param(
        "IsUnique",
        "string",
        "Yes or No: no two subscribers of a list share a value",
        default="No",
        enum=("Yes", "No"),
    ),
    Param("Visibility", "string", "Where the field shows", default="User Only", enum=tuple(VISIBILITIES)),
    Param("IsGlobal", "string", "Yes: every list of the owner sees the field", default="No", enum=("Yes", "No")),
    Param("Years", "string", "YYYY-YYYY: the years a Date field accepts"),
)
FIELD_ROW = Param(
    "CustomFields",
    "array",
    "Field rows: CustomFieldID, RelListID (0 for a global field), RelOwnerUserID, FieldName, FieldType, "
    "FieldDefaultValue, ValidationMethod, ValidationRule, MergeTagAlias, IsRequired, IsUnique, Visibility, "
    "IsGlobal (Yes/No), Options [{Label, Value, Selected}], Years, PersonalizationTags",
    required=True,
)

ROWS = [
    Command(
        "customfield.create",
        create_field,
        permission="CustomField.Create",
        shape="list",
        codes={
            "subscriberlistid:missing": 1,
            "LIST_ID_REQUIRED": 1,
            "fieldname": 2,
            "CUSTOM_FIELD_NAME_REQUIRED": 2,
            "fieldtype:missing": 3,
            "presetname": 5,
            "fieldtype:malformed": 7,
            "datatype": 7,
            "subscriberlistid:malformed": 8,
            "LIST_NOT_FOUND": 8,
            "validationmethod": 13,
            "VALIDATION_METHOD_INVALID": 13,
            **SETTING_CODES,
        },
        texts={
            1: "Missing subscriber list id",
            2: "Missing field name",
            3: "Missing field type",
            5: "Invalid preset name",
            8: "Invalid subscriber list id",
            13: "Invalid validation method",
            **SETTING_TEXTS,
        },
        cause_texts={"presetname": "Invalid preset name: Herald has no custom field presets"},
        v1_alias=False,
        summary="Define a custom field of a list (or a global one, IsGlobal)",
        params=(
            SUBSCRIBER_LIST_ID,
            Param("FieldName", "string", "The field's name (250 characters)"),
            Param("FieldType", "string", "The field's type (or give DataType)", enum=tuple(FIELD_TYPES)),
            Param(
                "DataType",
                "string",
                "Overrides FieldType (number: Single line with Numbers)",
                enum=tuple(DATA_TYPES),
            ),
            Param("PresetName", "string", "Not served: Herald has no presets (code 5)"),
            *SETTING_PARAMS,
        ),
        returns=(ERROR_TEXT, Param("CustomFieldID", "integer", "The new field", required=True)),
    ),
    Command(
        "customfield.update",
        update_field,
        permission="CustomField.Update",
        shape="list",
        codes={
            "customfieldid:missing": 1,
            "fieldname": 2,
            "CUSTOM_FIELD_NAME_REQUIRED": 2,
            "fieldtype:missing": 3,
            "customfieldid:malformed": 6,
            "CUSTOM_FIELD_NOT_FOUND": 6,
            "fieldtype:malformed": 7,
            "validationmethod": 8,
            "VALIDATION_METHOD_INVALID": 8,
            "GLOBAL_FIELD_REQUIRED": 12,
            "LIST_NOT_FOUND": 13,
            "LIST_CHANGE_REFUSED": 14,
            **SETTING_CODES,
        },
        texts={
            1: "Missing custom field id",
            2: "Missing field name",
            3: "Missing field type",
            6: "Invalid custom field id",
            8: "Invalid validation method",
            13: "Invalid subscriber list id (the list does not exist or does not belong to you)",
            14: "Custom field list cannot be changed. Create the custom field on the target list instead.",
            **SETTING_TEXTS,
        },
        cause_texts={"GLOBAL_FIELD_REQUIRED": "Invalid IsGlobal value: a global field cannot become a list field"},
        v1_alias=False,
        summary="Change a custom field (options are kept unless OptionLabel is sent)",
        params=(
            Param("CustomFieldID", "integer", "The field", required=True),
            Param("FieldName", "string", "The field's name (250 characters)", required=True),
            Param("FieldType", "string", "The field's type", required=True, enum=tuple(FIELD_TYPES)),
            Param("SubscriberListID", "integer", "The field's own list, if sent (it cannot change)"),
            *SETTING_PARAMS,
        ),
        returns=(ERROR_TEXT,),
    ),
    Command(
        "customfields.delete",
        unary(lambda s: s.audience.DeleteCustomFields, delete_fields, render_error_text),
        permission="CustomFields.Delete",
        shape="list",
        codes={"customfields": 1, "CUSTOM_FIELD_IDS_REQUIRED": 1},
        texts={1: "Custom field ids are missing"},
        v1_alias=False,
        summary="Delete custom fields and every subscriber's value of them (unknown IDs are passed over)",
        params=(
            Param("CustomFields", "integers", "Custom field IDs, comma-separated or an array", required=True),
        ),
        returns=(ERROR_TEXT,),
    ),
    Command(
        "customfields.get",
        unary(lambda s: s.audience.ListCustomFields, list_fields, render_fields),
        permission="CustomFields.Get",
        shape="list",
        codes={
            "subscriberlistid:missing": 1,
            "LIST_ID_REQUIRED": 1,
            "subscriberlistid:malformed": 2,
            "LIST_NOT_FOUND": 2,
        },
        texts={1: "Missing subscriber list id", 2: "Invalid subscriber list id"},
        v1_alias=False,
        summary="The custom fields of a list (with ReturnGlobalCustomFields, the owner's global ones too)",
        params=(
            SUBSCRIBER_LIST_ID,
            Param("ReturnGlobalCustomFields", "boolean", "Also the owner's global fields", default=False),
            Param(
                "OrderField",
                "string",
                "Sort column; anything else is FieldName",
                default="FieldName",
                enum=(
                    "FieldName",
                    "CustomFieldID",
                    "FieldType",
                    "IsRequired",
                    "IsUnique",
                    "Visibility",
                    "IsGlobal",
                ),
            ),
            ORDER_TYPE,
        ),
        returns=(
            ERROR_TEXT,
            Param("TotalFieldCount", "integer", "How many fields", required=True),
            FIELD_ROW,
        ),
    ),
]
