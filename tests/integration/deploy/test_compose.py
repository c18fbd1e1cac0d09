"""The Docker Compose deployment, checked without a Docker daemon (tests/images, run by
.ci/images, builds the images and runs them).

docker-compose.yml is validated against the compose-spec JSON schema (shipped by the dclint
npm package in .tools/) with check-jsonschema, and a planted error must fail that same check,
so a passing run means the validator really looked. The rest reads the file and the
Dockerfiles: paths that must exist in the repository, health checks, non-root images, and a
router image without torch or Ray (its extras resolved from pyproject.toml and the installed
packages' metadata).
"""

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).parents[3]
COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA = REPO / ".tools/node_modules/dclint/schemas/compose.schema.json"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
# Services that run to completion (`docker compose --profile build run --rm build`): a health
# check means nothing for them.
RUN_ONCE_PROFILES = {"build", "batch"}
NON_ROOT_UID = "10001"


def load_compose() -> dict[str, Any]:
    # PyYAML's safe loader expands the `<<: *anchor` merges, as Compose does.
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
LONG_RUNNING = sorted(
    name
    for name, service in SERVICES.items()
    if not RUN_ONCE_PROFILES.intersection(service.get("profiles", []))
)
BUILT = sorted(name for name, service in SERVICES.items() if "build" in service)
# Every image built here runs Switchyard's Python code.
PYTHON_SERVICES = BUILT
DOCKERFILES = sorted({SERVICES[name]["build"]["dockerfile"] for name in BUILT})


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema on `path` against the compose-spec schema."""
    assert CHECK_JSONSCHEMA.exists(), f"{CHECK_JSONSCHEMA} missing: pip install check-jsonschema"
    assert SCHEMA.exists(), f"{SCHEMA} missing: npm install --prefix .tools (dclint)"
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of each volume entry, short or long syntax."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts.append((entry["type"], entry.get("source", ""), entry["target"]))
            continue
        source, target = entry.split(":")[:2]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        mounts.append((kind, source, target))
    return mounts


def repo_bind_sources() -> list[str]:
    """Host paths inside the repository that some service bind-mounts."""
    return sorted(
        {
            source
            for service in SERVICES.values()
            for kind, source, _ in volume_mounts(service)
            if kind == "bind" and source.startswith(".")
        }
    )


def final_stage(dockerfile: Path) -> str:
    """The instructions after the last FROM: what the image actually runs as."""
    text = dockerfile.read_text(encoding="utf-8")
    return re.split(r"^FROM\s", text, flags=re.MULTILINE)[-1]


def pip_install_lines(dockerfile: Path) -> list[str]:
    """Each RUN that calls pip install, with its continuation lines joined."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    return [line for line in text.splitlines() if "pip install" in line]


def dockerfile_extras(dockerfile: Path) -> set[str]:
    """The project's extras that the Dockerfile installs (`'.[a,b]'` in a pip install)."""
    return {
        extra.strip()
        for line in pip_install_lines(dockerfile)
        for group in re.findall(r"\.\[([^\]]*)\]", line)
        for extra in group.split(",")
    }


PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def project_requirements(extras: Iterable[str]) -> list[Requirement]:
    """What installing the project with `extras` asks for: its dependencies and those of
    each extra, following the extras that name the project itself (`stack`, `serve`)."""
    name = canonicalize_name(PYPROJECT["name"])
    optional: dict[str, list[str]] = PYPROJECT["optional-dependencies"]
    requirements = [Requirement(line) for line in PYPROJECT["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        assert extra in optional, f"pyproject.toml has no extra {extra!r}"
        seen.add(extra)
        for requirement in map(Requirement, optional[extra]):
            if canonicalize_name(requirement.name) == name:
                todo.extend(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


def installed_closure(requirements: Iterable[Requirement]) -> set[str]:
    """Every distribution the requirements pull in, transitively, by the metadata of the
    packages installed next to this interpreter (the virtual environment holds the whole
    pinned set), each requirement's extras and markers included."""
    found: set[str] = set()
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in visited:
            continue
        visited.add(key)
        found.add(name)
        try:
            dependencies = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} is not installed: the closure would be incomplete")
        for dependency in map(Requirement, dependencies):
            environments = [{"extra": extra} for extra in requirement.extras or {""}]
            if dependency.marker is None or any(
                dependency.marker.evaluate(environment) for environment in environments
            ):
                todo.append(dependency)
    return found


def test_compose_file_matches_the_compose_spec_schema() -> None:
    result = validate(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def _ports_not_a_list(data: dict[str, Any]) -> None:
    data["services"]["router"]["ports"] = "not-a-list"


def _unknown_service_key(data: dict[str, Any]) -> None:
    data["services"]["redis"]["healthcheck_typo"] = {"test": ["CMD", "true"]}


def _unknown_top_level_key(data: dict[str, Any]) -> None:
    data["service"] = {}


def _bad_depends_on_condition(data: dict[str, Any]) -> None:
    data["services"]["router"]["depends_on"]["redis"]["condition"] = "service_ready"


@pytest.mark.parametrize(
    "plant",
    [_ports_not_a_list, _unknown_service_key, _unknown_top_level_key, _bad_depends_on_condition],
)
def test_schema_validation_rejects_a_planted_error(plant: Any, tmp_path: Path) -> None:
    data = load_compose()
    plant(data)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    result = validate(broken)
    assert result.returncode == 1, (
        f"check-jsonschema accepted a broken file ({plant.__name__}):\n{result.stdout}"
    )
    assert "Schema validation errors" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("name", BUILT)
def test_build_context_and_dockerfile_exist(name: str) -> None:
    build = SERVICES[name]["build"]
    context = REPO / build["context"]
    assert context.is_dir(), f"{name}: build context {context} is missing"
    assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"


@pytest.mark.parametrize("source", repo_bind_sources())
def test_bind_mounted_repo_path_exists(source: str) -> None:
    assert (REPO / source).exists(), f"bind-mounted path {source} is not in the repository"


def test_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used = {
        source
        for service in SERVICES.values()
        for kind, source, _ in volume_mounts(service)
        if kind == "volume" and source
    }
    assert used <= declared, f"undeclared volumes: {sorted(used - declared)}"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_has_a_healthcheck(name: str) -> None:
    healthcheck = SERVICES[name].get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False), f"{name} disables its healthcheck"
    assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}, healthcheck["test"]


def test_run_once_services_sit_in_their_profiles() -> None:
    assert SERVICES["build"]["profiles"] == ["build"]
    assert SERVICES["batch"]["profiles"] == ["batch"]
    assert SERVICES["triton-gpu"]["profiles"] == ["gpu"]


def test_healthy_dependencies_have_healthchecks() -> None:
    for name, service in SERVICES.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits on {dependency}"
    router_waits = {k: v["condition"] for k, v in SERVICES["router"]["depends_on"].items()}
    assert router_waits == {"redis": "service_healthy", "triton": "service_healthy"}
    assert SERVICES["batch"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_router_uses_the_router_image_and_check_command() -> None:
    router = SERVICES["router"]
    assert router["build"]["dockerfile"] == "router/Dockerfile"
    assert router["healthcheck"]["test"] == [
        "CMD", "switchyard", "router", "check", "--address", "127.0.0.1:50051",
    ]  # fmt: skip
    # The router only reads the model repository.
    assert ("volume", "models", "/models") in volume_mounts(router)
    assert any(str(entry).endswith(":ro") for entry in router["volumes"])


def test_router_image_installs_the_router_extra_only() -> None:
    installs = pip_install_lines(REPO / "router/Dockerfile")
    assert installs, "router/Dockerfile installs nothing"
    extras = dockerfile_extras(REPO / "router/Dockerfile")
    assert extras == {"router"}, f"router/Dockerfile installs the extras {sorted(extras)}"
    for line in installs:
        assert not re.search(r"\btorch\b|\bray\b|assets\.txt", line), line


def test_router_image_pulls_in_no_ray() -> None:
    """Ray belongs to the batch image: neither the router's extra (with the base
    dependencies) nor anything those pull in, transitively, is Ray, or torch."""
    requirements = project_requirements(dockerfile_extras(REPO / "router/Dockerfile"))
    direct = {canonicalize_name(r.name) for r in requirements}
    assert not direct & {"ray", "torch"}, sorted(direct)
    closure = installed_closure(requirements)
    assert "ray" not in closure, "the router image would install Ray"
    assert "torch" not in closure, "the router image would install torch"
    # The same walk finds Ray where it is, so the check above can fail.
    assert "ray" in installed_closure(project_requirements(["ray"]))
    assert "ray" in installed_closure(project_requirements(["stack"]))


def test_router_code_imports_without_the_training_stack_or_the_triton_wheel() -> None:
    # What the router image runs must not need the packages its extra leaves out.
    script = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        blocked = {'torch', 'transformers', 'peft', 'optimum', 'pytriton',\n"
        "                   'onnxruntime', 'ray'}\n"
        "        if name.split('.')[0] in blocked:\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import services.cli, services.cli.router, router.server, router.client\n"
        "from typer.testing import CliRunner\n"
        "result = CliRunner().invoke(services.cli.app, ['router', 'check', '--address',\n"
        "                            '127.0.0.1:1', '--timeout', '0.2'])\n"
        "assert result.exit_code == 2 and 'UNAVAILABLE' in result.output, result.output\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_batch_image_installs_the_training_stack_ray_and_assets() -> None:
    installs = " ".join(pip_install_lines(REPO / "services/Dockerfile"))
    # Training and the teacher (train), onnxruntime's CPU build (cpu), Ray Data (ray).
    assert "'.[train,cpu,ray]'" in installs
    extras = dockerfile_extras(REPO / "services/Dockerfile")
    assert extras == {"train", "cpu", "ray"}
    # Both onnxruntime builds install the same package and overwrite each other's files.
    assert len(extras & {"cpu", "gpu"}) == 1
    assert {"torch", "onnxruntime", "ray"} <= installed_closure(project_requirements(extras))
    assert "--no-deps -r .ci/assets.txt" in installs
    assert "-c .ci/constraints.txt" in installs
    assert SERVICES["batch"]["image"] == SERVICES["build"]["image"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_runs_as_non_root(dockerfile: str) -> None:
    stage = final_stage(REPO / dockerfile)
    users = re.findall(r"^USER\s+(\S+)", stage, flags=re.MULTILINE)
    assert users, f"{dockerfile}: the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user == NON_ROOT_UID, f"{dockerfile}: runs as {users[-1]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_pins_base_images_and_skips_pip_cache(dockerfile: str) -> None:
    """Every stage starts from BASE_IMAGE, whose default is a pinned official python image
    (.ci/images passes a Debian-made one), or from an earlier stage."""
    text = (REPO / dockerfile).read_text(encoding="utf-8")
    default = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert len(default) == 1, f"{dockerfile}: one ARG BASE_IMAGE with a default"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", default[0]), default[0]
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE)
    named = {name for _, name in stages if name}
    for image, _ in stages:
        assert image == "${BASE_IMAGE}" or image in named, f"{dockerfile}: FROM {image}"
    for line in pip_install_lines(REPO / dockerfile):
        assert "--no-cache-dir" in line, line


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_installs_from_a_wheel_folder_when_given_one(dockerfile: str) -> None:
    """WHEELS=<folder URL> turns every pip install into an index-free one (.ci/images)."""
    text = (REPO / dockerfile).read_text(encoding="utf-8")
    assert re.search(r'^ARG WHEELS=""$', text, flags=re.MULTILINE), dockerfile
    for line in pip_install_lines(REPO / dockerfile):
        assert '"$@"' in line or '${WHEELS:+--no-index --find-links "$WHEELS"}' in line, line
    if '"$@"' in text:
        assert 'set -- --no-index --find-links "$WHEELS"' in text, dockerfile


def test_compose_images_carry_the_project_version() -> None:
    """.ci/images builds switchyard-<component>:<version>; compose must run those tags."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    images = {name: SERVICES[name]["image"] for name in BUILT}
    assert images == {
        "router": f"switchyard-router:{version}",
        "triton": f"switchyard-triton:{version}",
        "build": f"switchyard-batch:{version}",
        "batch": f"switchyard-batch:{version}",
    }
    ci_images = (REPO / ".ci/images").read_text(encoding="utf-8")
    for component in ("router", "batch", "triton"):
        assert f'build "switchyard-{component}:$version"' in ci_images, component


@pytest.mark.parametrize("name", PYTHON_SERVICES)
def test_python_services_have_a_read_only_root(name: str) -> None:
    service = SERVICES[name]
    assert service.get("read_only") is True, name
    tmpfs = [entry.split(":")[0] for entry in service.get("tmpfs", [])]
    assert "/tmp" in tmpfs, name


def test_default_triton_is_cpu_and_gpu_is_opt_in() -> None:
    triton = SERVICES["triton"]
    assert "deploy" not in triton and "profiles" not in triton
    # The CPU image built here runs exactly the local stack's Triton.
    assert triton["build"]["dockerfile"] == "services/triton/Dockerfile"
    assert triton["command"][:3] == ["switchyard", "triton", "serve"]
    assert dockerfile_extras(REPO / "services/triton/Dockerfile") == {"triton", "cpu"}
    # It loads its backend from /tmp: a noexec tmpfs there would fail every model.
    assert "/tmp:exec" in triton["tmpfs"]
    assert SERVICES["triton-gpu"]["image"].startswith("nvcr.io/nvidia/tritonserver:")
    devices = SERVICES["triton-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_host_ports_are_loopback_and_move_with_the_environment() -> None:
    published = {
        name: service["ports"]
        for name, service in load_compose()["services"].items()
        if "ports" in service
    }
    assert published == {
        "router": ["127.0.0.1:${SWITCHYARD_ROUTER_PORT:-50051}:50051"],
        "prometheus": ["127.0.0.1:${SWITCHYARD_PROMETHEUS_PORT:-9090}:9090"],
        "grafana": ["127.0.0.1:${SWITCHYARD_GRAFANA_PORT:-3000}:3000"],
    }


def test_no_secrets_in_the_compose_file() -> None:
    for name, service in SERVICES.items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: use the mapping form for environment"
        for key in environment:
            assert not re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", key), f"{name}: {key}"
        for value in environment.values():
            assert not re.search(r"redis://[^@/]*:[^@/]*@", str(value)), f"{name}: {value}"


def test_ci_images_refuses_a_folder_without_a_build(tmp_path: Path) -> None:
    """One line and exit 2, before anything is installed or started."""
    result = subprocess.run(
        ["bash", str(REPO / ".ci/images"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"images: {tmp_path} holds no model_repository; run switchyard models build first"
    )
    assert result.stdout == ""
