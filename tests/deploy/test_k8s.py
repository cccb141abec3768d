"""deploy/k8s: every manifest parses, the Deployment is one hardened, non-root keeper whose
probes hit /healthz and /readyz on the port the Service targets, its configuration is a keeper
config the real loader accepts once the placeholders are filled, and no real-looking secret is
committed anywhere under deploy/."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from keeper.config import ConfigError, load_config
from tests.deploy.helpers import (
    DEPLOY,
    DOCKERFILE,
    JOB,
    K8S,
    METRICS_PORT,
    load_json,
    load_yaml,
    yaml_files,
)

SECRET_DIR = PurePosixPath("/var/run/secrets/asgard-keeper")
DATABASE = PurePosixPath("/var/lib/asgard-keeper/keeper.sqlite")
# The only volumes the keeper writes: scratch space and its database.
WRITABLE = frozenset({"tmp", "data"})


def _kustomization() -> dict[str, Any]:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert isinstance(kustomization, dict)
    return kustomization


def _manifest(name: str) -> dict[str, Any]:
    manifest = load_yaml(K8S / name)
    assert isinstance(manifest, dict)
    return manifest


def _pod() -> dict[str, Any]:
    pod = _manifest("deployment.yaml")["spec"]["template"]["spec"]
    assert isinstance(pod, dict)
    return pod


def _container() -> dict[str, Any]:
    (container,) = _pod()["containers"]
    assert isinstance(container, dict)
    return container


def _env() -> dict[str, str]:
    return {item["name"]: item["value"] for item in _container()["env"]}


def test_every_yaml_and_json_file_under_deploy_parses() -> None:
    files = yaml_files()
    assert len(files) >= 12
    for path in files:
        assert load_yaml(path) is not None, path
    jsons = sorted(DEPLOY.rglob("*.json"))
    assert jsons
    for path in jsons:
        assert isinstance(load_json(path), dict), path


def test_the_kustomization_lists_existing_manifests_and_leaves_the_secret_out() -> None:
    kustomization = _kustomization()
    assert "namespace" not in kustomization
    resources = kustomization["resources"]
    assert set(resources) == {
        "deployment.yaml",
        "persistentvolumeclaim.yaml",
        "service.yaml",
        "servicemonitor.yaml",
        "prometheus-rule.yaml",
    }
    for resource in resources:
        manifest = _manifest(resource)
        assert manifest["apiVersion"], resource
        assert manifest["kind"], resource
        assert "namespace" not in manifest["metadata"], resource
    (generator,) = kustomization["configMapGenerator"]
    assert all((K8S / file).is_file() for file in generator["files"])
    assert "secret.example.yaml" not in resources


def test_one_replica_recreated_never_rolled() -> None:
    deployment = _manifest("deployment.yaml")
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    text = (K8S / "deployment.yaml").read_text()
    assert "nonce" in text  # the reason is written next to it


def test_the_database_is_on_a_persistent_volume_claim_where_the_keeper_writes_it() -> None:
    """One ReadWriteOnce claim, mounted writable where ASGARD_KEEPER_STORAGE_DATABASE_PATH
    points (the same path as the image's default), so the checkpoint and the journal outlive
    the pod; the reason for one keeper per key and database is written next to the replicas."""
    env = _env()
    path = PurePosixPath(env["ASGARD_KEEPER_STORAGE_DATABASE_PATH"])
    assert path == DATABASE
    image = re.search(r"ASGARD_KEEPER_STORAGE_DATABASE_PATH=(\S+)", DOCKERFILE.read_text())
    assert image is not None
    assert PurePosixPath(image.group(1)) == path
    mounts = {mount["name"]: mount for mount in _container()["volumeMounts"]}
    data = mounts["data"]
    assert PurePosixPath(data["mountPath"]) == path.parent
    assert not data.get("readOnly")
    assert "subPath" not in data  # the -wal, -shm and .lock files live beside the database
    others = [PurePosixPath(m["mountPath"]) for name, m in mounts.items() if name != "data"]
    assert not [m for m in others if path.is_relative_to(m) or m.is_relative_to(path.parent)]
    volumes = {volume["name"]: volume for volume in _pod()["volumes"]}
    claim = _manifest("persistentvolumeclaim.yaml")
    assert claim["apiVersion"] == "v1"
    assert claim["kind"] == "PersistentVolumeClaim"
    assert volumes["data"] == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    }
    assert claim["spec"]["accessModes"] in (["ReadWriteOnce"], ["ReadWriteOncePod"])
    assert claim["spec"]["resources"]["requests"]["storage"]
    # fsGroup makes the volume writable by the keeper's group whatever its owner.
    assert _pod()["securityContext"]["fsGroup"] == _pod()["securityContext"]["runAsGroup"]
    text = (K8S / "deployment.yaml").read_text()
    assert "journal" in text
    assert "lock" in text


def test_the_keeper_runs_as_the_images_non_root_user_with_nothing_writable() -> None:
    user = re.search(r"useradd .*--uid (\d+)", DOCKERFILE.read_text())
    assert user, "the Dockerfile creates no user with a fixed uid"
    uid = int(user.group(1))
    pod = _pod()["securityContext"]
    container = _container()["securityContext"]
    for context in (pod, container):
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == uid != 0
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}


def test_resources_and_termination_grace() -> None:
    resources = _container()["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind
    assert _pod()["terminationGracePeriodSeconds"] == 15


def test_probes_hit_health_endpoints_on_the_port_the_service_targets() -> None:
    container = _container()
    (port,) = container["ports"]
    assert port == {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    service = _manifest("service.yaml")
    assert service["spec"]["type"] == "ClusterIP"
    (service_port,) = service["spec"]["ports"]
    assert service_port["name"] == "metrics"
    assert service_port["targetPort"] in (port["name"], port["containerPort"])
    labels = _manifest("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_service_monitor_scrapes_the_service_as_the_alerts_job() -> None:
    service = _manifest("service.yaml")
    # The Prometheus Operator names the job after the Service; the alerts expect job=JOB.
    assert service["metadata"]["name"] == JOB
    monitor = _manifest("servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"


def test_config_and_secret_are_mounted_where_the_keeper_reads_them() -> None:
    container = _container()
    volumes = {volume["name"]: volume for volume in _pod()["volumes"]}
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert all(mount.get("readOnly") for name, mount in mounts.items() if name not in WRITABLE)
    (generator,) = _kustomization()["configMapGenerator"]
    assert volumes["config"]["configMap"]["name"] == generator["name"]
    config_path = PurePosixPath(container["args"][container["args"].index("--config") + 1])
    assert PurePosixPath(mounts["config"]["mountPath"]) == config_path.parent
    assert config_path.name in generator["files"]
    secret = _manifest("secret.example.yaml")
    assert volumes["secret"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert PurePosixPath(mounts["secret"]["mountPath"]) == SECRET_DIR
    env = _env()
    for variable, key in (
        ("ASGARD_KEEPER_SIGNER_PRIVATE_KEY_FILE", "private-key"),
        ("ASGARD_KEEPER_CHAIN_RPC_URL_FILE", "rpc-url"),
    ):
        assert env[variable] == str(SECRET_DIR / key)
        assert key in secret["stringData"]


def test_the_secret_example_holds_only_placeholders() -> None:
    secret = _manifest("secret.example.yaml")
    assert secret["kind"] == "Secret"
    for key, value in secret["stringData"].items():
        assert "REPLACE" in value, key
    assert "example.invalid" in secret["stringData"]["rpc-url"]


def test_no_real_looking_key_is_committed_under_deploy() -> None:
    key = re.compile(r"(?<![0-9a-fA-F])(0x)?[0-9a-fA-F]{64}(?![0-9a-fA-F])")
    # k8s/secret.yaml is the operator's filled-in copy, ignored by git (k8s/.gitignore).
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p != K8S / "secret.yaml"]
    assert len(files) >= 15
    for path in files:
        assert not key.search(path.read_text()), f"{path} holds a 64-hex-digit value"


def _filled_config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The ConfigMap's keeper.toml with its REPLACE placeholders filled, plus the environment the
    Deployment gives it, with the secret files written to tmp_path."""
    text = (K8S / "keeper.toml").read_text()
    text = text.replace("REPLACE_WITH_CREDIT_MANAGER_ADDRESS", "0x" + "11" * 20)
    text = text.replace("REPLACE_WITH_WRAPPED_NATIVE_TOKEN_ADDRESS", "0x" + "22" * 20)
    config = tmp_path / "keeper.toml"
    config.write_text(text)
    (tmp_path / "private-key").write_text("0x" + "ab" * 32 + "\n")  # a test value, never a key
    (tmp_path / "rpc-url").write_text("https://rpc.example.invalid/key\n")
    # *_FILE variables name the Secret's files: here, their copies in tmp_path.
    environ = {
        variable: str(tmp_path / PurePosixPath(value).name) if variable.endswith("_FILE") else value
        for variable, value in _env().items()
        if variable.startswith("ASGARD_KEEPER_")
    }
    return config, environ


def test_the_configmap_is_a_valid_keeper_config_once_filled(tmp_path: Path) -> None:
    raw = tomllib.loads((K8S / "keeper.toml").read_text())
    assert raw["ops"]["metrics_host"] == "0.0.0.0"
    assert raw["ops"]["metrics_port"] == METRICS_PORT == _container()["ports"][0]["containerPort"]
    config_path, environ = _filled_config(tmp_path)
    config = load_config(config_path, environ=environ)
    assert config.ops.metrics_host == "0.0.0.0"
    assert config.ops.metrics_port == METRICS_PORT
    assert config.chain.rpc_url == "https://rpc.example.invalid/key"
    assert config.signer.private_key_file == tmp_path / "private-key"
    assert config.storage.database_path == Path(DATABASE)


def test_the_configmap_leaves_the_database_path_to_the_environment() -> None:
    # ASGARD_KEEPER_STORAGE_DATABASE_PATH (deployment.yaml, and the image) wins over the file:
    # a path written in keeper.toml would be silently ignored.
    raw = tomllib.loads((K8S / "keeper.toml").read_text())
    assert "database_path" not in raw.get("storage", {})
    assert "ASGARD_KEEPER_STORAGE_DATABASE_PATH" in (K8S / "keeper.toml").read_text()


def test_the_configmap_refuses_to_start_with_its_placeholders(tmp_path: Path) -> None:
    _, environ = _filled_config(tmp_path)
    with pytest.raises(ConfigError, match="credit_managers"):
        load_config(K8S / "keeper.toml", environ=environ)
