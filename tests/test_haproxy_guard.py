"""HAProxy's side doors: the guard's rewrite of the config that this Ray's own template writes.
The reliability run (tests/test_reliability.py) shows HAProxy starting with it and what answers."""

import re

import pytest
from jinja2 import Environment

from serve_plugins import cluster_env, haproxy_guard
from tutorial import facts


@pytest.fixture(scope="module")
def rays_config() -> str:
    """HAProxy's config as this Ray's template writes it, with its default settings and no application."""
    # Imported here, not at collection: Ray reads RAY_AUTH_MODE once, at its first import, and the tests
    # that deploy set it first.
    from ray.serve._private.haproxy import HAProxyConfig
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

    env = Environment()
    env.filters["haproxy_fmt"] = str
    return env.from_string(HAPROXY_CONFIG_TEMPLATE).render(config=HAProxyConfig(), route_info={}, healthz_rules="")


def sections(config: str) -> dict[str, list[str]]:
    found, name = {}, None
    for line in config.splitlines():
        if line and not line[0].isspace():
            name = line.strip()
            found[name] = []
        elif name and line.strip():
            found[name].append(line.strip())
    return found


def test_rays_template_binds_the_side_doors_to_every_interface(rays_config):
    # What the guard is for: if Ray binds them to loopback itself one day, this fails and the guard can go.
    binds = {name: [x for x in body if x.startswith("bind ")] for name, body in sections(rays_config).items()}
    assert binds["frontend prometheus"] == [f"bind :{facts.HAPROXY_SIDE_DOORS[1]}"]
    assert binds["listen stats"] == [f"bind *:{facts.HAPROXY_SIDE_DOORS[0]}"]


def test_the_side_doors_listen_on_loopback_under_their_own_limit(rays_config):
    s = sections(haproxy_guard.harden(rays_config, "127.0.0.1"))
    for name, port in (("listen stats", 8404), ("frontend prometheus", 9101)):
        assert [x for x in s[name] if x.startswith("bind ")] == [f"bind 127.0.0.1:{port}"]
        assert f"maxconn {haproxy_guard.SIDE_DOOR_MAXCONN}  {haproxy_guard.MARK}" in s[name]
    assert 2 * haproxy_guard.SIDE_DOOR_MAXCONN < int(cluster_env.HIGH_THROUGHPUT["RAY_SERVE_HAPROXY_MAXCONN"]) / 10


def test_every_frontend_has_a_header_deadline_and_port_8000_keeps_its_address(rays_config):
    s = sections(haproxy_guard.harden(rays_config, "127.0.0.1"))
    deadline = f"timeout http-request {haproxy_guard.HEADERS_S}s  {haproxy_guard.MARK}"
    fronts = [n for n in s if n.startswith(("frontend ", "listen "))]
    assert fronts and all(deadline in s[n] for n in fronts)
    assert "bind 127.0.0.1:8000" in s["frontend http_frontend"]


def test_the_reader_can_open_them_on_purpose_and_a_second_pass_changes_nothing(rays_config):
    opened = haproxy_guard.harden(rays_config, "0.0.0.0")
    assert "bind 0.0.0.0:8404" in opened and "bind 0.0.0.0:9101" in opened
    closed = haproxy_guard.harden(opened, "127.0.0.1")
    assert closed == haproxy_guard.harden(rays_config, "127.0.0.1") == haproxy_guard.harden(closed, "127.0.0.1")
    assert len(re.findall("maxconn 64", closed)) == 2


def test_a_config_of_another_shape_stops_haproxy_with_the_reason(rays_config):
    other = rays_config.replace("listen stats", "listen statistics")
    with pytest.raises(SystemExit, match="listen stats.*refusing to start HAProxy"):
        haproxy_guard.harden(other, "127.0.0.1")
