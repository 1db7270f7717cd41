"""The legacy envelope as XML: well-formed whatever text it carries."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from hypothesis import given
from hypothesis import strategies as st

from translator.envelope import to_xml


def test_xml_answers_carry_text_in_cdata_and_lists_as_numbered_nodes() -> None:
    root = ElementTree.fromstring(to_xml({"Success": True, "Tags": [{"Tag": "<b>&"}]}).encode())
    assert root.tag == "response" and root.findtext("Success") == "true"
    assert root.findtext("Tags/node_0/Tag") == "<b>&"


def test_characters_xml_cannot_carry_become_replacement_characters() -> None:
    root = ElementTree.fromstring(to_xml({"CampaignName": "a\x00b\x1bc\ud800d]]>e"}).encode("utf-8"))
    assert root.findtext("CampaignName") == "a\ufffdb\ufffdc\ufffdd]]>e"


def test_keys_that_are_no_xml_names_become_nodes() -> None:
    root = ElementTree.fromstring(to_xml({"CustomFields": {"12": "x", "a b": "y", "": "z"}}).encode())
    fields = root.find("CustomFields")
    assert fields is not None and [child.tag for child in fields] == ["node_12", "a_b", "node_"]


@given(
    st.recursive(
        st.text() | st.integers() | st.booleans() | st.none(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=10,
    )
)
def test_any_answer_is_well_formed_xml(value: object) -> None:
    ElementTree.fromstring(to_xml({"Success": False, "Value": value}).encode("utf-8"))
