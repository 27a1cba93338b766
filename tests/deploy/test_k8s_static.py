"""deploy/k8s and compose.postgres.yaml, checked for what matters to running jitnet on many hosts
(the schema checks are .ci/static-checks.sh's: kubernetes-validate --strict, docker-compose
config): probes on grpc.health.v1 that cover the warm-up, a termination grace longer than the
server's drain, the restricted security context with a read-only root, the DSN from a Secret.
"""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
LABELS = {"app.kubernetes.io/name": "jitnet"}


def _load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return _load("kustomization.yaml")


@pytest.fixture(scope="module")
def resources(kustomization) -> dict[str, dict]:
    """kind -> resource (the Services by name)."""
    out = {}
    for name in kustomization["resources"]:
        doc = _load(name)
        key = doc["metadata"]["name"] if doc["kind"] == "Service" else doc["kind"]
        out[key] = doc
    return out


@pytest.fixture(scope="module")
def pod(resources) -> dict:
    return resources["Deployment"]["spec"]["template"]["spec"]


def _container(pod) -> dict:
    (container,) = pod["containers"]
    return container


def _env(container) -> dict:
    return {e["name"]: e for e in container["env"]}


def test_the_kustomization_lists_every_manifest(kustomization):
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml",
                                                      "store-secret.example.yaml"}
    assert listed == present
    assert {d["kind"] for d in map(_load, listed)} == {
        "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}


def test_probes_are_native_grpc_and_the_startup_probe_covers_the_warm_up(pod):
    container = _container(pod)
    port = container["ports"][0]["containerPort"]
    assert _env(container)["JITNET_PORT"]["value"] == str(port)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": port}, probe  # grpc.health.v1, service ""
    startup = container["startupProbe"]
    # A cold compile of the kernels takes about 25 s here; a database not reachable yet
    # keeps the server NOT_SERVING too. Three minutes before the kubelet gives up.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30


def test_termination_grace_outlasts_prestop_and_the_servers_drain(pod):
    container = _container(pod)
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = float(_env(container)["JITNET_GRACE_SECONDS"]["value"])
    exit_margin = 1.0  # service/server/lifecycle.py EXIT_MARGIN_SECONDS
    assert pause >= 1
    assert pod["terminationGracePeriodSeconds"] > pause + grace + exit_margin


def test_the_restricted_security_context_with_a_read_only_root(pod):
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert "initContainers" not in pod
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), container["name"]


def test_numba_gets_a_writable_cache_holding_the_images_kernels(pod):
    """The image's entrypoint copies the build-time numba cache into $TMPDIR or /tmp when the
    cache directory is not writable (the read-only root): /tmp must be a writable emptyDir and
    the container must not replace that entrypoint with a command of its own."""
    container = _container(pod)
    assert "command" not in container
    assert "NUMBA_CACHE_DIR" not in _env(container)  # the image's, where it compiled its kernels
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["jitnet-entrypoint"]' in dockerfile
    entrypoint = (ROOT / "deploy" / "docker-entrypoint.sh").read_text()
    assert "${TMPDIR:-/tmp}" in entrypoint and 'NUMBA_CACHE_DIR="$copy"' in entrypoint


def test_the_dsn_comes_from_a_secret_and_three_replicas_share_it(resources, pod):
    deployment = resources["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["selector"]["matchLabels"] == LABELS
    assert deployment["spec"]["template"]["metadata"]["labels"] == LABELS
    store = _env(_container(pod))["JITNET_STORE"]
    assert set(store) == {"name", "valueFrom"}  # never a literal DSN
    secret = store["valueFrom"]["secretKeyRef"]
    example = _load("store-secret.example.yaml")
    assert (secret["name"], secret["key"]) == (example["metadata"]["name"], "dsn")
    assert example["stringData"]["dsn"].startswith("postgresql://")


def test_services_pdb_and_hpa_point_at_the_deployment(resources, pod):
    port_name = _container(pod)["ports"][0]["name"]
    headless, proxied = resources["jitnet-headless"], resources["jitnet"]
    assert headless["spec"]["clusterIP"] == "None"
    assert proxied["spec"]["type"] == "ClusterIP"
    for service in (headless, proxied):
        assert service["spec"]["selector"] == LABELS
        assert service["spec"]["ports"][0]["targetPort"] == port_name
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"] == LABELS and pdb["maxUnavailable"] == 1
    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": resources["Deployment"]["metadata"]["name"]}
    assert hpa["minReplicas"] == resources["Deployment"]["spec"]["replicas"]
    assert hpa["maxReplicas"] > hpa["minReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_the_compose_override_switches_every_replica_to_postgresql():
    override = yaml.safe_load((ROOT / "compose.postgres.yaml").read_text())
    postgres = override["services"]["postgres"]
    assert re.match(r"postgres:15\b", postgres["image"])
    jitnet = override["services"]["jitnet"]
    dsn = jitnet["environment"]["JITNET_STORE"]
    assert re.match(r"postgresql://jitnet:\$\{JITNET_PG_PASSWORD:-[^}]+\}@postgres:5432/jitnet$",
                    dsn)
    assert jitnet["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert postgres["environment"]["POSTGRES_PASSWORD"] in dsn
