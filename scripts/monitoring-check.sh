#!/usr/bin/env bash
# The offline checks of deploy/ (what .ci/run runs, and what docs/guide.md and
# deploy/README.md tell operators to run):
#
#   1. scripts/check-kubernetes.py: the manifests against the Kubernetes schemas, and the
#      StatefulSet against the node's behaviour;
#   2. what `kubectl apply -k deploy/kubernetes` would apply (kubectl kustomize), and the
#      Secret and ConfigMap that the docs' kubectl commands create, against the schemas;
#   3. promtool check config of both Prometheus configs, check rules, and test rules (the
#      unit tests of every alert);
#   4. the Grafana dashboard is JSON (tests/it/monitoring.rs checks its queries).
#
# Needs promtool (Debian: apt-get install prometheus), kubernetes-validate and PyYAML
# (pip install kubernetes-validate==1.37.0), kubectl, openssl and python3. A missing tool is
# a failure.
# Prints `monitoring-check: OK` at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "monitoring-check: FAILED: $*" >&2
  exit 1
}
say() { echo "monitoring-check: $*"; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 is missing ($2)"; }
need python3 "apt-get install python3"
need promtool "apt-get install prometheus"
need kubernetes-validate "pip install kubernetes-validate==1.37.0"
# kubectl renders the kustomization offline (kubectl kustomize is what kubectl apply -k
# applies) and makes the Secret and ConfigMap of the docs' commands with --dry-run=client.
# The project's machines have it; Debian's kubernetes-client (1.20) is too old for the
# kustomization's `labels` field.
need kubectl "a kubectl with kustomize v4.1 or later"
need openssl "apt-get install openssl"
python3 -c 'import yaml' 2>/dev/null || fail "PyYAML is missing (pip install pyyaml)"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/monitoring-check.XXXXXX")"
trap 'rm -rf "$workdir"' EXIT

say "Kubernetes manifests"
python3 scripts/check-kubernetes.py

say "what kubectl would apply: kubectl kustomize, and the Secret and ConfigMap the docs create"
kubectl kustomize deploy/kubernetes >"$workdir/applied.yaml"
kubectl create secret generic groupcache-peer-secret --from-literal=secret="$(openssl rand -hex 32)" \
  --dry-run=client -o yaml >"$workdir/secret.yaml"
kubectl create configmap prometheus-config \
  --from-file=prometheus.yml=deploy/prometheus/prometheus-kubernetes.yml \
  --from-file=deploy/prometheus/groupcache.rules.yml \
  --dry-run=client -o yaml >"$workdir/prometheus-configmap.yaml"
grep -q "app.kubernetes.io/part-of: tower-groupcache" "$workdir/applied.yaml" ||
  fail "kubectl kustomize deploy/kubernetes did not add the kustomization's labels"
kubernetes-validate --strict --quiet "$workdir/applied.yaml" "$workdir/secret.yaml" \
  "$workdir/prometheus-configmap.yaml"
say "kustomized manifests ($(grep -c '^kind:' "$workdir/applied.yaml") objects), Secret and ConfigMap valid"

say "Prometheus configs and rules ($(promtool --version 2>&1 | head -n 1))"
promtool check config deploy/prometheus/prometheus.yml
# The Kubernetes variant: a promtool built without Kubernetes service discovery (Debian's
# prometheus 2.42.0+ds answers "field kubernetes_sd_configs not found in type
# config.ScrapeConfig") checks a copy whose kubernetes_sd_configs is a static target
# instead; everything else of the file (relabelling, rule files) is checked as written.
if ! promtool check config deploy/prometheus/prometheus-kubernetes.yml >"$workdir/k8s.out" 2>&1; then
  cat "$workdir/k8s.out"
  grep -q "field kubernetes_sd_configs not found" "$workdir/k8s.out" ||
    fail "promtool check config deploy/prometheus/prometheus-kubernetes.yml"
  say "this promtool has no Kubernetes service discovery: checking prometheus-kubernetes.yml with a static target in its place"
  cp deploy/prometheus/groupcache.rules.yml "$workdir/"
  python3 - deploy/prometheus/prometheus-kubernetes.yml "$workdir/prometheus-kubernetes.yml" <<'PY'
import sys
import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    config = yaml.safe_load(f)
replaced = 0
for job in config["scrape_configs"]:
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": ["placeholder:8080"]}]
        replaced += 1
assert replaced, "no kubernetes_sd_configs to replace"
with open(sys.argv[2], "w", encoding="utf-8") as f:
    yaml.safe_dump(config, f)
PY
  promtool check config "$workdir/prometheus-kubernetes.yml"
else
  cat "$workdir/k8s.out"
fi
promtool check rules deploy/prometheus/groupcache.rules.yml
promtool test rules deploy/prometheus/groupcache.rules.test.yml

say "Grafana dashboard"
python3 -m json.tool deploy/grafana/groupcache.json >/dev/null
say "OK"
