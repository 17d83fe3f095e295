"""Timing: profile defaults, overrides, spans, deterministic picks; quotas; networking."""

from __future__ import annotations

import dataclasses

import pytest

from hyperplane.model import timing

DAY = 86400.0


def test_fast_is_the_default_profile() -> None:
    got = timing.timing({})
    assert got == timing.timing({"timing": {"profile": "fast"}})
    assert got == timing.timing({"timing": None})
    assert got == timing.timing({"timing": {"profile": None}})
    assert got == timing.timing({"timing": {"eni_create": None}})
    assert got == timing.Timing("fast", (1.0, 1.0), (3.0, 3.0), (14 * DAY, 14 * DAY),
                                (300.0, 300.0), (1.0, 1.0), (7200.0, 7200.0))


def test_aws_profile() -> None:
    got = timing.timing({"timing": {"profile": "aws"}})
    assert got == timing.Timing("aws", (60.0, 90.0), (60.0, 1200.0), (14 * DAY, 14 * DAY),
                                (300.0, 900.0), (10.0, 10.0), (7200.0, 14400.0))


def test_every_profile_sets_every_key() -> None:
    for profile in timing.PROFILES.values():
        assert set(profile) == set(timing.KEYS)
    assert timing.KEYS == tuple(f.name for f in dataclasses.fields(timing.Timing))[1:]


def test_explicit_keys_override_the_profile() -> None:
    got = timing.timing({"timing": {"profile": "aws", "eni_create": "5s",
                                    "env_idle": ["1m", "2m"], "function_idle": 3600}})
    assert got.profile == "aws"
    assert got.eni_create == (5.0, 5.0)
    assert got.env_idle == (60.0, 120.0)
    assert got.function_idle == (3600.0, 3600.0)
    assert got.eni_delete == (60.0, 1200.0)  # the profile's
    assert timing.timing({"timing": {"eni_delete": "250ms"}}).eni_delete == (0.25, 0.25)


def test_timing_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        timing.timing({}).eni_create = (0.0, 0.0)  # type: ignore[misc]


def test_timing_refuses_an_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown timing profile 'slow'"):
        timing.timing({"timing": {"profile": "slow"}})


@pytest.mark.parametrize(("given", "expected"), [
    ("1s", (1.0, 1.0)),
    (2, (2.0, 2.0)),
    (["60s", "90s"], (60.0, 90.0)),
    (["5m", "5m"], (300.0, 300.0)),
    ([0, "1s"], (0.0, 1.0)),
    (("1m", "20m"), (60.0, 1200.0)),
])
def test_span(given: object, expected: tuple[float, float]) -> None:
    assert timing.span(given) == expected


@pytest.mark.parametrize(("given", "reason"), [
    ("x", "expected a duration like 90s, 20m, 14d or a [MIN, MAX] range; got 'x'"),
    (-1, "cannot be negative"),
    (None, "got None"),
    ({"min": 1}, "or a [MIN, MAX] range"),
    (["1s"], "got a list of 1 item(s)"),
    (["1s", "2s", "3s"], "got a list of 3 item(s)"),
    ([], "got a list of 0 item(s)"),
    (["90s", "60s"], "range [90s, 60s] is reversed (MIN must be <= MAX)"),
    (["x", "60s"], "MIN of the range: expected a duration like 90s, 20m, 14d; got 'x'"),
    (["1s", "-2s"], "MAX of the range: expected a duration"),
    ([["1s", "2s"], "3s"], "MIN of the range"),
    ([True, "1s"], "MIN of the range"),
])
def test_span_refuses(given: object, reason: str) -> None:
    with pytest.raises(ValueError) as err:
        timing.span(given)
    assert reason in str(err.value)


def test_pick_is_deterministic_and_within_bounds() -> None:
    aws = timing.timing({"timing": {"profile": "aws"}})
    for index in range(200):
        seed = f"eni-{index:04x}"
        value = aws.pick("eni_create", seed)
        assert 60.0 <= value <= 90.0
        assert aws.pick("eni_create", seed) == value
        assert timing.timing({"timing": {"profile": "aws"}}).pick("eni_create", seed) == value


def test_pick_spreads_over_the_range() -> None:
    aws = timing.timing({"timing": {"profile": "aws"}})
    values = [aws.pick("eni_delete", f"eni-{i}") for i in range(400)]
    assert len(set(values)) == len(values)
    assert min(values) < 60 + 0.1 * 1140 and max(values) > 1200 - 0.1 * 1140


def test_pick_differs_between_seeds_and_keys() -> None:
    aws = timing.timing({"timing": {"profile": "aws", "eni_delete": ["60s", "90s"]}})
    assert aws.pick("eni_create", "eni-a") != aws.pick("eni_create", "eni-b")
    assert aws.pick("eni_create", "eni-a") != aws.pick("eni_delete", "eni-a")


def test_pick_of_a_fixed_value_is_that_value() -> None:
    fast = timing.timing({})
    assert fast.pick("eni_create", "anything") == 1.0
    assert fast.pick("function_idle", "") == 14 * DAY
    zero = timing.timing({"timing": {"eni_create": ["0s", "0s"]}})
    assert zero.pick("eni_create", "x") == 0.0


def test_pick_refuses_an_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown timing key 'eni_attach'"):
        timing.timing({}).pick("eni_attach", "x")
    with pytest.raises(ValueError, match="known: eni_create"):
        timing.timing({}).span("profile")


def test_summary_formats_spans() -> None:
    assert timing.timing({"timing": {"profile": "aws"}}).summary() == {
        "profile": "aws", "eni_create": "1m..90s",
        "eni_delete": "1m..20m", "function_idle": "14d", "env_idle": "5m..15m",
        "legacy_eni_attach": "10s", "env_max_lifetime": "2h..4h"}
    assert timing.span_text((0.25, 0.25)) == "250ms"


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, 250),
    ({"quotas": None}, 250),
    ({"quotas": {}}, 250),
    ({"quotas": {"enis_per_vpc": 500}}, 500),
    ({"quotas": {"enis_per_vpc": 2}}, 2),
])
def test_enis_per_vpc(settings: dict, expected: int) -> None:
    assert timing.enis_per_vpc(settings) == expected


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, "hyperplane"),
    ({"networking": None}, "hyperplane"),
    ({"networking": "hyperplane"}, "hyperplane"),
    ({"networking": "legacy"}, "legacy"),
])
def test_default_networking(settings: dict, expected: str) -> None:
    assert timing.default_networking(settings) == expected


@pytest.mark.parametrize(("declared", "settings", "expected"), [
    (None, {}, "hyperplane"),
    (None, {"networking": "legacy"}, "legacy"),
    ("hyperplane", {"networking": "legacy"}, "hyperplane"),
    ("legacy", {}, "legacy"),
])
def test_a_function_s_own_networking_wins(declared: str | None, settings: dict,
                                          expected: str) -> None:
    assert timing.networking(declared, settings) == expected
