"""deploy/docker-compose.yml: the four services wired together as the README describes, every
bind mount pointing at a file or directory of deploy/, every port on the loopback only, and the
images it builds being stages of the repository's Dockerfile."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from tests.deploy.helpers import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    METRICS_PORT,
    PROMETHEUS_CONFIG,
    ROOT,
    load_yaml,
)


def _compose() -> dict[str, Any]:
    compose = load_yaml(COMPOSE)
    assert isinstance(compose, dict)
    return compose


def _flag(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def test_the_stack_has_its_four_services() -> None:
    assert set(_compose()["services"]) == {"devnet", "keeper", "prometheus", "grafana"}


def test_bind_mounts_exist_and_named_volumes_are_declared() -> None:
    compose = _compose()
    declared = set(compose.get("volumes") or {})
    seen_bind = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target, *mode = volume.split(":")
            assert target.startswith("/"), f"{name}: {volume}"
            assert mode in ([], ["ro"], ["rw"]), f"{name}: {volume}"
            if source.startswith((".", "/")):
                path = (COMPOSE.parent / source).resolve()
                assert path.exists(), f"{name}: {source} does not exist"
                assert path.is_relative_to(DEPLOY), f"{name}: {source} is outside deploy/"
                seen_bind += 1
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"
    assert seen_bind >= 3


def test_ports_are_published_on_the_loopback_only() -> None:
    published = {name: service.get("ports", []) for name, service in _compose()["services"].items()}
    assert published["keeper"] == [f"127.0.0.1:{METRICS_PORT}:{METRICS_PORT}"]
    assert published["prometheus"] == ["127.0.0.1:9090:9090"]
    assert published["grafana"] == ["127.0.0.1:3000:3000"]
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_the_builds_are_stages_of_the_dockerfile() -> None:
    compose = _compose()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE.read_text(), re.I | re.M))
    for name in ("devnet", "keeper"):
        build = compose["services"][name]["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
        assert build["target"] == name
        assert build["target"] in stages, f"the Dockerfile has no stage `AS {name}`: {stages}"


def test_the_devnet_writes_the_keeper_config_into_the_shared_volume() -> None:
    devnet = _compose()["services"]["devnet"]
    command = devnet["command"]
    assert command[0] == "devnet"
    assert _flag(command, "--host") == "0.0.0.0"
    assert _flag(command, "--accounts") == "20"
    config = _flag(command, "--keeper-config")
    assert config == "/shared/keeper.toml"
    # The URL written into the keeper's config must reach the devnet from the keeper container.
    assert _flag(command, "--advertise-url") == f"http://devnet:{_flag(command, '--port')}"
    assert "shared:/shared" in devnet["volumes"]
    assert config in devnet["healthcheck"]["test"]


def test_the_keeper_waits_for_the_devnet_and_reads_its_config_read_only() -> None:
    keeper = _compose()["services"]["keeper"]
    assert keeper["command"][:3] == ["run", "--config", "/shared/keeper.toml"]
    assert _flag(keeper["command"], "--log-format") == "json"
    assert keeper["depends_on"] == {"devnet": {"condition": "service_healthy"}}
    shared = [volume for volume in keeper["volumes"] if volume.startswith("shared:")]
    assert shared == ["shared:/shared:ro"]
    assert keeper["restart"] == "unless-stopped"
    assert keeper["stop_grace_period"] == "10s"


def test_the_keeper_keeps_its_database_in_its_own_named_volume() -> None:
    """The image puts the database in a directory (ASGARD_KEEPER_STORAGE_DATABASE_PATH): compose
    mounts a named volume there, writable, that no other service shares."""
    compose = _compose()
    image_env = re.search(r"ASGARD_KEEPER_STORAGE_DATABASE_PATH=(\S+)", DOCKERFILE.read_text())
    assert image_env is not None
    directory = str(PurePosixPath(image_env.group(1)).parent)
    keeper = compose["services"]["keeper"]
    assert "ASGARD_KEEPER_STORAGE_DATABASE_PATH" not in (keeper.get("environment") or {})
    mounts = [volume.split(":") for volume in keeper["volumes"]]
    (data,) = [mount for mount in mounts if mount[1] == directory]
    source, _, *mode = data
    assert mode in ([], ["rw"]), "the keeper writes its database"
    assert source in (compose.get("volumes") or {}), "a named volume, declared"
    assert source != "shared"
    for name, service in compose["services"].items():
        if name != "keeper":
            assert not [v for v in service.get("volumes", []) if v.split(":")[0] == source], name


def test_prometheus_and_grafana_images_are_pinned_and_configured() -> None:
    services = _compose()["services"]
    for name, repository in (("prometheus", "prom/prometheus"), ("grafana", "grafana/grafana")):
        image, _, tag = services[name]["image"].partition(":")
        assert image == repository
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin an exact version, not {tag!r}"
    command = services["prometheus"]["command"]
    config_flag = next(arg for arg in command if arg.startswith("--config.file="))
    config_in_container = Path(config_flag.split("=", 1)[1])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert (COMPOSE.parent / mounts[str(config_in_container.parent)]).resolve() / (
        config_in_container.name
    ) == PROMETHEUS_CONFIG
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:-")


def test_prometheus_scrapes_the_keeper_service_on_its_metrics_port() -> None:
    (target,) = load_yaml(PROMETHEUS_CONFIG)["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    keeper = _compose()["services"][host]
    assert keeper["command"][0] == "run"
    assert int(port) == METRICS_PORT
