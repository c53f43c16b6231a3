"""deploy/k8s validates offline against the Kubernetes API schemas and wires what the README says.

kubernetes-validate (the ``dev`` extra) checks every built-in kind against the strict schemas
(unknown fields are errors) of the versions in ``KUBERNETES_VERSIONS``; nothing reaches a cluster.
It has no schema for custom resources (KEDA's ScaledObject and TriggerAuthentication) and says so
with ``SchemaNotFoundError``: those get the structural check below, a subset of KEDA's CRD with
``additionalProperties: false`` on the fields used. There is no kustomize here: ``_render``
applies the two features the kustomizations use (resources, JSON 6902 patches) and refuses any
other, so a new feature cannot be skipped silently.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from commentflow.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# The oldest release the manifests support (PodDisruptionBudget.unhealthyPodEvictionPolicy is
# GA in 1.31) and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.31", "1.37")
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication"}
# COMMENTFLOW_* variables the Kafka security work (issue 12, item 1) introduces; every other name
# must already be a Settings field or <field>_FILE (its value read from that file).
def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """JSON 6902 ``add`` and ``replace`` (all the overlays use)."""
    for op in ops:
        assert op["op"] in ("add", "replace"), op
        *parents, last = [_unescape(t) for t in op["path"].lstrip("/").split("/")]
        node: Any = doc
        for token in parents:
            node = node[int(token)] if isinstance(node, list) else node[token]
        if isinstance(node, list):
            node[int(last)] = op["value"]
        else:
            assert (last in node) == (op["op"] == "replace"), op  # as kustomize would refuse
            node[last] = copy.deepcopy(op["value"])


def _render(directory: Path) -> list[dict[str, Any]]:
    """The resources of a kustomization, with its patches applied (a kustomize subset)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "labels", "resources", "patches"}
    assert set(kustomization) <= known, set(kustomization) - known
    docs: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        path = directory / entry
        docs += _render(path) if path.is_dir() else _load(path)
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        matches = [
            d
            for d in docs
            if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
        ]
        assert len(matches) == 1, target
        _patch(matches[0], yaml.safe_load((directory / patch["path"]).read_text()))
    return docs


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in _render(K8S / "base")}


@pytest.fixture(scope="module")
def gpu() -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in _render(K8S / "overlays" / "gpu")}


def _all_documents() -> list[tuple[str, dict[str, Any]]]:
    out = [(f"base {d['kind']}", d) for d in _render(K8S / "base")]
    out += [(f"gpu {d['kind']}", d) for d in _render(K8S / "overlays" / "gpu")]
    out += [(f"secrets {d['kind']}", d) for d in _load(K8S / "secrets.example.yaml")]
    return out


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_builtin_kind_validates_strictly(version: str) -> None:
    checked = 0
    for name, doc in _all_documents():
        if doc["kind"] in CUSTOM_KINDS:
            with pytest.raises(SchemaNotFoundError):  # the validator cannot check these
                kubernetes_validate.validate(doc, version, strict=True)
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name} {doc['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= 9


def test_the_validator_catches_a_typo(base: dict[str, dict[str, Any]]) -> None:
    """The check above means something: strict mode rejects an unknown field."""
    worker = copy.deepcopy(base["Deployment/commentflow-worker"])
    worker["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSIONS[0], strict=True)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_worker_probes_security_and_secrets(base: dict[str, dict[str, Any]]) -> None:
    worker = base["Deployment/commentflow-worker"]
    pod = worker["spec"]["template"]["spec"]
    container = _container(worker)
    assert "replicas" not in worker["spec"]  # KEDA owns the count
    assert container["args"] == ["worker"] and container["image"] == "commentflow:cpu"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == Settings().web_port
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    assert "useradd --create-home --uid 10001" in (REPO / "Dockerfile").read_text()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["terminationGracePeriodSeconds"] > Settings().shutdown_timeout_s
    secrets = {v["secret"]["secretName"]: v["name"] for v in pod["volumes"] if "secret" in v}
    assert set(secrets) == {"commentflow-kafka", "commentflow-redis"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    # every *_FILE the ConfigMap names lies in a mounted Secret
    config = base["ConfigMap/commentflow"]["data"]
    for key, value in config.items():
        if key.endswith(("_FILE", "_CAFILE")):
            assert any(value.startswith(mounts[v] + "/") for v in secrets.values()), key
    # and no secret value in the ConfigMap or the environment
    assert not any("password" in v.lower() and "_FILE" not in k for k, v in config.items())
    assert not any("value" in e and "PASSWORD" in e["name"] for e in container.get("env", []))


def test_env_names_are_settings(base: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    names = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
    known = names | {n + "_FILE" for n in names}
    used = set(base["ConfigMap/commentflow"]["data"])
    for deployment in ("commentflow-worker", "commentflow-dashboard"):
        used |= {e["name"] for e in _container(base[f"Deployment/{deployment}"]).get("env", [])}
    assert used <= known, used - known
    # every value reads as its type; the *_FILE ones name files that exist only in the pod:
    # placeholders stand in for them here
    env = dict(base["ConfigMap/commentflow"]["data"])
    for key in [k for k in env if k.endswith("_FILE")]:
        env[key] = str(tmp_path / key)
        (tmp_path / key).write_text("placeholder\n")
    Settings.from_env(env)


def test_file_variables_are_read_for_any_setting(tmp_path: Path) -> None:
    """The manifests mount credentials (a Redis URL with its password, the SASL user) as files."""
    secret = tmp_path / "url"
    secret.write_text("redis://:s3cret@redis.example:6379/0\n")
    settings = Settings.from_env({"COMMENTFLOW_REDIS_URL_FILE": str(secret)})
    assert settings.redis_url == "redis://:s3cret@redis.example:6379/0"


def test_gpu_overlay_requests_a_gpu_and_runs_the_cuda_image(
    base: dict[str, dict[str, Any]], gpu: dict[str, dict[str, Any]]
) -> None:
    container = _container(gpu["Deployment/commentflow-worker"])
    assert container["image"] == "commentflow:cuda"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert {"name": "COMMENTFLOW_DEVICE", "value": "cuda"} in container["env"]
    # the rest of the stack is the base's, the dashboard stays on the CPU image
    assert set(gpu) == set(base)
    assert gpu["Deployment/commentflow-dashboard"] == base["Deployment/commentflow-dashboard"]


def test_pdb_and_dashboard(base: dict[str, dict[str, Any]]) -> None:
    worker_labels = base["Deployment/commentflow-worker"]["spec"]["selector"]["matchLabels"]
    pdb = base["PodDisruptionBudget/commentflow-worker"]["spec"]
    assert pdb["selector"]["matchLabels"] == worker_labels and pdb["maxUnavailable"] == 1
    dashboard = base["Deployment/commentflow-dashboard"]
    container = _container(dashboard)
    assert container["args"] == ["dashboard"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["COMMENTFLOW_DASHBOARD_TOKEN_FILE"].startswith("/etc/commentflow/dashboard/")
    service = base["Service/commentflow-dashboard"]["spec"]
    assert service["selector"] == dashboard["spec"]["selector"]["matchLabels"]
    assert service["ports"][0]["targetPort"] == container["ports"][0]["name"]


# The part of KEDA's v2 CRDs (keda.sh/v1alpha1) these manifests use; unknown fields are errors.
_OBJ = {"type": "object", "additionalProperties": False}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    **_OBJ,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            **_OBJ,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    **_OBJ, "required": ["name"], "properties": {"name": {"type": "string"}},
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer"},
                "cooldownPeriod": {"type": "integer"},
                "advanced": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        **_OBJ,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            # KEDA reads trigger metadata as strings only
                            "metadata": {
                                "type": "object", "additionalProperties": {"type": "string"},
                            },
                            "authenticationRef": {
                                **_OBJ, "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                        },
                    },
                },
            },
        },
    },
}
# The Kafka scaler's metadata keys (KEDA 2.x docs, "Apache Kafka" scaler).
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
    "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag", "partitionLimitation", "sasl",
    "tls", "unsafeSsl", "version",
}


def test_scaled_object_scales_workers_on_lag_up_to_the_partition_count(
    base: dict[str, dict[str, Any]],
) -> None:
    scaled = base["ScaledObject/commentflow-worker"]
    jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    spec = scaled["spec"]
    config = base["ConfigMap/commentflow"]["data"]
    assert f"Deployment/{spec['scaleTargetRef']['name']}" in base
    assert spec["maxReplicaCount"] == int(config["COMMENTFLOW_TOPIC_PARTITIONS"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka" and set(meta) <= KAFKA_TRIGGER_KEYS
    assert meta["consumerGroup"] == config["COMMENTFLOW_APP_ID"]
    assert meta["topic"] == config["COMMENTFLOW_INPUT_TOPIC"]
    assert meta["bootstrapServers"] == config["COMMENTFLOW_KAFKA_BOOTSTRAP"]
    assert meta["allowIdleConsumers"] == "false" and int(meta["lagThreshold"]) > 0
    auth = base[f"TriggerAuthentication/{trigger['authenticationRef']['name']}"]["spec"]
    secrets = {s["metadata"]["name"]: s for s in _load(K8S / "secrets.example.yaml")}
    for ref in auth["secretTargetRef"]:
        assert ref["parameter"] in {"username", "password", "ca", "cert", "key", "sasl", "tls"}
        assert ref["key"] in secrets[ref["name"]]["stringData"], ref


def test_the_structural_check_catches_a_typo(base: dict[str, dict[str, Any]]) -> None:
    scaled = copy.deepcopy(base["ScaledObject/commentflow-worker"])
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
