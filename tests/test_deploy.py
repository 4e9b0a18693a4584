"""The deploy artefacts (deploy/Dockerfile, deploy/compose.yaml, deploy/k8s/) read as the
gateway would run them: what would otherwise only fail in production fails here.

Each configuration the artefacts mount is loaded through the gateway's own loader (unknown keys
are errors there), each command line through its own parser, and every path, port, probe,
socket and reference is checked against the other side that must match it. Where a container
engine answers, the image is built and the stack started with a smoke request; elsewhere that
test skips and says why.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gateway.__main__ import _parser as gateway_cli
from gateway.app import create_app
from gateway.core.config import Settings, parse
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
Json = dict[str, Any]
# What the Secret and compose put in the environment, with values of the right shape.
CLUSTER_ENV = {
    "GATEWAY_ADMIN_KEY": "gw-admin-" + "a" * 32, "GATEWAY_KEY_SECRET": "0" * 64,
    "GATEWAY_REDIS_URL": "redis://redis:6379/0",
    "GATEWAY_DATABASE_URL": "postgresql://gateway:secret@postgres:5432/gateway",
}


def load_toml(text: str, source: str) -> Settings:
    return parse(tomllib.loads(text), env=CLUSTER_ENV, base_dir=Path("/"), source=source)


def routes_of(settings: Settings) -> set[str]:
    """The paths the gateway serves with these settings (the templates from the repository,
    which the image copies to the configured folder)."""
    observability = replace(settings.observability, templates_dir=ROOT / "templates")
    app = create_app(replace(settings, observability=observability))
    return {r.canonical for r in app.router.resources()}


# --- the image ------------------------------------------------------------------------------


class Dockerfile:
    def __init__(self, path: Path) -> None:
        text = re.sub(r"\\\n", " ", path.read_text())
        self.lines = [line.strip() for line in text.splitlines()
                      if line.strip() and not line.lstrip().startswith("#")]
        stages = [i for i, line in enumerate(self.lines) if line.startswith("FROM ")]
        self.final = self.lines[stages[-1]:]

    def last(self, instruction: str) -> str:
        found = [line for line in self.final if line.startswith(instruction + " ")]
        assert found, f"no {instruction} in the final stage"
        return found[-1][len(instruction) + 1:].strip()

    def exec_form(self, instruction: str) -> list[str]:
        value: list[str] = json.loads(self.last(instruction))
        return value

    def copies(self) -> dict[str, str]:
        """Destination → source of every COPY in the final stage."""
        out = {}
        for line in self.final:
            if line.startswith("COPY "):
                parts = [p for p in line.split()[1:] if not p.startswith("--")]
                out[parts[-1]] = parts[0]
        return out


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile(DEPLOY / "Dockerfile")


@pytest.fixture(scope="module")
def image_settings(dockerfile: Dockerfile) -> Settings:
    config = dockerfile.copies()["/etc/gateway/gateway.toml"]
    return load_toml((ROOT / config).read_text(), config)


def test_image_entrypoint_serves_the_config_file_it_copies(dockerfile: Dockerfile) -> None:
    argv = dockerfile.exec_form("ENTRYPOINT") + dockerfile.exec_form("CMD")
    assert argv[0] == "gateway"
    args = gateway_cli().parse_args(argv[1:])
    assert args.command == "serve"
    assert str(args.config) in dockerfile.copies(), "the command names a file the image holds"


def test_image_runs_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    user = dockerfile.last("USER").split(":")[0]
    assert user not in ("root", "0")


def test_image_healthcheck_and_port_match_the_config(
    dockerfile: Dockerfile, image_settings: Settings
) -> None:
    assert dockerfile.last("EXPOSE") == str(image_settings.server.port)
    probe = dockerfile.last("HEALTHCHECK")
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", probe)
    assert url is not None, probe
    assert int(url.group(1)) == image_settings.server.port
    assert url.group(2) in routes_of(image_settings)
    assert image_settings.server.host == "0.0.0.0", "a container must listen beyond loopback"


def test_image_config_points_at_the_model_and_templates_it_holds(
    dockerfile: Dockerfile, image_settings: Settings
) -> None:
    text = " ".join(dockerfile.lines)
    built = re.search(r"embedder_worker\.build_model --out (\S+)", text)
    assert built is not None
    assert image_settings.embedder is not None
    assert PurePosixPath(str(image_settings.embedder.model_dir)).is_relative_to(
        PurePosixPath(built.group(1)).parent)
    assert str(PurePosixPath(built.group(1)).parent) in dockerfile.copies()
    templates = image_settings.observability.templates_dir
    assert templates is not None and str(templates) in dockerfile.copies()
    assert dockerfile.copies()[str(templates)] == "templates"
    assert (ROOT / "templates" / "base.html").exists()


def test_image_build_keeps_secrets_out_of_the_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", "data", "models"):
        assert path in ignored


# --- the compose stack ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Json:
    loaded: Json = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def compose_env(service: Json) -> dict[str, str]:
    """A service's environment with ${VAR:-default} and ${VAR:?error} filled in as a user would."""
    def fill(value: str) -> str:
        return re.sub(r"\$\{(\w+)(?::[-?]([^}]*))?\}",
                      lambda m: CLUSTER_ENV.get(m.group(1), m.group(2) or ""), value)
    return {k: fill(str(v)) for k, v in (service.get("environment") or {}).items()}


def mounts(service: Json) -> dict[str, str]:
    """Container path → host path (relative to deploy/) of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes") or ():
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


def gateways(compose: Json) -> dict[str, Json]:
    return {name: s for name, s in compose["services"].items()
            if s.get("image") == "llm-gateway:local" and not s.get("entrypoint")
            and (s.get("command") or ["serve"])[0] != "migrate"}


def test_compose_references_only_what_it_defines(compose: Json) -> None:
    services = compose["services"]
    named_volumes = set(compose.get("volumes") or {})
    assert any("build" in s and s.get("image") == "llm-gateway:local" for s in services.values())
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on") or ():
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for source in mounts(service).values():
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"


def test_compose_migrates_once_before_any_gateway_starts(compose: Json) -> None:
    migrate = compose["services"]["migrate"]
    args = gateway_cli().parse_args(migrate["command"])
    assert args.command == "migrate"
    assert mounts(migrate)[str(args.config)] == "./compose/gateway.toml"
    assert len(gateways(compose)) == 2
    for name, service in gateways(compose).items():
        assert service["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully", name


def test_compose_gateways_load_their_config_and_share_redis_and_postgres(compose: Json) -> None:
    for name, service in gateways(compose).items():
        config = mounts(service)["/etc/gateway/gateway.toml"]
        env = compose_env(service)
        settings = parse(tomllib.loads((DEPLOY / config).read_text()), env=env,
                         base_dir=Path("/"), source=config)
        assert env["GATEWAY_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["GATEWAY_DATABASE_URL"]
        assert settings.server.host == "0.0.0.0", name
        assert settings.tenants.bootstrap is False, "two replicas must not both bootstrap"


def test_compose_load_balancer_and_prometheus_reach_every_replica(compose: Json) -> None:
    port = load_toml((DEPLOY / "compose" / "gateway.toml").read_text(), "compose").server.port
    replicas = {f"{name}:{port}" for name in gateways(compose)}
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert set(re.findall(r"server (\S+:\d+)", nginx)) == replicas
    assert "proxy_buffering off" in nginx, "streams must not be buffered by the balancer"
    prometheus = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert set(targets) == replicas
    rules = mounts(compose["services"]["prometheus"])
    assert rules[prometheus["rule_files"][0]] == "./alerts.yml"


def test_compose_fake_upstream_is_the_providers_address(compose: Json) -> None:
    fake = compose["services"]["fake-upstream"]
    assert fake["profiles"] == ["fake"]
    port = fake["entrypoint"][fake["entrypoint"].index("--port") + 1]
    settings = load_toml((DEPLOY / "compose" / "gateway.toml").read_text(), "compose")
    [provider] = [p for p in settings.providers if p.name == "fake"]
    assert provider.base_url == f"http://fake-upstream:{port}/v1"
    assert mounts(fake)["/opt/fake_upstream.py"] == "../bench/fake_upstream.py"


def test_compose_grafana_provisions_the_dashboard(compose: Json) -> None:
    volumes = mounts(compose["services"]["grafana"])
    dashboards = yaml.safe_load((DEPLOY / "compose" / "grafana-dashboards.yml").read_text())
    folder = dashboards["providers"][0]["options"]["path"]
    assert any(target.startswith(folder + "/") and source == "./grafana-dashboard.json"
               for target, source in volumes.items())
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "DS_PROMETHEUS" in variables, "a provisioned dashboard resolves its data source"


# --- Kubernetes -----------------------------------------------------------------------------


def k8s_documents() -> Iterator[Json]:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        yield from (d for d in yaml.safe_load_all(path.read_text()) if d)


@pytest.fixture(scope="module")
def k8s() -> dict[str, Json]:
    return {d["kind"]: d for d in k8s_documents() if d["kind"] != "Kustomization"}


@pytest.fixture(scope="module")
def pod_settings(k8s: dict[str, Json]) -> Settings:
    return load_toml(k8s["ConfigMap"]["data"]["gateway.toml"], "configmap.yaml")


def pod(k8s: dict[str, Json]) -> Json:
    spec: Json = k8s["Deployment"]["spec"]["template"]["spec"]
    return spec


def container(k8s: dict[str, Json], name: str) -> Json:
    spec = pod(k8s)
    [found] = [c for c in spec["containers"] + spec.get("initContainers", [])
               if c["name"] == name]
    return found


def mounted_at(k8s: dict[str, Json], name: str, volume: str) -> str:
    [path] = [m["mountPath"] for m in container(k8s, name)["volumeMounts"] if m["name"] == volume]
    return str(path)


def test_kustomization_lists_files_that_exist() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).exists(), resource
    assert "secret.example.yaml" not in kustomization["resources"], "no secret is committed"


def test_embedder_sidecar_and_gateway_share_one_socket(
    k8s: dict[str, Json], pod_settings: Settings
) -> None:
    embedder = container(k8s, "embedder")
    assert embedder.get("restartPolicy") == "Always", "a native sidecar outlives the drain"
    command = embedder["command"]
    socket = PurePosixPath(command[command.index("--socket") + 1])
    assert pod_settings.embedder is not None
    assert [str(s) for s in pod_settings.embedder.sockets] == [str(socket)]
    assert mounted_at(k8s, "embedder", "embedder-socket") == str(socket.parent)
    assert mounted_at(k8s, "gateway", "embedder-socket") == str(socket.parent)
    volumes = {v["name"]: v for v in pod(k8s)["volumes"]}
    assert "emptyDir" in volumes["embedder-socket"]
    model = command[command.index("--model") + 1]
    assert model == str(pod_settings.embedder.model_dir)


def test_probes_and_ports_match_the_gateways_endpoints(
    k8s: dict[str, Json], pod_settings: Settings
) -> None:
    gateway = container(k8s, "gateway")
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports["http"] == pod_settings.server.port
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    routes = routes_of(pod_settings)
    for probe in ("readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"]["path"] in routes
        assert gateway[probe]["httpGet"]["port"] in ports
    args = gateway_cli().parse_args(gateway["args"])
    assert args.command == "serve"
    assert mounted_at(k8s, "gateway", "config") == str(PurePosixPath(str(args.config)).parent)


def test_termination_grace_covers_prestop_and_the_drain(
    k8s: dict[str, Json], pod_settings: Settings
) -> None:
    pre_stop = container(k8s, "gateway")["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = pod(k8s)["terminationGracePeriodSeconds"]
    assert grace > int(pre_stop[1]) + pod_settings.server.shutdown_grace_s
    strategy = k8s["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_secret_references_name_keys_the_secret_has(k8s: dict[str, Json]) -> None:
    secret = yaml.safe_load((DEPLOY / "k8s" / "secret.example.yaml").read_text())
    for name in ("gateway", "embedder"):
        for env in container(k8s, name).get("env", ()):
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"], ref["key"]


def test_service_monitor_pdb_and_autoscaler_select_the_pods(k8s: dict[str, Json]) -> None:
    labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]

    def selects(selector: Json) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    service = k8s["Service"]
    assert selects(service["spec"]["selector"])
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    monitor = k8s["ServiceMonitor"]["spec"]
    assert selects(monitor["selector"]["matchLabels"])
    assert monitor["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert selects(k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    target = k8s["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", k8s["Deployment"]["metadata"]["name"])
    for name in ("gateway", "embedder"):
        assert "cpu" in container(k8s, name)["resources"]["requests"], "the HPA needs requests"


# --- built and started, where a container engine answers -------------------------------------


def _engine() -> str | None:
    """Why no container engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "no docker client on this machine"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return "docker info failed: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
    return None


def test_image_builds_and_the_stack_answers_a_smoke_request(tmp_path: Path) -> None:
    reason = _engine()
    if reason is not None:
        pytest.skip(f"no container engine to build the image and start the stack ({reason})")
    compose_cmd = ["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "--profile", "fake"]
    env = {**CLUSTER_ENV, "PATH": "/usr/bin:/bin:/usr/local/bin"}
    subprocess.run([*compose_cmd, "up", "--build", "--wait", "-d"], check=True, env=env,
                   timeout=1800)
    try:
        admin = {"Authorization": f"Bearer {env['GATEWAY_ADMIN_KEY']}"}
        post("/admin/tenants", {"name": "smoke"}, admin)
        key = post("/admin/tenants/smoke/keys", {"name": "smoke"}, admin)["key"]
        reply = post("/v1/chat/completions", {
            "model": "fake-cheap", "messages": [{"role": "user", "content": "hi"}]},
            {"Authorization": f"Bearer {key}"})
        assert reply["choices"][0]["message"]["content"], shlex.join(compose_cmd)
    finally:
        subprocess.run([*compose_cmd, "down", "-v"], env=env, timeout=300)


def post(path: str, body: Json, headers: dict[str, str]) -> Json:
    """POST JSON to the stack's load balancer; the reply's JSON."""
    request = urllib.request.Request(
        f"http://127.0.0.1:8080{path}", data=json.dumps(body).encode(),
        headers={**headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        answer: Json = json.loads(reply.read())
        return answer
