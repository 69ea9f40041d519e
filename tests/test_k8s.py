"""The Kubernetes manifests an admin applies: parseable, probes that hit real routes, safe defaults.

`kustomize build` runs when a kustomize binary (or `kubectl kustomize`) is installed; otherwise
those tests are skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml

from app.config.settings import BridgeFile, Settings, load_bridge_file

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "manifests/k8s"
BASE = K8S / "base"
TRY_REDIS = K8S / "overlays/try-redis"
SINGLE = K8S / "overlays/single-replica"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization(directory: Path) -> dict[str, Any]:
    (k,) = docs(directory / "kustomization.yaml")
    return k


def resources(directory: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in kustomization(directory).get("resources", []):
        target = (directory / name).resolve()
        out += resources(target) if target.is_dir() else docs(target)
    return out


def find(items: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (match,) = [d for d in items if d["kind"] == kind and d["metadata"]["name"] == name]
    return match


def bridge_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (c,) = [c for c in containers if c["name"] == "bridge"]
    container: dict[str, Any] = c
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_every_manifest_parses_and_names_its_kind() -> None:
    files = sorted(f for f in K8S.rglob("*.yaml") if f.name != "bridge.yaml")  # routes, not k8s
    assert len(files) == 10
    for f in files:
        for d in docs(f):
            assert d.get("apiVersion") and d.get("kind"), f
            if d["kind"] != "Kustomization":
                assert d["metadata"]["name"].startswith("dify-bridge"), f


def test_kustomizations_reference_only_files_that_exist() -> None:
    for directory in (BASE, TRY_REDIS, SINGLE):
        k = kustomization(directory)
        for ref in k.get("resources", []) + [
            p["path"] for p in k.get("patches", []) if "path" in p
        ]:
            assert (directory / ref).exists(), f"{directory}: {ref}"
        for gen in k.get("configMapGenerator", []):
            for f in gen["files"]:
                assert (directory / f.split("=")[-1]).exists()


def test_base_has_deployment_service_autoscaler_and_disruption_budget() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in resources(BASE)}
    assert kinds == {
        ("Deployment", "dify-bridge"),
        ("Service", "dify-bridge"),
        ("HorizontalPodAutoscaler", "dify-bridge"),
        ("PodDisruptionBudget", "dify-bridge"),
    }


def test_probes_point_at_the_servers_health_routes_on_its_port() -> None:
    dep = find(resources(BASE), "Deployment", "dify-bridge")
    c = bridge_container(dep)
    default_port = Settings.model_fields["port"].default
    assert default_port == 3000
    assert env_of(c)["PORT"] == str(default_port)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert port_number(c, c[probe]["httpGet"]["port"]) == default_port
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(default_port)
    svc = find(resources(BASE), "Service", "dify-bridge")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


async def test_probe_paths_answer_200_on_a_running_service(make_service: Any) -> None:
    dep = find(resources(BASE), "Deployment", "dify-bridge")
    c = bridge_container(dep)
    service = await make_service()
    async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            r = await client.get(c[probe]["httpGet"]["path"])
            assert r.status_code == 200, (probe, r.text)


def test_shutdown_grace_fits_inside_the_termination_grace_period() -> None:
    dep = find(resources(BASE), "Deployment", "dify-bridge")
    c = bridge_container(dep)
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = float(env_of(c)["SHUTDOWN_GRACE_SECONDS"])
    assert grace == Settings.model_fields["shutdown_grace_seconds"].default
    total = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert total > float(pre_stop[1]) + grace


def test_pod_runs_non_root_with_a_read_only_root_and_writable_scratch_dirs() -> None:
    dep = find(resources(BASE), "Deployment", "dify-bridge")
    pod = dep["spec"]["template"]["spec"]
    c = bridge_container(dep)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - the pod's scratch mount
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_secrets_come_from_a_secret_and_routes_from_the_generated_config_map() -> None:
    dep = find(resources(BASE), "Deployment", "dify-bridge")
    c = bridge_container(dep)
    assert c["envFrom"] == [{"secretRef": {"name": "dify-bridge-secrets"}}]
    assert not any(k.startswith(("SLACK_", "MICROSOFT_", "DIFY_API")) for k in env_of(c))
    config_path = PurePosixPath(env_of(c)["BRIDGE_CONFIG"])
    assert str(config_path) == "/app/config/bridge.yaml"
    (gen,) = kustomization(BASE)["configMapGenerator"]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [
        v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    ]
    assert volume["configMap"]["name"] == gen["name"]
    assert "subPath" not in mount  # in-place ConfigMap updates reach the file: reload on change
    assert gen["options"]["disableNameSuffixHash"] is True
    assert config_path.name in gen["files"]
    routes = load_bridge_file(BASE / config_path.name)
    assert routes.routes[0].dify.api_key_env == "DIFY_API_KEY"


def test_autoscaler_and_disruption_budget_keep_answers_available() -> None:
    items = resources(BASE)
    dep = find(items, "Deployment", "dify-bridge")
    hpa = find(items, "HorizontalPodAutoscaler", "dify-bridge")
    pdb = find(items, "PodDisruptionBudget", "dify-bridge")
    assert dep["spec"]["replicas"] == 2
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "dify-bridge",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for selector in (
        pdb["spec"]["selector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]


def test_try_redis_overlay_adds_a_redis_and_points_the_bridge_at_it() -> None:
    items = resources(TRY_REDIS)
    redis_svc = find(items, "Service", "dify-bridge-redis")
    redis_dep = find(items, "Deployment", "dify-bridge-redis")
    assert redis_svc["spec"]["selector"].items() <= (
        redis_dep["spec"]["template"]["metadata"]["labels"].items()
    )
    (patch,) = docs(TRY_REDIS / kustomization(TRY_REDIS)["patches"][0]["path"])
    url = env_of(bridge_container(patch))["REDIS_URL"]
    assert (
        url == f"redis://{redis_svc['metadata']['name']}:{redis_svc['spec']['ports'][0]['port']}/0"
    )
    assert redis_dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def build(directory: Path) -> list[dict[str, Any]]:
    cmd = _kustomize()
    if cmd is None:
        pytest.skip("no kustomize or kubectl binary here (apt: kubectl; or the kustomize release)")
    done = subprocess.run(  # noqa: S603 - the kustomize or kubectl found on PATH
        [*cmd, str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def test_kustomize_builds_the_base_with_labels_on_every_selector() -> None:
    items = build(BASE)
    assert {d["kind"] for d in items} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
    }
    dep = find(items, "Deployment", "dify-bridge")
    assert dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "dify-bridge"
    assert bridge_container(dep)["image"] == "dify-bridge:0.1.0"
    cm = find(items, "ConfigMap", "dify-bridge-config")
    shipped = BridgeFile.model_validate(yaml.safe_load(cm["data"]["bridge.yaml"]))
    assert shipped == load_bridge_file(BASE / "bridge.yaml")


def test_kustomize_builds_the_try_redis_overlay() -> None:
    items = build(TRY_REDIS)
    dep = find(items, "Deployment", "dify-bridge")
    env = {e["name"]: e.get("value") for e in bridge_container(dep)["env"]}
    assert env["REDIS_URL"] == "redis://dify-bridge-redis:6379/0"
    (url,) = [e for e in bridge_container(dep)["env"] if e["name"] == "REDIS_URL"]
    assert "valueFrom" not in url  # the overlay's value replaces the base's secretKeyRef
    assert env["PORT"] == "3000"  # the patch adds, it does not replace
    redis = find(items, "Service", "dify-bridge-redis")
    assert redis["spec"]["selector"]["app.kubernetes.io/name"] == "dify-bridge"


def test_the_base_does_not_start_without_a_shared_redis_url() -> None:
    c = bridge_container(find(resources(BASE), "Deployment", "dify-bridge"))
    (entry,) = [e for e in c["env"] if e["name"] == "REDIS_URL"]
    ref = entry["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "dify-bridge-secrets", "key": "REDIS_URL"}  # not optional
    assert "REDIS_DATA_DIR" not in env_of(c) and "ALLOW_EMBEDDED_REDIS" not in env_of(c)


def test_the_single_replica_overlay_is_the_one_place_for_the_embedded_redis() -> None:
    items = build(SINGLE)
    assert {d["kind"] for d in items} == {"Deployment", "Service", "ConfigMap"}  # no HPA, PDB
    dep = find(items, "Deployment", "dify-bridge")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # never two pods, even in a rollout
    c = bridge_container(dep)
    env = {e["name"]: e for e in c["env"]}
    assert "REDIS_URL" not in env
    assert env["ALLOW_EMBEDDED_REDIS"]["value"] == "true"
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == env["REDIS_DATA_DIR"]["value"]]
    assert "emptyDir" in volumes[mount["name"]]
    from app.config.settings import load_settings
    from app.state.redis_conn import embedded_refusal

    pod_env = {k: str(v.get("value")) for k, v in env.items() if "value" in v}
    in_cluster = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert embedded_refusal(load_settings(env=pod_env), in_cluster) is None
    assert embedded_refusal(load_settings(env={}), in_cluster)  # without the overlay: refused
