"""The settings section: defaults, and one clear error per bad value."""

from __future__ import annotations

import pytest

from hyperplane import settings
from hyperplane.topology import TopologyError


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
])
def test_bad_settings_name_field_and_reason(given: dict, path: str, reason: str) -> None:
    with pytest.raises(TopologyError) as err:
        settings.check(given, "t.yaml")
    assert err.value.path == path and reason in err.value.reason
    assert str(err.value).startswith("t.yaml: " + path)


def test_null_dataplane_section_is_accepted() -> None:
    settings.check({"dataplane": None}, "t.yaml")
