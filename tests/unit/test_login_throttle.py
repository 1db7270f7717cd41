"""Unit tests for translator.ratelimit.LoginThrottle: failed logins per username and per client address."""

from __future__ import annotations

import pytest

from translator.ratelimit import LoginThrottle, RateLimited


def throttle() -> LoginThrottle:
    return LoginThrottle(per_username=3, per_address=5, window=60.0)


def fail(logins: LoginThrottle, username: str, address: str, now: float, account: str = "user") -> None:
    logins.attempt(account, username, address, now)


def test_the_fourth_attempt_after_three_failures_of_a_username_waits_for_the_oldest_to_expire() -> None:
    logins = throttle()
    for second in (0.0, 10.0, 20.0):
        fail(logins, "ada", f"192.0.2.{int(second)}", second)
    with pytest.raises(RateLimited) as refused:
        logins.attempt("user", "  ADA ", "198.51.100.1", 30.0)
    assert refused.value.retry_after == 30
    # Refused attempts are not counted: once the first failure is out of the window, one more is allowed.
    logins.attempt("user", "ada", "198.51.100.1", 60.5)


def test_an_address_is_throttled_across_usernames_and_for_admins_too() -> None:
    logins = throttle()
    for n in range(5):
        fail(logins, f"guess{n}", "192.0.2.7", float(n))
    with pytest.raises(RateLimited):
        logins.attempt("admin", "root", "192.0.2.7", 6.0)
    logins.attempt("admin", "root", "192.0.2.8", 6.0)


def test_a_success_is_not_a_failure_and_clears_the_usernames_count_but_not_the_addresss() -> None:
    logins = throttle()
    fail(logins, "ada", "192.0.2.1", 0.0)
    fail(logins, "ada", "192.0.2.1", 1.0)
    moment = logins.attempt("user", "ada", "192.0.2.1", 2.0)
    logins.succeeded("user", "ada", "192.0.2.1", moment)
    for second in (3.0, 4.0):
        fail(logins, "ada", "192.0.2.1", second)
    # ada has 2 failures since the success (4 without it), so one more attempt is allowed.
    fail(logins, "ada", "192.0.2.2", 4.5)
    # The address has 4 failures (0, 1, 3, 4; the success not among them): the fifth fills it.
    fail(logins, "bob", "192.0.2.1", 5.0)
    with pytest.raises(RateLimited):
        logins.attempt("user", "carol", "192.0.2.1", 6.0)


def test_users_and_admins_of_one_name_are_counted_apart() -> None:
    logins = throttle()
    for second in (0.0, 1.0, 2.0):
        fail(logins, "root", f"192.0.2.{int(second)}", second, account="admin")
    with pytest.raises(RateLimited):
        logins.attempt("admin", "root", "192.0.2.9", 3.0)
    logins.attempt("user", "root", "192.0.2.9", 3.0)


def test_an_api_key_login_is_counted_by_address_only() -> None:
    logins = throttle()
    for n in range(5):
        fail(logins, "", "192.0.2.3", float(n))
    with pytest.raises(RateLimited):
        logins.attempt("user", "", "192.0.2.3", 5.0)
