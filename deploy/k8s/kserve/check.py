"""Checks the KServe manifests in this folder without a cluster (README.md says what this
catches and what it cannot):

1. kubernetes-validate on each file. It has schemas for Kubernetes' own kinds only: for the
   ServingRuntime and the InferenceService (KServe's custom resources) it can only warn that
   it has none, and that warning is expected.
2. The ServingRuntime's pod part (containers, volumes) as a Pod, validated strictly by
   kubernetes-validate against Kubernetes' own schema: field names, types, probes, ports.
3. The contract between the files and with jitnet: protocolVersions has grpc-v2; the
   container port named h2c is the port the readiness probe asks and jitnet listens on; the
   `jitnet serve` flags parse with jitnet's own config; the InferenceService names this
   runtime and one of its model formats, with protocolVersion grpc-v2.

    python deploy/k8s/kserve/check.py      # exit 0: every check passed
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
RUNTIME = HERE / "servingruntime.yaml"
SERVICE = HERE / "inferenceservice.yaml"
KUBERNETES = "1.30.0"  # grpc probes are GA from 1.27; KServe supports 1.28 and later
CUSTOM_KINDS = {"ServingRuntime", "InferenceService"}


def _load(path: pathlib.Path) -> dict:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(documents) == 1, f"{path.name}: one document expected, found {len(documents)}"
    return documents[0]


def check_files() -> list[str]:
    """kubernetes-validate on each file: a schema error fails; 'no schema' is expected (and
    only expected) for KServe's own kinds."""
    problems = []
    for path in (RUNTIME, SERVICE):
        data = _load(path)
        try:
            kubernetes_validate.validate(data, KUBERNETES, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if data.get("kind") not in CUSTOM_KINDS:
                problems.append(f"{path.name}: no schema for {data.get('kind')}")
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{path.name}: {exc.message}")
    return problems


def check_pod_part(runtime: dict) -> list[str]:
    """The runtime's containers and volumes are a Pod spec's: validated as one, strictly."""
    spec = runtime["spec"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "jitnet-runtime-check"},
           "spec": {key: spec[key] for key in ("containers", "volumes") if key in spec}}
    try:
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"servingruntime.yaml's containers/volumes as a Pod: {exc.message} (at "
                f"{'.'.join(map(str, exc.path))})"]
    return []


def serve_flags(container: dict) -> list[str]:
    """The flags after `jitnet serve` in the container's command line."""
    words = shlex.split(" ".join(container.get("command", []) + container.get("args", [])))
    line = " ".join(words)
    if "jitnet serve" not in line:
        raise AssertionError("the container does not run `jitnet serve`")
    tail = shlex.split(line.split("jitnet serve", 1)[1])
    return tail


def check_contract(runtime: dict, service: dict) -> list[str]:
    problems = []
    spec = runtime["spec"]
    if "grpc-v2" not in spec.get("protocolVersions", []):
        problems.append("servingruntime.yaml: protocolVersions lacks grpc-v2")
    containers = spec.get("containers", [])
    if len(containers) != 1:
        return problems + [f"servingruntime.yaml: one container expected, {len(containers)}"]
    container = containers[0]
    h2c = [p for p in container.get("ports", []) if p.get("name") == "h2c"]
    if len(h2c) != 1:
        return problems + ["servingruntime.yaml: no container port named h2c (KServe routes "
                           "gRPC to the port of that name)"]
    port = h2c[0]["containerPort"]
    probe = container.get("readinessProbe", {}).get("grpc", {}).get("port")
    if probe != port:
        problems.append(f"servingruntime.yaml: the readiness probe asks gRPC port {probe}, "
                        f"the h2c port is {port}")

    # jitnet's own parser and validation, on the flags the container passes.
    from jitnet.service import config as config_module

    parser = argparse.ArgumentParser(prog="jitnet serve")
    config_module.add_arguments(parser)
    try:
        config = config_module.Config.from_namespace(parser.parse_args(serve_flags(container)),
                                                     env={})
    except (SystemExit, config_module.ConfigError) as exc:
        return problems + [f"servingruntime.yaml: `jitnet serve` flags refused: {exc}"]
    if config.port != port:
        problems.append(f"servingruntime.yaml: jitnet listens on {config.port}, the h2c port "
                        f"is {port}")
    if config.host not in ("0.0.0.0", "::"):
        problems.append(f"servingruntime.yaml: jitnet listens on {config.host}; KServe's "
                        "router reaches the pod's address, not its loopback")
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    if config.data_dir not in mounts:
        problems.append(f"servingruntime.yaml: the data dir {config.data_dir} is not a mounted "
                        "(writable) volume")

    model = service["spec"]["predictor"]["model"]
    if model.get("runtime") != runtime["metadata"]["name"]:
        problems.append(f"inferenceservice.yaml: runtime {model.get('runtime')!r} is not "
                        f"{runtime['metadata']['name']!r}")
    formats = {f["name"] for f in spec.get("supportedModelFormats", [])}
    if model.get("modelFormat", {}).get("name") not in formats:
        problems.append(f"inferenceservice.yaml: model format not one of {sorted(formats)}")
    if model.get("protocolVersion") != "grpc-v2":
        problems.append("inferenceservice.yaml: protocolVersion is not grpc-v2")
    if not model.get("storageUri"):
        problems.append("inferenceservice.yaml: no storageUri")
    return problems


def main() -> int:
    runtime, service = _load(RUNTIME), _load(SERVICE)
    problems = check_files() + check_pod_part(runtime) + check_contract(runtime, service)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
