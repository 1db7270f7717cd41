"""Unit tests for translator.forwarded.TrustedProxies: whose X-Forwarded-For names the client."""

from __future__ import annotations

import pytest

from translator.forwarded import TrustedProxies


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/8, 192.168.1.1")
    assert proxies.client("203.0.113.9", ["198.51.100.1"]) == "203.0.113.9"
    assert proxies.client("10.1.2.3", ["198.51.100.1"]) == "198.51.100.1"
    # Read from the right, past every trusted proxy, to the first address no trusted proxy added.
    assert proxies.client("10.1.2.3", ["6.6.6.6, 198.51.100.1, 192.168.1.1"]) == "198.51.100.1"
    assert proxies.client("10.1.2.3", ["6.6.6.6", "198.51.100.1"]) == "198.51.100.1"
    # Garbage stops the walk at the last trusted hop; no header leaves the proxy itself.
    assert proxies.client("10.1.2.3", ["198.51.100.1, not-an-ip"]) == "10.1.2.3"
    assert proxies.client("10.1.2.3", []) == "10.1.2.3"
    assert TrustedProxies.parse("").client("10.1.2.3", ["198.51.100.1"]) == "10.1.2.3"


def test_a_trusted_proxy_setting_that_is_no_address_is_refused() -> None:
    with pytest.raises(ValueError, match="'ingress'"):
        TrustedProxies.parse("10.0.0.0/8, ingress")
