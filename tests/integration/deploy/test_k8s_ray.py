"""The batch run on Ray: the KubeRay RayJob of k8s/jobs/ray, as k8s/overlays/<env>/ray render it.

kubernetes-validate has no schema for a RayJob, so the RayJob is validated with the
jsonschema library against the OpenAPI v3 schema of KubeRay's CRD, vendored in k8s/schemas/
(its README names the release), made strict as `kubernetes-validate --strict` treats the
built-in kinds: an object refuses any field its schema does not list. Planted errors must
fail that validation. The rest are the rules the CronJobs keep, checked on every pod of the
RayJob (head, worker groups, submitter), and what KubeRay needs that its schema does not say.

Needs `kubectl` on PATH and `kubernetes-validate` installed next to the interpreter.
"""

import copy
import functools
import json
import os
import re
import shlex
import shutil
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from jsonschema import Draft7Validator  # type: ignore[import-untyped]
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.integration.deploy.test_compose import (
    dockerfile_extras,
    installed_closure,
    project_requirements,
)
from tests.integration.deploy.test_k8s import (
    JOB_OVERLAYS,
    K8S,
    NAMESPACES,
    OVERLAYS,
    REDIS_CLUSTER,
    REPO,
    Doc,
    assert_hardened_and_bounded,
    command_line,
    containers,
    find,
    kustomize,
    of_kind,
    option,
    pod_template,
    pod_templates,
    render,
    selector_labels,
    selects,
    validate,
)

# overlays/<env>/ray of each environment.
RAY_OVERLAYS = {"dev": "dev/ray", "prod": "prod/ray"}
SCHEMA_FILE = K8S / "schemas" / "rayjob-ray.io-v1.json"
RAYJOB = "switchyard-batch-topic-ray"
TASK = "topic"
# KubeRay's limit: the RayCluster it creates appends 6 characters to the RayJob's name.
MAX_RAYJOB_NAME = 47
# KubeRay probes Ray pods over HTTP from this Ray version on; before it, with `wget`, which
# the batch image does not have.
HTTP_PROBES_FROM = Version("2.53.0")
# Where the KubeRay operator runs (k8s/README.md installs it there).
OPERATOR_NAMESPACE = "kuberay-system"
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


# --- the vendored schema, made strict --------------------------------------------------------


def vendored() -> Doc:
    data: Doc = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return data


def strict(schema: Doc) -> Doc:
    """One OpenAPI v3 schema of a CRD as a JSON Schema that refuses what the API server would
    drop or refuse: an object that lists its properties admits no other (as
    `kubernetes-validate --strict`), `nullable` admits null, int32 and int64 their ranges."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(s) for name, s in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    if "items" in out:
        out["items"] = strict(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [strict(s) for s in out[key]]
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("type") == "integer" and out.get("format") in INT_RANGES:
        low, high = INT_RANGES[out["format"]]
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    return out


# The CRD leaves metadata open (`type: object`); these are the ObjectMeta fields a manifest
# sets, typed as Kubernetes types them.
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}


@functools.cache
def rayjob_validator() -> Draft7Validator:
    crd = vendored()
    schema = strict(crd["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": f"{crd['group']}/{crd['version']}"}
    schema["properties"]["kind"] = {"const": crd["kind"]}
    schema["properties"]["metadata"] = METADATA
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def schema_errors(doc: Doc) -> list[str]:
    """Each way the document breaks the RayJob schema, as `path: message`."""
    errors = rayjob_validator().iter_errors(doc)
    return sorted(f"{error.json_path}: {error.message}" for error in errors)


# --- the rendered RayJob -----------------------------------------------------------------------


def rayjob(env: str) -> Doc:
    return find(render(RAY_OVERLAYS[env]), "RayJob", RAYJOB)


def cluster(job: Doc) -> Doc:
    spec: Doc = job["spec"]["rayClusterSpec"]
    return spec


def ray_nodes(job: Doc) -> list[tuple[str, Doc]]:
    """(which, pod template) of the pods that run Ray: the head and each worker group."""
    spec = cluster(job)
    nodes = [("head", spec["headGroupSpec"]["template"])]
    nodes += [(f"worker {g['groupName']}", g["template"]) for g in spec["workerGroupSpecs"]]
    return nodes


def ray_pods(job: Doc) -> list[tuple[str, Doc]]:
    """Every pod template of the RayJob: the Ray nodes and the submitter."""
    return [*ray_nodes(job), ("submitter", job["spec"]["submitterPodTemplate"])]


def ray_container(pod: Doc) -> Doc:
    """The container that runs Ray: KubeRay takes the first one."""
    container: Doc = pod["spec"]["containers"][0]
    return container


def entrypoint(job: Doc) -> list[str]:
    return shlex.split(job["spec"]["entrypoint"])


def cron_job(env: str) -> Doc:
    return find(render(env), "CronJob", f"switchyard-batch-{TASK}")


def options(argv: list[str]) -> dict[str, str | None]:
    """`--name value` and `--flag` (None) of a command line."""
    found: dict[str, str | None] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            following = argv[i + 1] if i + 1 < len(argv) else "--"
            found[arg] = None if following.startswith("--") else following
    return found


def mounts(pod: Doc, container: Doc) -> dict[str, tuple[Doc, Doc]]:
    """Mount path -> (the mount, the volume it mounts)."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in container["volumeMounts"]}


def volume_source(volume: Doc) -> Doc:
    return {key: value for key, value in volume.items() if key != "name"}


def pinned(name: str) -> str:
    """The version .ci/constraints.txt pins `name` to."""
    text = (REPO / ".ci/constraints.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        requirement = line.split("#")[0].strip()
        if requirement and canonicalize_name(re.split(r"[=<>~!\[; ]", requirement)[0]) == name:
            assert "==" in requirement, f"{requirement} is not a pin"
            return requirement.partition("==")[2].split("+")[0].strip()
    raise AssertionError(f"{name} is not pinned in .ci/constraints.txt")


# --- where the RayJob renders ----------------------------------------------------------------


def test_kuberay_objects_render_only_from_the_ray_kustomizations() -> None:
    """The base, the main overlays and the one-off Jobs work on a cluster without KubeRay:
    only overlays/<env>/ray render a ray.io object."""
    for overlay in OVERLAYS + JOB_OVERLAYS:
        kinds = [d["kind"] for d in render(overlay) if d["apiVersion"].startswith("ray.io/")]
        assert kinds == [], f"{overlay} renders {kinds}: it would need the KubeRay CRDs"
    for overlay in RAY_OVERLAYS.values():
        docs = render(overlay)
        assert [d["kind"] for d in docs if d["apiVersion"].startswith("ray.io/")] == ["RayJob"]


# --- schema validation -------------------------------------------------------------------------


@pytest.mark.parametrize("env", sorted(RAY_OVERLAYS))
def test_every_document_passes_validation(env: str, tmp_path: Path) -> None:
    docs = render(RAY_OVERLAYS[env])
    job = find(docs, "RayJob", RAYJOB)
    assert schema_errors(job) == []
    # The rest (the queries ConfigMap, the NetworkPolicy) as the other overlays' documents.
    others = [d for d in docs if d is not job]
    assert {d["kind"] for d in others} == {"ConfigMap", "NetworkPolicy"}
    result = validate(others, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("passed for resource") == len(others), output


def _head(job: Doc) -> Doc:
    return ray_container(cluster(job)["headGroupSpec"]["template"])


def _worker(job: Doc) -> Doc:
    return ray_container(cluster(job)["workerGroupSpecs"][0]["template"])


PLANTS: dict[str, tuple[Callable[[Doc], None], str]] = {
    # a misspelt field, which the API server would drop without a word
    "unknown field under spec": (
        lambda job: job["spec"].update(shutdownAfterJobFinish=True),
        "$.spec: Additional properties are not allowed ('shutdownAfterJobFinish'",
    ),
    "field in the wrong place": (
        lambda job: cluster(job)["headGroupSpec"].update(replicas=1),
        "$.spec.rayClusterSpec.headGroupSpec: Additional properties",
    ),
    "unknown field in a worker's container": (
        lambda job: _worker(job).update(imagePullPolicyy="Always"),
        "$.spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0]: Additional",
    ),
    "a port number given as a string": (
        lambda job: _head(job)["ports"][0].update(containerPort="fifty"),
        "$.spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].ports[0]"
        ".containerPort: 'fifty' is not of type 'integer'",
    ),
    "a boolean given as a string": (
        lambda job: job["spec"].update(shutdownAfterJobFinishes="yes"),
        "$.spec.shutdownAfterJobFinishes: 'yes' is not of type 'boolean'",
    ),
    "a worker group without its name": (
        lambda job: cluster(job)["workerGroupSpecs"][0].pop("groupName"),
        "$.spec.rayClusterSpec.workerGroupSpecs[0]: 'groupName' is a required property",
    ),
    "a value outside an enum": (
        lambda job: cluster(job)["authOptions"].update(mode="tokens"),
        "$.spec.rayClusterSpec.authOptions.mode: 'tokens' is not one of",
    ),
    "an int32 out of range": (
        lambda job: job["spec"].update(activeDeadlineSeconds=2**31),
        "$.spec.activeDeadlineSeconds: 2147483648 is greater than the maximum",
    ),
    "another API version": (
        lambda job: job.update(apiVersion="ray.io/v1alpha1"),
        "$.apiVersion: 'ray.io/v1' was expected",
    ),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_schema_validation_catches_a_planted_error(plant: str) -> None:
    """The validator must fail a broken RayJob, or passing it proves nothing."""
    job = copy.deepcopy(rayjob("prod"))
    change, expected = PLANTS[plant]
    change(job)
    errors = schema_errors(job)
    assert errors, f"{plant} passed validation"
    assert any(error.startswith(expected) for error in errors), errors


def test_an_error_planted_in_the_manifest_fails_the_rendered_validation(tmp_path: Path) -> None:
    """The same through the file and kustomize: what the tests validate is what ships."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    path = tree / "jobs" / "ray" / "batch-rayjob.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count("  shutdownAfterJobFinishes: true\n") == 1
    path.write_text(text.replace("shutdownAfterJobFinishes:", "shutdownAfterJobsFinish:"))
    job = find(kustomize(tree / "overlays" / "prod" / "ray"), "RayJob", RAYJOB)
    assert any("'shutdownAfterJobsFinish' was unexpected" in e for e in schema_errors(job))


def test_the_vendored_schema_is_a_kuberay_release_and_what_the_readmes_name() -> None:
    crd = vendored()
    source = crd["source"]
    assert (crd["group"], crd["version"], crd["kind"]) == ("ray.io", "v1", "RayJob")
    assert source["repository"] == "https://github.com/ray-project/kuberay"
    assert source["path"] == "ray-operator/config/crd/bases/ray.io_rayjobs.yaml"
    assert source["license"] == "Apache-2.0"
    release = source["release"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", release), f"{release} is not a stable release"
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    notes = (K8S / "schemas" / "README.md").read_text(encoding="utf-8")
    assert release in notes and source["commit"] in notes and "Apache" in notes
    # The operator k8s/README.md installs is the release the manifest is validated against.
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    helm = re.findall(r"helm (?:install|upgrade)[^\n]*kuberay-operator[^\n]*", readme)
    assert helm, "k8s/README.md does not say how to install KubeRay"
    for line in helm:
        assert f"--version {release.removeprefix('v')}" in line, line
    # k8s/README.md starts the weekly run without a schedule on the RayJob; in a release
    # whose RayJob has one, use it instead (k8s/README.md, "Batch on Ray").
    assert "schedule" not in crd["openAPIV3Schema"]["properties"]["spec"]["properties"]


# --- the run ---------------------------------------------------------------------------------


@pytest.mark.parametrize("env", sorted(RAY_OVERLAYS))
def test_rayjob_runs_the_weekly_batch_on_ray(env: str) -> None:
    """The entrypoint is the CronJob's run with --engine ray over a folder of the task's
    queries, on a cluster that lives only for the run and is bounded like the CronJob."""
    job = rayjob(env)
    name = job["metadata"]["name"]
    assert len(name) <= MAX_RAYJOB_NAME and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    spec = job["spec"]
    # KubeRay's modes are a Go enum its CRD does not carry.
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert 0 < spec["ttlSecondsAfterFinished"] <= 3600
    cron = cron_job(env)["spec"]["jobTemplate"]["spec"]
    assert spec["activeDeadlineSeconds"] == cron["activeDeadlineSeconds"]
    assert spec["backoffLimit"] == cron["backoffLimit"] > 0, "a retry resumes the run"
    assert 0 < spec["preRunningDeadlineSeconds"] < spec["activeDeadlineSeconds"]

    argv = entrypoint(job)
    assert argv[:3] == ["switchyard", "batch", "run"]
    assert option(argv, "--engine") == "ray"
    assert option(argv, "--task") == TASK
    # KubeRay sets RAY_ADDRESS for the entrypoint; one run, not a shard of one.
    assert "--ray-address" not in argv and "--shard" not in argv
    # Everything else is what the weekly CronJob runs, but the input: a folder.
    cron_argv = command_line(pod_template(cron_job(env))["spec"]["containers"][0])
    cron_options = options(cron_argv)
    assert cron_options.pop("--input") == f"/queries/{TASK}.jsonl"
    ray_options = options(argv)
    for name, value in cron_options.items():
        assert name in ray_options, f"the CronJob passes {name}, the RayJob does not"
        assert ray_options[name] == value, name
    assert "--include-misses" in ray_options

    # The driver runs on the head: its metrics file goes to a folder it may write.
    head = cluster(job)["headGroupSpec"]["template"]
    metrics = Path(option(argv, "--metrics-file"))
    writable = [
        Path(path)
        for path, (mount, _) in mounts(head, ray_container(head)).items()
        if not mount.get("readOnly")
    ]
    assert any(metrics.parent.is_relative_to(p) for p in writable), metrics


@pytest.mark.parametrize("env", sorted(RAY_OVERLAYS))
def test_every_ray_node_reads_the_task_queries_and_the_build_where_the_driver_does(
    env: str,
) -> None:
    """Ray Data reads the inputs on the workers and the teacher actors load the teacher
    there: every Ray pod mounts the same volumes at the same paths, read-only."""
    job = rayjob(env)
    argv = entrypoint(job)
    folder = option(argv, "--input")
    build = option(argv, "--build")
    queries = [cm for cm in of_kind(render(env), "ConfigMap") if f"{TASK}.jsonl" in cm["data"]]
    (queries_name,) = [cm["metadata"]["name"] for cm in queries]

    layouts = []
    for which, pod in ray_nodes(job):
        container = ray_container(pod)
        mounted = mounts(pod, container)
        env_values = {e["name"]: e.get("value") for e in container["env"]}
        assert env_values["SWITCHYARD_BATCH_BUILD_DIR"] == build, which

        models, volume = mounted[build]
        assert models["readOnly"] is True, which
        assert volume["persistentVolumeClaim"] == {
            "claimName": "switchyard-models",
            "readOnly": True,
        }, which

        # The input folder holds the task's query file, from the ConfigMap the CronJobs
        # mount (its hash-suffixed name: kustomize rewrote the RayJob's reference), and
        # nothing else: a folder is read whole.
        inside = {p: m for p, m in mounted.items() if Path(p).parent == Path(folder)}
        assert [Path(p).name for p in inside] == [f"{TASK}.jsonl"], which
        for mount, volume in inside.values():
            assert mount["readOnly"] is True and mount["subPath"] == f"{TASK}.jsonl", which
            assert volume["configMap"]["name"] == queries_name, which
        assert not any(Path(p).is_relative_to(folder) for p in set(mounted) - set(inside))

        assert "emptyDir" in mounted["/tmp"][1], f"{which}: Ray's session folder"
        layouts.append(
            {path: (m.get("subPath"), volume_source(v)) for path, (m, v) in mounted.items()}
        )
    assert all(layout == layouts[0] for layout in layouts), "Ray pods mount different volumes"


@pytest.mark.parametrize("env", sorted(RAY_OVERLAYS))
def test_ray_nodes_read_redis_from_the_secret_with_the_batch_settings(env: str) -> None:
    """Driver and teacher actors see one Redis and one generation TTL: the head's and every
    worker's environment is the same, the URL comes from the CronJobs' Secret, each plain
    SWITCHYARD_BATCH_* variable names a BatchSettings field, and the cluster switch is set
    as the overlay's Redis needs."""
    from services.batch.settings import BatchSettings

    job = rayjob(env)
    cron = {e["name"]: e for e in pod_template(cron_job(env))["spec"]["containers"][0]["env"]}
    environments = []
    for which, pod in ray_nodes(job):
        env_vars = {e["name"]: e for e in ray_container(pod)["env"]}
        url = env_vars["SWITCHYARD_BATCH_REDIS_URL"]
        assert url == cron["SWITCHYARD_BATCH_REDIS_URL"], which
        assert url["valueFrom"]["secretKeyRef"] == {"name": "switchyard-redis", "key": "redis-url"}
        for name in ("SWITCHYARD_BATCH_BUILD_DIR", "SWITCHYARD_BATCH_TTL_SECONDS", "HOME"):
            assert env_vars[name] == cron[name], f"{which}: {name} differs from the CronJob's"
        switch = env_vars.get("SWITCHYARD_BATCH_REDIS_CLUSTER")
        if REDIS_CLUSTER[env]:
            assert switch == {"name": "SWITCHYARD_BATCH_REDIS_CLUSTER", "value": "true"}, which
        else:
            assert switch is None or switch.get("value") == "false", which
        for name, variable in env_vars.items():
            if name.startswith("SWITCHYARD_") and "value" not in variable:
                assert name == "SWITCHYARD_BATCH_REDIS_URL", f"{which}: {name} from elsewhere"
        # Ray sets OMP_NUM_THREADS in each task and actor to its CPUs, unless the pod sets
        # it for all of them (as the CronJobs do for their one process).
        assert "OMP_NUM_THREADS" not in env_vars, which
        environments.append(env_vars)
    assert all(e == environments[0] for e in environments), "head and workers differ"

    prefix = BatchSettings.model_config["env_prefix"]
    plain = {
        n: e["value"] for n, e in environments[0].items() if n.startswith(prefix) and "value" in e
    }
    for name in plain:
        assert name.removeprefix(prefix).lower() in BatchSettings.model_fields, name
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("SWITCHYARD_")]:
            patch.delenv(key)
        for key, value in {**plain, f"{prefix}REDIS_URL": "rediss://redis:6379/0"}.items():
            patch.setenv(key, value)
        settings = BatchSettings()
    assert settings.redis_cluster is REDIS_CLUSTER[env]
    assert settings.ttl_seconds == 691200


@pytest.mark.parametrize("env", sorted(RAY_OVERLAYS))
def test_every_rayjob_pod_is_non_root_read_only_and_bounded(env: str) -> None:
    """The namespace enforces the `restricted` Pod Security Standard: a pod KubeRay creates
    from a template without it (its default submitter, for one) would be refused."""
    job = rayjob(env)
    for which, pod in ray_pods(job):
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "switchyard-batch", which
        assert spec["automountServiceAccountToken"] is False, which
        # The head Service's variables would land under SWITCHYARD_BATCH_* otherwise.
        assert spec["enableServiceLinks"] is False, which
        for container in containers(pod):
            assert_hardened_and_bounded(
                f"RayJob/{RAYJOB} {which}/{container['name']}", pod, container
            )


@pytest.mark.parametrize("env", sorted(RAY_OVERLAYS))
def test_rayjob_keeps_what_kuberay_checks_beyond_its_schema(env: str) -> None:
    """What the operator refuses or gets wrong at reconcile time, which no schema says: the
    Ray version, token auth, worker group bounds, the head's role, the GPU group, and a
    submitter that KubeRay gives its `ray job submit`."""
    job = rayjob(env)
    spec = cluster(job)
    # The image's Ray: KubeRay picks its probes and the submitter's commands by this version.
    ray_version = Version(spec["rayVersion"])
    assert ray_version == Version(pinned("ray")), "rayVersion is not the image's ray"
    assert ray_version >= HTTP_PROBES_FROM, "KubeRay would probe with wget, not in the image"
    # Ray enables token auth on a new cluster: without authOptions the workers would not
    # have the head's token. KubeRay needs Ray 2.52 for it.
    assert spec["authOptions"] == {"mode": "token"}
    assert ray_version >= Version("2.52.0")

    # No autoscaler (no pod has an API token for it): every group has both bounds, and
    # KubeRay keeps `replicas` pods of it.
    assert spec.get("enableInTreeAutoscaling", False) is False
    groups = spec["workerGroupSpecs"]
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names)
    for group in groups:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", group["groupName"])
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group
        assert group.get("numOfHosts", 1) == 1
        assert "num-gpus" not in group.get("rayStartParams", {}), "KubeRay takes it from limits"
    assert sum(g["replicas"] for g in groups) >= 1, "no worker would run the teacher"

    # The head runs the driver; tasks and actors go to the workers.
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for which, pod in ray_nodes(job):
        container = ray_container(pod)
        expected = "ray-head" if which == "head" else "ray-worker"
        assert container["name"] == expected, which
        assert "command" not in container and "args" not in container, "KubeRay starts Ray"
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        if which == "worker gpu":
            assert int(gpus) == 1
            tolerations = pod["spec"]["tolerations"]
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
                tolerations
            )
        else:
            assert gpus is None, which
    assert "worker gpu" in dict(ray_nodes(job)), "the GPU group is missing"

    submitter = job["spec"]["submitterPodTemplate"]["spec"]
    assert submitter["restartPolicy"] == "Never"
    (container,) = submitter["containers"]
    assert "command" not in container, "KubeRay fills in `ray job submit` only without one"
    assert not [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/models"]
    assert not [e for e in container.get("env", []) if "REDIS" in e["name"]], "no Redis needed"


@pytest.mark.parametrize("env", sorted(RAY_OVERLAYS))
def test_ray_pods_admit_each_other_and_the_operator_only(env: str) -> None:
    """The namespace denies ingress; Ray needs its pods to reach each other on ports it
    picks at run time, and the KubeRay operator to poll the head's dashboard. In dev, the
    Ray nodes must also reach the in-cluster Redis."""
    docs = render(RAY_OVERLAYS[env])
    job = find(docs, "RayJob", RAYJOB)
    pods = {which: pod["metadata"]["labels"] for which, pod in ray_pods(job)}
    (policy,) = of_kind(docs, "NetworkPolicy")
    target = selector_labels(policy["spec"]["podSelector"])
    assert all(selects(target, labels) for labels in pods.values()), pods
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    among, operator = policy["spec"]["ingress"]

    (peer,) = among["from"]
    assert set(peer) == {"podSelector"}, "only pods of this namespace"
    assert all(selects(selector_labels(peer["podSelector"]), p) for p in pods.values())
    assert "ports" not in among, "Ray picks most of its ports at run time"
    # The peer selects the Ray pods and nothing else of the stack.
    for workload, pod in pod_templates(render(env) + render(f"{env}/jobs")):
        labels = pod["metadata"]["labels"]
        assert not selects(selector_labels(peer["podSelector"]), labels), workload["metadata"]

    (peer,) = operator["from"]
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NAMESPACE}}
    }
    head = ray_container(cluster(job)["headGroupSpec"]["template"])
    dashboard = {p["name"]: p["containerPort"] for p in head["ports"]}["dashboard"]
    assert operator["ports"] == [{"port": dashboard, "protocol": "TCP"}]
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    assert f"--namespace {OPERATOR_NAMESPACE}" in readme

    redis = [
        p for p in of_kind(render(env), "NetworkPolicy") if p["metadata"]["name"] == "redis-ingress"
    ]
    if env == "dev":
        (redis_policy,) = redis
        peers = [p for rule in redis_policy["spec"]["ingress"] for p in rule["from"]]
        for which, pod in ray_nodes(job):
            labels = pod["metadata"]["labels"]
            assert any(selects(selector_labels(p["podSelector"]), labels) for p in peers), which
    else:
        assert redis == []


@pytest.mark.parametrize("env", sorted(RAY_OVERLAYS))
def test_ray_overlay_shares_namespace_image_and_queries_with_the_main_overlay(env: str) -> None:
    main, docs = render(env), render(RAY_OVERLAYS[env])
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACES[env], doc["metadata"]["name"]
    job = find(docs, "RayJob", RAYJOB)
    (cron_image,) = {c["image"] for c in pod_template(cron_job(env))["spec"]["containers"]}
    for which, pod in ray_pods(job):
        for container in containers(pod):
            assert container["image"] == cron_image, f"{which}/{container['name']}"
    if env == "prod":
        name, _, tag = cron_image.rpartition(":")
        assert "/" in name and tag and tag != "latest", cron_image
    # Same content, same hash-suffixed name: applying both never creates a second copy.
    main_queries = [cm for cm in of_kind(main, "ConfigMap") if f"{TASK}.jsonl" in cm["data"]]
    assert of_kind(docs, "ConfigMap") == main_queries
    # The run is labelled as the CronJobs: the batch component, its task.
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "batch"
    assert labels["switchyard.io/task"] == TASK


def test_rayjob_options_exist_in_the_cli() -> None:
    """Every option of the entrypoint is one `switchyard batch run` knows."""
    import typer.main

    from services.cli import app

    group = typer.main.get_command(app)
    run = group.commands["batch"].commands["run"]  # type: ignore[attr-defined]
    params = {opt: param for param in run.params for opt in param.opts + param.secondary_opts}
    argv = entrypoint(rayjob("prod"))
    for arg in argv[3:]:
        if arg.startswith("--"):
            assert arg in params, f"`switchyard batch run` has no option {arg}"


def test_batch_image_has_the_ray_dashboard_kuberay_needs() -> None:
    """KubeRay submits the job to the head's dashboard, polls its status there and probes
    every Ray pod on the dashboard agent (:52365/api/healthz). Both come with ray[default]:
    a minimal Ray starts neither ("Cannot include dashboard with missing packages")."""
    requirements = project_requirements(dockerfile_extras(REPO / "services/Dockerfile"))
    ray = [r for r in requirements if canonicalize_name(r.name) == "ray"]
    assert ray, "the batch image installs no Ray"
    assert any("default" in r.extras for r in ray), [str(r) for r in ray]
    # The image installs the pinned set: each package ray[default] adds must be pinned.
    added = []
    for line in metadata.requires("ray") or []:
        requirement = Requirement(line)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": "default"}):
            added.append(requirement)
    assert added
    closure = installed_closure(added)
    unpinned = []
    for name in sorted(closure):
        try:
            pinned(name)
        except AssertionError:
            unpinned.append(name)
    assert unpinned == [], f"not in .ci/constraints.txt: {unpinned}"
