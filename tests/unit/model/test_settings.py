"""The settings section: defaults, and one clear error per bad value."""

from __future__ import annotations

import pytest

from hyperplane.errors import TopologyError
from hyperplane.model import settings


def test_defaults_fill_what_is_not_given() -> None:
    got = settings.dataplane({"dataplane": {"eni_connection_limit": 10}})
    assert got["eni_connection_limit"] == 10
    assert got["port_range"] == [1024, 65535] and got["max_sessions"] == 1_000_000


@pytest.mark.parametrize(("given", "path", "reason"), [
    ({"dataplan": {}}, "settings.dataplan", "unknown setting"),
    ({"dataplane": 3}, "settings.dataplane", "expected a mapping"),
    ({"dataplane": {"eni_connection_limit": 0}}, "settings.dataplane.eni_connection_limit",
     "positive integer"),
    ({"dataplane": {"port_range": [2000, 1000]}}, "settings.dataplane.port_range", "LOW"),
    ({"dataplane": {"timeouts": {"udp": -1}}}, "settings.dataplane.timeouts.udp",
     "positive number"),
    ({"dataplane": {"timeouts": {"tcp": 5}}}, "settings.dataplane.timeouts.tcp",
     "unknown timeout"),
    ({"dataplane": {"speed": 1}}, "settings.dataplane.speed", "unknown dataplane setting"),
    ({"dataplane": {"workers": 0}}, "settings.dataplane.workers", "expected auto or"),
    ({"dataplane": {"workers": 17}}, "settings.dataplane.workers", "1 to 16"),
    ({"dataplane": {"workers": "many"}}, "settings.dataplane.workers", "expected auto or"),
])
def test_bad_settings_name_field_and_reason(given: dict, path: str, reason: str) -> None:
    with pytest.raises(TopologyError) as err:
        settings.check(given, "t.yaml")
    assert err.value.path == path and reason in err.value.reason
    assert str(err.value).startswith("t.yaml: " + path)


def test_workers_default_to_one_and_take_auto() -> None:
    assert settings.dataplane({})["workers"] == 1
    settings.check({"dataplane": {"workers": "auto"}}, "t.yaml")
    settings.check({"dataplane": {"workers": 2}}, "t.yaml")


def test_null_dataplane_section_is_accepted() -> None:
    settings.check({"dataplane": None}, "t.yaml")


# -- timing, quotas, networking ---------------------------------------------------------

FULL = {
    "timing": {"profile": "aws", "eni_create": "1s", "eni_delete": ["3s", "5s"],
               "function_idle": "14d", "env_idle": 300, "legacy_eni_attach": "1.5s"},
    "quotas": {"enis_per_vpc": 500},
    "networking": "legacy",
}


def test_the_documented_sections_are_accepted() -> None:
    settings.check(FULL, "t.yaml")
    for empty in ({"timing": None, "quotas": None, "networking": None},
                  {"timing": {}, "quotas": {}}, {"timing": {"profile": None}},
                  {"timing": {"eni_create": None, "env_idle": None}},
                  {"timing": {"profile": "fast"}, "networking": "hyperplane"}):
        settings.check(empty, "t.yaml")


@pytest.mark.parametrize(("given", "path", "reason"), [
    ({"timing": 3}, "settings.timing", "expected a mapping"),
    ({"timing": ["fast"]}, "settings.timing", "expected a mapping"),
    ({"timing": {"profile": "slow"}}, "settings.timing.profile",
     "unknown timing profile 'slow' (known: fast, aws)"),
    ({"timing": {"profile": ["aws"]}}, "settings.timing.profile", "unknown timing profile"),
    ({"timing": {"profile": "AWS"}}, "settings.timing.profile", "unknown timing profile"),
    ({"timing": {"eni_attach": "1s"}}, "settings.timing.eni_attach",
     "unknown timing setting (known: profile, eni_create, eni_delete, function_idle, "
     "env_idle, legacy_eni_attach, env_max_lifetime)"),
    ({"timing": {"eni_create": "x"}}, "settings.timing.eni_create",
     "expected a duration like 90s, 20m, 14d or a [MIN, MAX] range; got 'x'"),
    ({"timing": {"eni_delete": "3 s"}}, "settings.timing.eni_delete", "got '3 s'"),
    ({"timing": {"function_idle": -1}}, "settings.timing.function_idle", "negative"),
    ({"timing": {"env_idle": True}}, "settings.timing.env_idle", "got True"),
    ({"timing": []}, "settings.timing", "expected a mapping"),
    ({"quotas": []}, "settings.quotas", "expected a mapping"),
    ({"timing": {"legacy_eni_attach": ".inf"}}, "settings.timing.legacy_eni_attach",
     "got '.inf'"),
    ({"timing": {"legacy_eni_attach": float("inf")}}, "settings.timing.legacy_eni_attach",
     "not a finite number"),
    ({"timing": {"eni_create": ["90s", "60s"]}}, "settings.timing.eni_create",
     "range [90s, 60s] is reversed (MIN must be <= MAX)"),
    ({"timing": {"eni_create": ["60s"]}}, "settings.timing.eni_create", "a list of 1 item"),
    ({"timing": {"eni_create": ["60s", "1 min"]}}, "settings.timing.eni_create",
     "MAX of the range: expected a duration like 90s, 20m, 14d; got '1 min'"),
    ({"timing": {"eni_create": ["-1s", "1s"]}}, "settings.timing.eni_create",
     "MIN of the range"),
    ({"quotas": 250}, "settings.quotas", "expected a mapping"),
    ({"quotas": {"enis_per_subnet": 5}}, "settings.quotas.enis_per_subnet",
     "unknown quota (known: enis_per_vpc)"),
    ({"quotas": {"enis_per_vpc": 0}}, "settings.quotas.enis_per_vpc",
     "expected a positive integer, got 0"),
    ({"quotas": {"enis_per_vpc": "250"}}, "settings.quotas.enis_per_vpc", "positive integer"),
    ({"quotas": {"enis_per_vpc": True}}, "settings.quotas.enis_per_vpc", "positive integer"),
    ({"quotas": {"enis_per_vpc": 2.5}}, "settings.quotas.enis_per_vpc", "positive integer"),
    ({"networking": "vpc"}, "settings.networking",
     "unknown networking mode 'vpc' (known: hyperplane, legacy)"),
    ({"networking": ["legacy"]}, "settings.networking", "unknown networking mode"),
    ({"networkin": "legacy"}, "settings.networkin",
     "unknown setting (known: dataplane, nat_gateway, timing, quotas, networking, api)"),
])
def test_bad_timing_quotas_networking_name_field_and_reason(given: dict, path: str,
                                                            reason: str) -> None:
    with pytest.raises(TopologyError) as err:
        settings.check(given, "t.yaml")
    assert err.value.path == path and reason in err.value.reason, str(err.value)
    assert str(err.value) == f"t.yaml: {path}: {err.value.reason}"


def test_checked_settings_read_back_through_timing(tmp_path) -> None:
    from hyperplane.model import timing
    from hyperplane.model.document import load_topology
    path = tmp_path / "t.yaml"
    path.write_text("account: '111111111111'\nsettings:\n  timing: {profile: aws, "
                    "eni_create: 1s, eni_delete: [3s, 5s], env_idle: 300}\n"
                    "  quotas: {enis_per_vpc: 500}\n  networking: legacy\n")
    loaded = load_topology(str(path)).settings
    settings.check(loaded, str(path))
    got = timing.timing(loaded)
    assert (got.profile, got.eni_create, got.eni_delete) == ("aws", (1.0, 1.0), (3.0, 5.0))
    assert got.env_idle == (300.0, 300.0) and got.legacy_eni_attach == (10.0, 10.0)
    assert timing.enis_per_vpc(loaded) == 500
    assert timing.default_networking(loaded) == "legacy"
