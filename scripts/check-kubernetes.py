#!/usr/bin/env python3
"""Checks deploy/kubernetes/ offline.

1. Every manifest that kustomization.yaml lists is valid against the Kubernetes schemas
   (kubernetes-validate, which bundles them; --strict: unknown fields are errors), and
   kustomization.yaml lists every manifest of the folder. kustomization.yaml itself is not a
   Kubernetes object (the schemas do not have it): its fields are checked here.
2. The StatefulSet agrees with what the node (examples/node.rs) does:
   - the readiness and liveness probes GET /healthz on the port the node listens on, and the
     liveness probe does not kill a node while it drains (/healthz answers 503 then);
   - terminationGracePeriodSeconds is longer than the preStop sleep plus the node's shutdown
     bound: the cache's drain (GROUPCACHE_SHUTDOWN_TIMEOUT_MS, or the default
     SHUTDOWN_TIMEOUT of src/defaults.rs) and the HTTP server's stop (SERVER_STOP_TIMEOUT
     of examples/node.rs), both read from the source;
   - every GROUPCACHE_* variable it sets is one the node or GroupcacheBuilder::from_env reads;
   - the peer secret comes from a Secret (secretKeyRef), and the peer path is not opened;
   - GROUPCACHE_DNS_NAME names the headless Service (clusterIP: None) that selects these
     pods, in the pod's own namespace, and GROUPCACHE_DNS_PORT is that Service's port;
   - a NetworkPolicy lets only the app's pods, of the same namespace, reach the peer port. The
     peer port is also the port of the front routes (/get, /stats, /metrics): a policy that
     admits other pods to it is accepted only while the peer path refuses unsigned requests
     (the secret above), and is named in the output.

Usage: scripts/check-kubernetes.py [--skip-schemas]
Needs python3 with PyYAML, and kubernetes-validate (pip) unless --skip-schemas.
Prints one line per check and `check-kubernetes: OK`; exits 1 on the first failure.
"""

import os
import re
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
KUBE = os.path.join(ROOT, "deploy", "kubernetes")
PREFIX = "GROUPCACHE_"


def fail(message):
    print(f"check-kubernetes: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def ok(message):
    print(f"check-kubernetes: ok: {message}")


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def duration_seconds(text, name, path):
    """The value of `const NAME: Duration = Duration::from_secs(N)` (or from_millis) in path."""
    m = re.search(
        rf"const {name}: Duration = Duration::from_(secs|millis)\(([0-9_]+)\)", text
    )
    if not m:
        fail(f"cannot find the constant {name} in {path}")
    value = int(m.group(2).replace("_", ""))
    return value if m.group(1) == "secs" else value / 1000


def variables_read(text):
    """The suffixes of the environment variables a Rust file reads through its helpers."""
    text = text.split("#[cfg(test)]")[0]
    return set(
        re.findall(r'\b(?:var|number|millis|boolean)(?:::<[^>]*>)?\(\s*"([A-Z][A-Z0-9_]*)"', text)
    )


def load_documents(name):
    with open(os.path.join(KUBE, name), encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def matches(selector, labels):
    """Whether a label selector with matchLabels only selects `labels`."""
    if set(selector) - {"matchLabels"}:
        fail(f"selector {selector}: only matchLabels is understood by this check")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def main():
    skip_schemas = "--skip-schemas" in sys.argv[1:]
    files = sorted(f for f in os.listdir(KUBE) if f.endswith((".yaml", ".yml")))

    # kustomization.yaml: not a Kubernetes object.
    if "kustomization.yaml" not in files:
        fail("deploy/kubernetes/kustomization.yaml is missing")
    (kustomization,) = load_documents("kustomization.yaml")
    if kustomization.get("kind") != "Kustomization" or not str(
        kustomization.get("apiVersion", "")
    ).startswith("kustomize.config.k8s.io/"):
        fail("kustomization.yaml is not a kustomize.config.k8s.io Kustomization")
    resources = kustomization.get("resources", [])
    manifests = [f for f in files if f != "kustomization.yaml"]
    if sorted(resources) != manifests:
        fail(f"kustomization.yaml lists {sorted(resources)}, the folder has {manifests}")
    ok(f"kustomization.yaml lists every manifest: {', '.join(manifests)}")

    # 1. The schemas.
    if skip_schemas:
        ok("schemas skipped (--skip-schemas)")
    else:
        if shutil.which("kubernetes-validate") is None:
            fail("kubernetes-validate is missing (pip install kubernetes-validate)")
        paths = [os.path.join(KUBE, f) for f in manifests]
        result = subprocess.run(
            ["kubernetes-validate", "--strict", "--quiet", *paths],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or "WARN" in result.stdout + result.stderr:
            fail(f"kubernetes-validate --strict:\n{result.stdout}{result.stderr}")
        ok("kubernetes-validate --strict: every object is valid")

    objects = [d for f in manifests for d in load_documents(f)]

    def of_kind(kind):
        return [o for o in objects if o.get("kind") == kind]

    # 2. The StatefulSet against the node.
    (sts,) = of_kind("StatefulSet")
    pod = sts["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    if not matches(sts["spec"]["selector"], pod_labels):
        fail("the StatefulSet's selector does not select its own pods")
    (container,) = pod["spec"]["containers"]
    env = {}
    for e in container.get("env", []):
        if e["name"] in env:
            fail(f"{e['name']} is set twice")
        env[e["name"]] = e
    named_ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}

    def value(name):
        e = env.get(name)
        return None if e is None else e.get("value")

    # Variables the node reads.
    node_rs = read("examples/node.rs")
    known = variables_read(node_rs) | variables_read(read("src/builder/env.rs"))
    unknown = sorted(n for n in env if n.startswith(PREFIX) and n[len(PREFIX):] not in known)
    if unknown:
        fail(f"the StatefulSet sets variables no code reads: {unknown}")
    ok(f"every {PREFIX}* variable set is read by the node ({len(known)} known)")

    listen = value("GROUPCACHE_LISTEN") or "0.0.0.0:8080"
    listen_port = int(listen.rsplit(":", 1)[1])

    def port_number(port):
        return named_ports.get(port) if isinstance(port, str) else port

    # Probes.
    for probe_name in ("readinessProbe", "livenessProbe"):
        probe = container.get(probe_name)
        if probe is None:
            fail(f"the container has no {probe_name}")
        get = probe.get("httpGet")
        if get is None or get.get("path") != "/healthz":
            fail(f"{probe_name} does not GET /healthz: {probe}")
        if port_number(get.get("port")) != listen_port:
            fail(f"{probe_name} asks port {get.get('port')}, the node listens on {listen_port}")
        ok(f"{probe_name}: GET /healthz on port {listen_port}")

    # The shutdown bound.
    drain = duration_seconds(read("src/defaults.rs"), "SHUTDOWN_TIMEOUT", "src/defaults.rs")
    if value("GROUPCACHE_SHUTDOWN_TIMEOUT_MS") is not None:
        drain = int(value("GROUPCACHE_SHUTDOWN_TIMEOUT_MS")) / 1000
    server_stop = duration_seconds(node_rs, "SERVER_STOP_TIMEOUT", "examples/node.rs")
    pre_stop = 0
    exec_command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if exec_command:
        if len(exec_command) != 2 or not exec_command[0].endswith("sleep"):
            fail(f"preStop is not a plain sleep: {exec_command}")
        pre_stop = float(exec_command[1])
    bound = pre_stop + drain + server_stop
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    if not grace > bound:
        fail(
            f"terminationGracePeriodSeconds {grace} is not longer than preStop {pre_stop} s + "
            f"drain {drain} s + server stop {server_stop} s = {bound} s"
        )
    ok(
        f"terminationGracePeriodSeconds {grace} > preStop {pre_stop:g} s + drain {drain:g} s "
        f"+ server stop {server_stop:g} s = {bound:g} s"
    )
    live = container["livenessProbe"]
    live_window = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
    if live_window <= drain + server_stop:
        fail(
            f"the liveness probe gives up after {live_window} s of 503s, before a draining node "
            f"is done ({drain + server_stop:g} s): the kubelet would kill it mid-drain"
        )
    ok(f"the liveness probe tolerates {live_window} s of 503s, longer than a drain")

    # The secret.
    secret = env.get("GROUPCACHE_PEER_SECRET")
    if secret is None or "value" in secret or "secretKeyRef" not in secret.get("valueFrom", {}):
        fail(f"GROUPCACHE_PEER_SECRET does not come from a Secret (secretKeyRef): {secret}")
    open_path = value("GROUPCACHE_OPEN_PEER_PATH")
    if open_path not in (None, "", "0", "false", "no"):
        fail("GROUPCACHE_OPEN_PEER_PATH opens the peer path to unsigned requests")
    ref = secret["valueFrom"]["secretKeyRef"]
    ok(f"GROUPCACHE_PEER_SECRET from Secret {ref['name']}, key {ref['key']}")

    # Discovery: the headless Service.
    dns_name = value("GROUPCACHE_DNS_NAME")
    if not dns_name:
        fail("GROUPCACHE_DNS_NAME is not set")
    if not value("GROUPCACHE_SELF_URL"):
        fail("GROUPCACHE_DNS_NAME needs GROUPCACHE_SELF_URL")
    m = re.fullmatch(r"([a-z0-9-]+)\.([^.]+)\.svc(\.[a-z0-9.-]+)?", dns_name)
    if not m:
        fail(f"GROUPCACHE_DNS_NAME {dns_name} is not <service>.<namespace>.svc[.<domain>]")
    service_name, namespace = m.group(1), m.group(2)
    namespace_var = re.fullmatch(r"\$\(([A-Z_]+)\)", namespace)
    if namespace_var:
        # $(VAR) expands only from a variable defined earlier in the list.
        names = [e["name"] for e in container["env"]]
        var = namespace_var.group(1)
        ns_env = env.get(var, {})
        if ns_env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.namespace":
            fail(f"{var} is not the pod's namespace (fieldRef metadata.namespace)")
        if names.index(var) > names.index("GROUPCACHE_DNS_NAME"):
            fail(f"{var} is defined after GROUPCACHE_DNS_NAME, which then does not expand it")
    else:
        sts_ns = sts["metadata"].get("namespace")
        if sts_ns is not None and sts_ns != namespace:
            fail(f"GROUPCACHE_DNS_NAME names namespace {namespace}, the StatefulSet is in {sts_ns}")
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    service = services.get(service_name)
    if service is None:
        fail(f"GROUPCACHE_DNS_NAME names Service {service_name}, which is not in the manifests")
    spec = service["spec"]
    if spec.get("clusterIP") != "None":
        fail(f"Service {service_name} is not headless (clusterIP: None)")
    if spec.get("publishNotReadyAddresses"):
        fail(f"Service {service_name} publishes pods that are not ready (draining nodes)")
    if not matches({"matchLabels": spec.get("selector", {})}, pod_labels):
        fail(f"Service {service_name} does not select the StatefulSet's pods")
    if sts["spec"].get("serviceName") != service_name:
        fail(f"the StatefulSet's serviceName is not {service_name}")
    dns_port = int(value("GROUPCACHE_DNS_PORT") or listen_port)
    if dns_port != listen_port:
        fail(f"GROUPCACHE_DNS_PORT {dns_port} is not the port the node listens on, {listen_port}")
    service_ports = {p["port"]: p for p in spec["ports"]}
    if dns_port not in service_ports or port_number(service_ports[dns_port].get("targetPort", dns_port)) != listen_port:
        fail(f"Service {service_name} does not carry port {dns_port} to the node's {listen_port}")
    self_url = value("GROUPCACHE_SELF_URL")
    if not self_url.endswith(f":{dns_port}"):
        fail(f"GROUPCACHE_SELF_URL {self_url} does not end with the peer port {dns_port}")
    ok(f"GROUPCACHE_DNS_NAME {dns_name}: headless Service {service_name}, port {dns_port}")

    # NetworkPolicies on the peer port.
    app_only = []
    others = []
    for policy in of_kind("NetworkPolicy"):
        pspec = policy["spec"]
        if not matches(pspec.get("podSelector", {}), pod_labels):
            continue
        if "Ingress" not in pspec.get("policyTypes", ["Ingress"]):
            continue
        for rule in pspec.get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(
                port_number(p.get("port")) == listen_port and p.get("protocol", "TCP") == "TCP"
                for p in ports
            ):
                continue
            sources = rule.get("from")
            if not sources:
                others.append((policy["metadata"]["name"], "everyone"))
                continue
            for source in sources:
                selector = source.get("podSelector", {})
                labels = selector.get("matchLabels", {})
                # podSelector alone: pods of the policy's own namespace.
                same_namespace = set(source) == {"podSelector"} and set(selector) == {"matchLabels"}
                if same_namespace and labels and all(pod_labels.get(k) == v for k, v in labels.items()):
                    app_only.append(policy["metadata"]["name"])
                elif same_namespace and labels:
                    others.append((policy["metadata"]["name"], labels))
                else:
                    others.append((policy["metadata"]["name"], f"everyone matching {source}"))
    if not app_only:
        fail(f"no NetworkPolicy admits the app's pods to the peer port {listen_port}")
    ok(f"NetworkPolicy {', '.join(sorted(set(app_only)))}: the app's pods to port {listen_port}")
    for name, source in others:
        if isinstance(source, str):
            fail(
                f"NetworkPolicy {name} admits {source} to the peer port {listen_port}: only "
                "pods of the namespace selected by their labels may be let in"
            )
        ok(
            f"NetworkPolicy {name} also admits pods labelled {source} of the namespace to port "
            f"{listen_port}, for the front routes: the peer path there refuses them without the "
            "secret"
        )
    print("check-kubernetes: OK")


if __name__ == "__main__":
    main()
