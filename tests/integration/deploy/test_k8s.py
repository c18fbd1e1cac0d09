"""Kubernetes manifests: each kustomization renders, passes strict schema validation for
Kubernetes 1.29, and keeps the rules a platform review checks (hardening, wiring between
selectors, labels and ports, credentials only in Secrets).

Needs `kubectl` on PATH and `kubernetes-validate` installed next to the interpreter.
"""

import base64
import functools
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from router.settings import RouterSettings, load_settings
from services.triton.server import TritonSettings

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "k8s"
KUBERNETES_VERSION = "1.29"
VALIDATOR = Path(sys.executable).parent / "kubernetes-validate"

# Every image of ours is tagged with it, as .ci/images builds them.
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
OVERLAYS = ["dev", "prod"]
JOB_OVERLAYS = ["dev/jobs", "prod/jobs"]
NAMESPACES = {"dev": "switchyard-dev", "prod": "switchyard"}
TASKS = ["topic", "sentiment"]
# Kinds kubernetes-validate has no schema for; checked structurally instead.
NO_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor")}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
CLUSTER_SCOPED = {"Namespace"}

Doc = dict[str, Any]


def kustomize(path: Path) -> list[Doc]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.cache
def _rendered(overlay: str) -> tuple[Doc, ...]:
    return tuple(kustomize(K8S / "overlays" / overlay))


def render(overlay: str) -> list[Doc]:
    """The overlay's documents; a deep copy, so that no test changes another's input."""
    return yaml.safe_load(yaml.safe_dump(list(_rendered(overlay))))


def validate(docs: list[Doc], folder: Path) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate --strict over every document that has a schema."""
    path = folder / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return subprocess.run(
        [str(VALIDATOR), "--strict", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def with_schema(docs: list[Doc]) -> list[Doc]:
    return [doc for doc in docs if (doc["apiVersion"], doc["kind"]) not in NO_SCHEMA]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def pod_template(doc: Doc) -> Doc:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]
    return doc["spec"]["template"]


def pod_templates(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, pod template) for every workload."""
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc, pod_template(doc)


def containers(pod: Doc) -> list[Doc]:
    spec = pod["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in match_labels.items())


def selector_labels(selector: Doc) -> dict[str, str]:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels is checked here: {selector}"
    return dict(selector.get("matchLabels", {}))


def container_ports(pod: Doc) -> dict[str | int, int]:
    """Every way a port of the pod can be named: its name and its number."""
    ports: dict[str | int, int] = {}
    for container in containers(pod):
        for port in container.get("ports", []):
            ports[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def command_line(container: Doc) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} must appear once in {argv}"
    return argv[argv.index(name) + 1]


# --- schema validation -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS + JOB_OVERLAYS)
def test_every_document_passes_strict_validation(overlay: str, tmp_path: Path) -> None:
    docs = with_schema(render(overlay))
    result = validate(docs, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A kind without a schema is only a warning: insist that each document was validated.
    assert "Couldn't find schema" not in output, output
    assert output.count("passed for resource") == len(docs), output


@pytest.mark.parametrize(
    ("description", "plant"),
    [
        ("a port number given as a string", "port_as_string"),
        ("an unknown field under spec", "unknown_field"),
    ],
)
def test_validation_catches_a_planted_error(description: str, plant: str, tmp_path: Path) -> None:
    """The validator must fail a broken manifest, or passing it proves nothing."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    path = tree / "base" / "router-deployment.yaml"
    deployment = yaml.safe_load(path.read_text(encoding="utf-8"))
    if plant == "port_as_string":
        deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = (
            "fifty"
        )
    else:
        deployment["spec"]["replicaz"] = 3
    path.write_text(yaml.safe_dump(deployment, sort_keys=False), encoding="utf-8")

    docs = with_schema(kustomize(tree / "overlays" / "dev"))
    result = validate(docs, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{description} passed validation:\n{output}"
    assert "switchyard-router" in output
    assert ("fifty" if plant == "port_as_string" else "replicaz") in output


# --- resources each overlay must hold ----------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_holds_the_serving_stack(overlay: str) -> None:
    docs = render(overlay)
    for component in ("router", "triton"):
        name = f"switchyard-{component}"
        find(docs, "Deployment", name)
        find(docs, "Service", name)
        find(docs, "PodDisruptionBudget", name)
        find(docs, "ServiceMonitor", name)
        hpa = find(docs, "HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu"}
        # The autoscaler owns the count; a replicas field would reset it on every apply.
        assert "replicas" not in find(docs, "Deployment", name)["spec"]
    for task in TASKS:
        cron = find(docs, "CronJob", f"switchyard-batch-{task}")
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        _minute, _hour, day, month, weekday = cron["spec"]["schedule"].split()
        assert (day, month) == ("*", "*") and weekday.isdigit(), "weekly"
    find(docs, "NetworkPolicy", "default-deny-ingress")
    find(docs, "PersistentVolumeClaim", "switchyard-models")

    namespace = NAMESPACES[overlay]
    assert [d["metadata"]["name"] for d in of_kind(docs, "Namespace")] == [namespace]
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") == namespace, doc["metadata"]["name"]


def test_dev_runs_its_own_redis_with_a_generated_secret() -> None:
    docs = render("dev")
    redis = find(docs, "StatefulSet", "redis")
    assert pod_template(redis)["spec"]["containers"][0]["image"] == "redis:7.2-alpine"
    assert find(docs, "Service", "redis")["spec"]["ports"][0]["port"] == 6379
    secret = find(docs, "Secret", "switchyard-redis")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["redis-url"] == f"redis://:{data['redis-password']}@redis:6379/0"
    for name in ("switchyard-router", "switchyard-triton"):
        assert find(docs, "HorizontalPodAutoscaler", name)["spec"]["minReplicas"] == 1


def test_prod_uses_an_external_redis_and_generates_no_secret() -> None:
    docs = render("prod")
    assert of_kind(docs, "StatefulSet") == []
    assert of_kind(docs, "Secret") == [], "the prod Secret is created out of band"
    assert not any(d["metadata"]["name"] == "redis" for d in docs)
    assert find(docs, "HorizontalPodAutoscaler", "switchyard-router")["spec"]["minReplicas"] == 3
    assert find(docs, "HorizontalPodAutoscaler", "switchyard-triton")["spec"]["minReplicas"] == 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_read_the_redis_url_from_the_secret(overlay: str) -> None:
    docs = render(overlay) + render(f"{overlay}/jobs")
    users = 0
    for workload, pod in pod_templates(docs):
        for container in containers(pod):
            for env in container.get("env", []):
                if env["name"].endswith("REDIS_URL"):
                    users += 1
                    assert "value" not in env, f"{workload['metadata']['name']}: plain URL"
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) == ("switchyard-redis", "redis-url")
    # The router, two CronJobs, the sharded Job and the rollout Job.
    assert users == 5


# Whether the overlay's Redis is a Redis Cluster: prod's managed one is, dev's StatefulSet not.
REDIS_CLUSTER = {"dev": False, "prod": True}


def settings_classes() -> dict[str, type[BaseSettings]]:
    """Each component's settings by the environment prefix it reads."""
    from services.batch.settings import BatchSettings
    from services.pipeline.rollout import RolloutSettings

    return {
        cls.model_config["env_prefix"]: cls
        for cls in (RouterSettings, BatchSettings, RolloutSettings)
    }


def redis_clients(docs: list[Doc]) -> Iterator[tuple[str, str, dict[str, Doc]]]:
    """(where, env prefix, env by name) for every container given a SWITCHYARD_*_REDIS_URL."""
    for workload, pod in pod_templates(docs):
        for container in containers(pod):
            env = {e["name"]: e for e in container.get("env", [])}
            for name in env:
                if name.startswith("SWITCHYARD_") and name.endswith("_REDIS_URL"):
                    where = f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"
                    yield where, name.removesuffix("REDIS_URL"), env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_redis_client_knows_whether_redis_is_a_cluster(overlay: str) -> None:
    """Each container given the Redis URL sets its component's cluster switch as the
    overlay's Redis needs (prod "true"; dev absent or "false"), under a variable that its
    settings class reads, and the pod's plain environment makes valid settings."""
    cluster = REDIS_CLUSTER[overlay]
    classes = settings_classes()
    clients = list(redis_clients(render(overlay) + render(f"{overlay}/jobs")))
    assert len(clients) == 5
    assert {prefix for _, prefix, _ in clients} == set(classes)
    for where, prefix, env in clients:
        cls = classes[prefix]
        assert {"redis_url", "redis_cluster"} <= set(cls.model_fields), cls.__name__
        switch = env.get(f"{prefix}REDIS_CLUSTER")
        if cluster:
            assert switch == {"name": f"{prefix}REDIS_CLUSTER", "value": "true"}, where
        else:
            assert switch is None or switch.get("value") == "false", where
        # A misspelt variable would be ignored, not refused: each must name a field.
        plain = {n: e["value"] for n, e in env.items() if n.startswith(prefix) and "value" in e}
        for name in plain:
            assert name.removeprefix(prefix).lower() in cls.model_fields, f"{where}: {name}"
        # The router's other settings come from its ConfigMap (tested above).
        init = {"model_repository": Path("/models")} if cls is RouterSettings else {}
        with pytest.MonkeyPatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("SWITCHYARD_")]:
                patch.delenv(key)
            for key, value in {**plain, f"{prefix}REDIS_URL": "rediss://redis:6379/0"}.items():
                patch.setenv(key, value)
            settings = cls(**init)
        assert settings.redis_cluster is cluster, where


# --- hardening -----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS + JOB_OVERLAYS)
def test_every_container_is_non_root_read_only_and_bounded(overlay: str) -> None:
    checked = 0
    for workload, pod in pod_templates(render(overlay)):
        for container in containers(pod):
            where = f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"
            assert_hardened_and_bounded(where, pod, container)
            checked += 1
    assert checked >= 2


def assert_hardened_and_bounded(where: str, pod: Doc, container: Doc) -> None:
    """What the `restricted` Pod Security Standard asks of a container (with its pod's
    security context), and requests and limits of CPU and memory."""
    context = {**pod["spec"].get("securityContext", {}), **container.get("securityContext", {})}
    assert context.get("runAsNonRoot") is True, where
    assert isinstance(context.get("runAsUser"), int) and context["runAsUser"] > 0, where
    assert context.get("readOnlyRootFilesystem") is True, where
    assert context.get("allowPrivilegeEscalation") is False, where
    assert "ALL" in context.get("capabilities", {}).get("drop", []), where
    assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    resources = container.get("resources", {})
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where} {bound}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_have_startup_readiness_and_liveness_probes(overlay: str) -> None:
    docs = render(overlay)
    for deployment in of_kind(docs, "Deployment"):
        for container in pod_template(deployment)["spec"]["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{deployment['metadata']['name']}: {probe}"

    router = pod_template(find(docs, "Deployment", "switchyard-router"))["spec"]
    assert router["enableServiceLinks"] is False, "SWITCHYARD_ROUTER_* would leak in"
    assert router["terminationGracePeriodSeconds"] >= 10
    (container,) = router["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051
    assert container_ports({"spec": router})["metrics"] == 9464

    triton = pod_template(find(docs, "Deployment", "switchyard-triton"))
    (container,) = triton["spec"]["containers"]
    ports = container_ports(triton)
    paths = {"readinessProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}
    for probe, path in paths.items():
        assert container[probe]["httpGet"]["path"] == path
        assert ports[container[probe]["httpGet"]["port"]] == 8000
    assert {ports["http"], ports["grpc"], ports["metrics"]} == {8000, 8001, 8002}
    argv = command_line(container)
    if argv[0] == "tritonserver":  # NVIDIA's image (prod)
        assert "--model-repository=/models/model_repository" in argv
        assert "--strict-readiness=true" in argv
    else:  # the CPU image (dev), whose server is ready only when every model is
        assert argv[:3] == ["switchyard", "triton", "serve"], argv
        assert option(argv, "--repository") == "/models/model_repository"


# --- wiring: selectors, ports, names -------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_pdbs_and_hpas_find_their_pods(overlay: str) -> None:
    docs = render(overlay)
    pods = [pod for _, pod in pod_templates(docs)]
    for service in of_kind(docs, "Service"):
        chosen = [p for p in pods if selects(service["spec"]["selector"], p["metadata"]["labels"])]
        assert chosen, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for pod in chosen:
                assert port["targetPort"] in container_ports(pod), (service, port)
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        match = selector_labels(pdb["spec"]["selector"])
        assert any(selects(match, p["metadata"]["labels"]) for p in pods), pdb
    for deployment in of_kind(docs, "Deployment"):
        match = selector_labels(deployment["spec"]["selector"])
        assert selects(match, pod_template(deployment)["metadata"]["labels"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitors_scrape_named_metrics_ports(overlay: str) -> None:
    docs = render(overlay)
    monitors = of_kind(docs, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"switchyard-router", "switchyard-triton"}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        match = selector_labels(monitor["spec"]["selector"])
        services = [s for s in of_kind(docs, "Service") if selects(match, s["metadata"]["labels"])]
        assert services, f"{monitor['metadata']['name']} selects no Service"
        assert monitor["spec"]["endpoints"], monitor
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint.get("path", "/metrics") == "/metrics"
            # A selected Service without the port (Triton's headless one) adds no target;
            # exactly one must have it, or the same pods would be scraped twice.
            having = [
                service["metadata"]["name"]
                for service in services
                if endpoint["port"] in {port.get("name") for port in service["spec"]["ports"]}
            ]
            assert len(having) == 1, (monitor["metadata"]["name"], endpoint, having)


def policy_peers(rule: Doc) -> list[Doc]:
    return list(rule.get("from", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_select_real_pods_and_ports(overlay: str) -> None:
    docs = render(overlay)
    pods = [pod for _, pod in pod_templates(docs + render(f"{overlay}/jobs"))]

    def matching(selector: Doc) -> list[Doc]:
        match = selector_labels(selector)
        return [p for p in pods if selects(match, p["metadata"]["labels"])]

    for policy in of_kind(docs, "NetworkPolicy"):
        name = policy["metadata"]["name"]
        targets = matching(policy["spec"]["podSelector"])
        assert targets, f"{name} selects no pod"
        for rule in policy["spec"].get("ingress", []):
            for peer in policy_peers(rule):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert matching(peer["podSelector"]), f"{name}: peer {peer} matches no pod"
            for port in rule.get("ports", []):
                for target in targets:
                    assert port["port"] in container_ports(target), f"{name}: {port}"

    deny = find(docs, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}


def peers_by_port(policy: Doc) -> dict[int, list[Doc]]:
    peers: dict[int, list[Doc]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            peers.setdefault(port["port"], []).extend(policy_peers(rule))
    return peers


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_router_reaches_triton_and_redis(overlay: str) -> None:
    docs = render(overlay)
    router = {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "switchyard", "app.kubernetes.io/component": "router",
    }}}  # fmt: skip
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }

    triton = peers_by_port(find(docs, "NetworkPolicy", "switchyard-triton-ingress"))
    assert triton == {8000: [router], 8001: [router], 8002: [monitoring]}
    routers = peers_by_port(find(docs, "NetworkPolicy", "switchyard-router-ingress"))
    assert routers == {50051: [{"namespaceSelector": {}}], 9464: [monitoring]}

    redis_policies = [p for p in of_kind(docs, "NetworkPolicy") if "redis" in p["metadata"]["name"]]
    if overlay == "prod":
        assert redis_policies == [], "prod Redis is outside the cluster"
        return
    (redis,) = redis_policies
    peers = peers_by_port(redis)[6379]
    components = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in peers
    }
    assert components == {"router", "batch", "models-rollout"}
    # Every pod given the Redis URL may connect, the one-off Jobs' included.
    for workload, pod in pod_templates(docs + render(f"{overlay}/jobs")):
        if any(
            env["name"].endswith("REDIS_URL")
            for container in containers(pod)
            for env in container.get("env", [])
        ):
            labels = pod["metadata"]["labels"]
            admitted = any(selects(selector_labels(p["podSelector"]), labels) for p in peers)
            assert admitted, f"{workload['metadata']['name']} holds the URL but cannot connect"


# --- credentials and settings ------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_values_never_appear_in_config_maps(overlay: str) -> None:
    docs = render(overlay)
    secrets = [
        value
        for secret in of_kind(docs, "Secret")
        for value in [
            *(base64.b64decode(v).decode() for v in secret.get("data", {}).values()),
            *secret.get("stringData", {}).values(),
        ]
    ]
    config = "\n".join(
        str(value) for cm in of_kind(docs, "ConfigMap") for value in cm.get("data", {}).values()
    )
    assert of_kind(docs, "ConfigMap"), "the router's settings are a ConfigMap"
    for value in secrets:
        assert value not in config
    # Whatever the Secret's source, no Redis URL (and so no password) sits in plain config.
    assert "redis://" not in config and "rediss://" not in config
    assert "redis_url" not in config


def router_settings(docs: list[Doc], folder: Path) -> RouterSettings:
    """The router's settings as its pod loads them from the mounted ConfigMap (without the
    environment, which only adds the Redis settings)."""
    (config_map,) = [cm for cm in of_kind(docs, "ConfigMap") if "router.yaml" in cm.get("data", {})]
    router = pod_template(find(docs, "Deployment", "switchyard-router"))
    volumes = {v["name"]: v for v in router["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]

    path = folder / "router.yaml"
    path.write_text(config_map["data"]["router.yaml"], encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_ROUTER_")}
    with pytest.MonkeyPatch.context() as patch:
        for key in set(os.environ) - set(clean):
            patch.delenv(key)
        return load_settings(path)


def dns_target(target: str) -> tuple[str, int]:
    """Host and port of a gRPC `dns:///host:port` target (no DNS server authority)."""
    assert target.startswith("dns:///"), f"{target} is not a dns:/// target"
    host, _, port = target.removeprefix("dns:///").rpartition(":")
    assert host and port.isdigit(), target
    return host, int(port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_router_config_map_loads_as_router_settings(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay)
    settings = router_settings(docs, tmp_path)
    assert settings.host == "0.0.0.0"
    assert (settings.grpc_port, settings.metrics_port) == (50051, 9464)
    assert str(settings.model_repository) == "/models/model_repository"
    # The tasks come from the model repository's cards, not from the ConfigMap.
    assert settings.tasks == {}
    host, port = dns_target(settings.triton_url)
    triton = find(docs, "Service", host.partition(".")[0])
    assert port in {p["port"] for p in triton["spec"]["ports"] if p["name"] == "grpc"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_router_balances_over_every_ready_triton_pod(overlay: str, tmp_path: Path) -> None:
    """triton_url names a headless Service of the overlay, so DNS lists every ready Triton
    pod for the router to balance over; the router connects to the pod IPs on the target's
    port, which the pods must serve and Triton's NetworkPolicy must admit from the router."""
    docs = render(overlay)
    settings = router_settings(docs, tmp_path)
    host, port = dns_target(settings.triton_url)
    # The short name resolves in the pod's own namespace; a longer one must be this one's.
    name, _, domain = host.partition(".")
    namespace = NAMESPACES[overlay]
    assert domain in {"", f"{namespace}.svc", f"{namespace}.svc.cluster.local"}, host

    service = find(docs, "Service", name)["spec"]
    assert service.get("clusterIP") == "None", f"{name} is not headless"
    assert service.get("publishNotReadyAddresses", False) is False, "DNS would list unready pods"
    (grpc,) = [p for p in service["ports"] if p.get("name") == "grpc"]
    assert grpc["port"] == port

    pods = [
        p for _, p in pod_templates(docs) if selects(service["selector"], p["metadata"]["labels"])
    ]
    triton = pod_template(find(docs, "Deployment", "switchyard-triton"))
    assert pods == [triton], f"{name} must select the Triton pods, and only those"
    # No Service in between: the pods themselves must serve the port the router dials.
    assert container_ports(triton)[grpc["targetPort"]] == port

    router = pod_template(find(docs, "Deployment", "switchyard-router"))["metadata"]["labels"]
    admitted = [
        policy["metadata"]["name"]
        for policy in of_kind(docs, "NetworkPolicy")
        if selects(selector_labels(policy["spec"]["podSelector"]), triton["metadata"]["labels"])
        for rule in policy["spec"].get("ingress", [])
        if any(p["port"] == port for p in rule.get("ports", []))
        for peer in policy_peers(rule)
        if "podSelector" in peer
        and "namespaceSelector" not in peer
        and selects(selector_labels(peer["podSelector"]), router)
    ]
    assert admitted, f"no NetworkPolicy admits the router to Triton's port {port}"

    # A terminating pod keeps serving until every router has looked the name up again (its
    # interval plus the 5 s TTL of cluster DNS), then drains within the grace period.
    (container,) = triton["spec"]["containers"]
    sleep, seconds = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep" and int(seconds) >= settings.triton_resolve_seconds + 5
    argv = command_line(container)
    if argv[0] == "tritonserver":
        (flag,) = [a for a in argv if a.startswith("--exit-timeout-secs=")]
        drain = float(flag.partition("=")[2])
    else:  # `switchyard triton serve` stops its server within stop_timeout
        drain = TritonSettings.model_fields["stop_timeout"].default
    grace = triton["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(seconds) + drain, "Triton killed mid-drain"


# --- the batch jobs ------------------------------------------------------------------------


def batch_argv(docs: list[Doc], kind: str, name: str) -> tuple[list[str], Doc]:
    (container,) = pod_template(find(docs, kind, name))["spec"]["containers"]
    return command_line(container), container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_batch_runs_label_each_task_with_its_queries(overlay: str) -> None:
    docs = render(overlay)
    for task in TASKS:
        argv, container = batch_argv(docs, "CronJob", f"switchyard-batch-{task}")
        assert argv[:3] == ["switchyard", "batch", "run"]
        assert option(argv, "--task") == task
        assert option(argv, "--input") == f"/queries/{task}.jsonl"
        assert option(argv, "--build") == "/models"
        assert "--include-misses" in argv
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["SWITCHYARD_BATCH_BUILD_DIR"] == "/models"
        assert env["SWITCHYARD_BATCH_TTL_SECONDS"] == "691200"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/models"]["readOnly"] is True

    query_maps = [cm for cm in of_kind(docs, "ConfigMap") if "topic.jsonl" in cm["data"]]
    assert len(query_maps) == 1
    assert set(query_maps[0]["data"]) == {f"{task}.jsonl" for task in TASKS}


def test_batch_options_exist_in_the_cli() -> None:
    """Every option the manifests pass is one `switchyard batch run` knows."""
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "batch", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
    )
    assert result.returncode == 0, result.stderr
    docs = render("prod") + render("prod/jobs")
    for workload, pod in pod_templates(docs):
        argv = command_line(containers(pod)[0])
        if argv[:3] != ["switchyard", "batch", "run"]:
            continue
        for arg in argv[3:]:
            if arg.startswith("--"):
                assert arg in result.stdout, f"{workload['metadata']['name']}: {arg}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sharded_job_passes_each_pod_its_index(overlay: str) -> None:
    jobs = render(f"{overlay}/jobs")
    job = find(jobs, "Job", "switchyard-batch-topic-sharded")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4

    argv, container = batch_argv(jobs, "Job", "switchyard-batch-topic-sharded")
    shard = option(argv, "--shard")
    variable, count = shard.removeprefix("$(").split(")/")
    assert count == "4"
    env = {e["name"]: e for e in container["env"]}
    assert env[variable]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    # Only the last shard flips the cache: every shard must run what the CronJob runs.
    cron_argv, _ = batch_argv(render(overlay), "CronJob", "switchyard-batch-topic")
    i = argv.index("--shard")
    assert argv[:i] + argv[i + 2 :] == cron_argv


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_off_jobs_share_namespace_images_and_queries(overlay: str) -> None:
    main, jobs = render(overlay), render(f"{overlay}/jobs")
    images = {
        c["image"]
        for _, pod in pod_templates(main)
        for c in containers(pod)
        if "batch" in c["image"]
    }
    assert len(images) == 1
    for workload, pod in pod_templates(jobs):
        assert workload["metadata"]["namespace"] == NAMESPACES[overlay]
        assert {c["image"] for c in containers(pod)} == images, workload["metadata"]["name"]
    # Same content, same hash-suffixed name: applying both never creates a second copy.
    main_queries = [cm for cm in of_kind(main, "ConfigMap") if "topic.jsonl" in cm["data"]]
    assert of_kind(jobs, "ConfigMap") == main_queries
    build = find(jobs, "Job", "switchyard-models-build")
    (container,) = pod_template(build)["spec"]["containers"]
    assert command_line(container) == [
        "switchyard", "models", "build", "--profile", "full", "--out", "/models",
    ]  # fmt: skip


def test_dev_runs_the_images_ci_builds() -> None:
    """Dev's images are exactly the tags .ci/images builds and runs (the project's version),
    its Triton the CPU image, which needs no GPU and no NVIDIA registry."""
    docs = [*render("dev"), *render("dev/jobs"), *render("dev/ray")]
    ours = {
        c["image"]
        for _, pod in pod_templates(docs)
        for c in containers(pod)
        if c["image"].startswith("switchyard-")
    }
    assert ours == {f"switchyard-{c}:{VERSION}" for c in ("router", "batch", "triton")}
    triton = pod_template(find(render("dev"), "Deployment", "switchyard-triton"))
    (container,) = containers(triton)
    assert command_line(container) == [
        "switchyard", "triton", "serve", "--repository", "/models/model_repository",
    ]  # fmt: skip
    assert container["securityContext"]["runAsUser"] == 10001
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in triton["spec"]["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    # /tmp is an emptyDir, which allows exec: the server loads its backend from there.
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_prod_images_are_pinned() -> None:
    for workload, pod in pod_templates(render("prod") + render("prod/jobs")):
        for container in containers(pod):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and "/" in name, f"{workload['metadata']['name']}: {image} has no registry"
            assert tag and tag != "latest" and "/" not in tag, f"{image} is not pinned"
            if name.rpartition("/")[2].startswith("switchyard-"):
                assert tag == VERSION, f"{image}: not the tag CI builds ({VERSION})"


# --- the rollout Job -------------------------------------------------------------------


def models_commands() -> dict[str, Any]:
    """The `switchyard models` subcommands, as click builds them from the typer app."""
    import typer.main

    from services.cli import app

    group = typer.main.get_command(app)
    return dict(group.commands["models"].commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_job_runs_a_models_subcommand_with_redis_from_the_secret(overlay: str) -> None:
    """The Job runs a real `switchyard models` subcommand with options it knows, checks
    versions against the mounted repository and reads Redis the way RolloutSettings does."""
    from services.pipeline.rollout import RolloutSettings

    jobs = render(f"{overlay}/jobs")
    job = find(jobs, "Job", "switchyard-models-rollout")
    assert job["spec"]["backoffLimit"] <= 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = pod_template(job)
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "models-rollout"
    assert pod["spec"]["serviceAccountName"] == "switchyard-batch"
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["switchyard", "models"]

    commands = models_commands()
    # k8s/README.md runs the Job with each of these.
    for name in ("canary", "promote", "rollback", "rollout"):
        assert name in commands, f"`switchyard models {name}` is not in the CLI"
    args = container["args"]
    # The default only prints the records: applying the Job as it is changes nothing.
    assert args[0] == "rollout"
    known = {opt for param in commands[args[0]].params for opt in param.opts}
    for arg in args[1:]:
        if arg.startswith("--"):
            assert arg in known, f"`switchyard models {args[0]}` has no option {arg}"
    repository = option(args, "--model-repository")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert repository.startswith("/models/") and mounts["/models"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]
    assert claim == {"claimName": "switchyard-models", "readOnly": True}

    env = {e["name"]: e for e in container["env"]}
    url = env["SWITCHYARD_ROLLOUT_REDIS_URL"]
    assert "value" not in url
    assert url["valueFrom"]["secretKeyRef"] == {"name": "switchyard-redis", "key": "redis-url"}
    fields = set(RolloutSettings.model_fields)
    for name, variable in env.items():
        if name.startswith("SWITCHYARD_ROLLOUT_"):
            assert name.removeprefix("SWITCHYARD_ROLLOUT_").lower() in fields, name
            # The URL (and any credential) comes from the Secret; the cluster switch is not one.
            if "REDIS" in name and name != "SWITCHYARD_ROLLOUT_REDIS_CLUSTER":
                assert "value" not in variable, f"{name} is plain config, not from the Secret"

    if overlay == "dev":
        # The dev Secret's URL, as the pod gets it, makes valid settings (credentials once).
        secret = find(render("dev"), "Secret", "switchyard-redis")
        values = {
            name: base64.b64decode(secret["data"][e["valueFrom"]["secretKeyRef"]["key"]]).decode()
            for name, e in env.items()
            if name.startswith("SWITCHYARD_ROLLOUT_")
        }
        with pytest.MonkeyPatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("SWITCHYARD_ROLLOUT_")]:
                patch.delenv(key)
            for key, value in values.items():
                patch.setenv(key, value)
            settings = RolloutSettings()
        assert settings.redis_url == values["SWITCHYARD_ROLLOUT_REDIS_URL"]
