#!/usr/bin/env python3
"""Checks the Kubernetes manifests and the systemd unit without a cluster,
without systemd running and without pulling an image.

Run it through deploy/check.sh, which installs what it imports (pinned in
deploy/check-requirements.txt) and builds the `tollgate` binary it calls.

Kubernetes (deploy/kubernetes/*.yaml):
  1. every resource against the Kubernetes JSON schemas bundled in
     kubernetes-validate, strict (an unknown field is an error), for the
     oldest Kubernetes the manifests support and the newest bundled; the
     cert-manager resources against cert-manager's v1 API (pydantic models
     generated from its CRDs, unknown fields refused) and their metadata
     against Kubernetes' ObjectMeta;
  2. what no schema knows: for each StatefulSet and each of its pods (the
     replicas, named and numbered as Kubernetes would), the environment the
     pod gets, the config in its ConfigMap (TOML), every file the config or
     the environment names (on a volume? from a Secret or ConfigMap the
     manifests define, a cert-manager Certificate makes or deploy/kubernetes/
     README.md tells the operator to create, with that key?), the data_dir on
     the pod's own volume, ports (the config's [listen] = containerPorts =
     Services' ports and targets = probes = the metrics annotation), the Raft
     members (one per replica, each at its pod's name under the headless
     Service, bootstrap set so the cluster forms with no manual step), a TLS
     Secret per pod and a Certificate per Secret naming that pod, the
     PodDisruptionBudget keeping a quorum, a region's origin feed reaching
     the origin's feed port;
  3. `tollgate serve --check` on each pod's config with that pod's
     environment, the mounted paths moved under a temporary directory that
     holds what the volumes would: the ConfigMaps' contents, a CA and a
     certificate per Certificate made by `tollgate ctl certs` from that
     Certificate's SPIFFE ID and DNS names, the demo geography
     (deploy/compose/demo-geo.py, as the README makes the ConfigMap
     `geo-demo`) and a random seal key. Files only the operator has (a
     region's license key, the origin's public key set) are left out:
     `serve --check` does not read them.

systemd (deploy/systemd/):
  4. `systemd-analyze verify` of the template unit as two instances, in a
     temporary root (so /usr/local/bin/tollgate need not be installed, and
     no systemd need be running): any message, even one systemd only warns
     about (an unknown key, a value it ignores), fails;
  5. `systemd-analyze security --offline=yes`: the exposure must stay at or
     below EXPOSURE_MAX;
  6. `systemd-sysusers --dry-run` of the sysusers file against an empty
     root: it parses and creates the user and group the unit runs as.

`--self-test` breaks a copy of the files in a few ways, one at a time, and
passes only if every breakage is caught.
"""

import argparse
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import yaml

# The oldest Kubernetes the manifests support (the pod-index label that
# becomes the node id, and ordinals.start, need 1.28) and the newest whose
# schemas kubernetes-validate bundles.
K8S_VERSION_MIN = "1.28"
# `systemd-analyze security` exposure, 0.0 (best) to 10.0, times ten as
# --threshold takes it: the unit rates 1.2 today; 2.0 leaves room for a
# systemd version that scores a little differently, not for a lost setting.
EXPOSURE_MAX = 20
# How long one external command may take.
COMMAND_TIMEOUT_SECONDS = 60

LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"
SPIFFE = re.compile(r"^spiffe://([a-z0-9.-]+)/(?:origin/node/(\d+)|region/([a-z0-9-]+)/node/(\d+))$")
TLS_SECRET_KEYS = {"ca.crt", "tls.crt", "tls.key"}


class Report:
    """Counts checks; prints each as it is decided."""

    def __init__(self, quiet=False):
        self.passed = 0
        self.failures = []
        self.quiet = quiet

    def ok(self, what):
        self.passed += 1
        if not self.quiet:
            print(f"ok   {what}")

    def fail(self, what, detail=""):
        message = f"{what}: {detail}" if detail else what
        self.failures.append(message)
        if not self.quiet:
            print(f"FAIL {message}")

    def check(self, condition, what, detail=""):
        if condition:
            self.ok(what)
        else:
            self.fail(what, detail)
        return condition

    def note(self, text):
        if not self.quiet:
            print(f"     {text}")


def run(args, env=None, cwd=None):
    """(exit code, stdout + stderr) of a command; never raises for a failure."""
    try:
        done = subprocess.run(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )
        return done.returncode, done.stdout.strip()
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {COMMAND_TIMEOUT_SECONDS} s"
    except OSError as error:
        return 127, str(error)


# ---------------------------------------------------------------- loading


def load_manifests(kube_dir, report):
    """[(file name, resource)] of every YAML document in kube_dir."""
    docs = []
    for path in sorted(kube_dir.glob("*.yaml")):
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as error:
            report.fail(f"{path.name}: YAML", str(error).replace("\n", " "))
            continue
        bad = [d for d in loaded if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind") or not (d.get("metadata") or {}).get("name")]
        if report.check(not bad, f"{path.name}: {len(loaded)} resources, each with apiVersion, kind and a name", f"{len(bad)} without"):
            docs.extend((path.name, d) for d in loaded)
    seen = {}
    for name, doc in docs:
        key = (doc["kind"], doc["metadata"]["name"])
        if key in seen:
            report.fail(f"{doc['kind']}/{key[1]}", f"defined in {seen[key]} and again in {name}")
        seen[key] = name
    return docs


def documented_resources(readme_text, generated_dirs):
    """{("Secret"|"ConfigMap", name): set of keys} that deploy/kubernetes/
    README.md tells the operator to create (`kubectl create secret generic |
    secret tls | configmap NAME --from-file=...`). A key from a directory
    (`--from-file=geo/`) is each file the README's generator writes there
    (generated_dirs: {directory: [file names]})."""
    text = re.sub(r"\\\n\s*", " ", readme_text)
    made = {}
    for line in text.splitlines():
        for command in re.findall(r"kubectl create (?:secret \w+|configmap) [^|;&`]*", line):
            try:
                words = shlex.split(command)
            except ValueError:
                continue
            kind = "ConfigMap" if words[2] == "configmap" else "Secret"
            name = words[4] if kind == "Secret" else words[3]
            keys = made.setdefault((kind, name), set())
            if kind == "Secret" and words[3] == "tls":
                keys |= {"tls.crt", "tls.key"}
            for word in words:
                if not word.startswith("--from-file="):
                    continue
                source = word[len("--from-file="):]
                if "=" in source:
                    keys.add(source.split("=", 1)[0])
                elif source.endswith("/"):
                    keys |= set(generated_dirs.get(source.rstrip("/"), []))
                else:
                    keys.add(source.rsplit("/", 1)[-1])
    return made


def readme_generated_dirs(readme_text, deploy_dir, work):
    """Runs the README's `python3 deploy/compose/demo-geo.py DIR` into work;
    {DIR: file names}, and where the files are."""
    dirs, where = {}, {}
    for out in sorted(set(re.findall(r"python3 deploy/compose/demo-geo\.py (\S+)", readme_text))):
        target = work / "readme-generated" / out
        code, output = run([sys.executable, str(deploy_dir / "compose" / "demo-geo.py"), str(target)])
        if code == 0:
            dirs[out] = sorted(p.name for p in target.iterdir())
            where[out] = target
    return dirs, where


# ---------------------------------------------------------------- schemas


def cert_manager_models():
    """cert-manager's Issuer and Certificate with unknown fields refused
    (cloudcoil's models ignore them by default)."""
    import typing

    import pydantic
    from cloudcoil.models.cert_manager import v1

    def annotations(t):
        yield t
        for arg in typing.get_args(t):
            yield from annotations(arg)

    seen = set()

    def forbid(cls):
        if cls in seen:
            return
        seen.add(cls)
        cls.model_config["extra"] = "forbid"
        for field in cls.model_fields.values():
            for t in annotations(field.annotation):
                if isinstance(t, type) and issubclass(t, pydantic.BaseModel):
                    forbid(t)

    forbid(v1.Certificate)
    forbid(v1.Issuer)
    for cls in seen:
        cls.model_rebuild(force=True)
    return {"Certificate": v1.Certificate, "Issuer": v1.Issuer}, pydantic.ValidationError


def check_schemas(docs, report):
    """The resources that are valid; the others are reported and left out
    of the checks that follow (they would trip over wrong types)."""
    from kubernetes_validate import utils as kv

    newest = kv.major_minor(kv.latest_version())
    versions = [K8S_VERSION_MIN] if newest == K8S_VERSION_MIN else [K8S_VERSION_MIN, newest]
    cm_models, cm_error = cert_manager_models()
    valid = []
    for name, doc in docs:
        what = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        if doc.get("apiVersion") == "cert-manager.io/v1":
            model = cm_models.get(doc["kind"])
            if model is None:
                report.fail(f"{what} schema", "no cert-manager v1 schema for this kind")
                continue
            problems = []
            try:
                model.model_validate(doc)
            except cm_error as error:
                problems += [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
            # The models take any metadata: check it as Kubernetes would.
            try:
                kv.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, newest, strict=True)
            except kv.ValidationError as error:
                problems.append(f"{'.'.join(map(str, error.path))}: {error.message}")
            if report.check(not problems, f"{what} valid against cert-manager v1 (strict)", "; ".join(problems)):
                valid.append((name, doc))
            continue
        problems = []
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as error:
                problems.append(f"{version}: {'.'.join(map(str, error.path)) or '(top)'}: {error.message}")
            except kv.SchemaNotFoundError as error:
                problems.append(error.message)
                break
        if report.check(not problems, f"{what} valid against Kubernetes {' and '.join(versions)} (strict)", "; ".join(problems)):
            valid.append((name, doc))
    return valid


# ---------------------------------------------------------------- model


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def expand(value, env):
    """Kubernetes' $(VAR) expansion: earlier variables of the container;
    $$ is a literal $; an unknown reference stays as it is."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def pod_env(container, pod, ordinal, namespace, configmaps, report, where):
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(str(var["value"]), env)
            continue
        source = var.get("valueFrom", {})
        field = source.get("fieldRef", {}).get("fieldPath")
        if field == "metadata.name":
            env[var["name"]] = pod
        elif field == "metadata.namespace":
            env[var["name"]] = namespace
        elif field == f"metadata.labels['{LABEL_POD_INDEX}']":
            env[var["name"]] = str(ordinal)
        elif "configMapKeyRef" in source and source["configMapKeyRef"].get("name") in configmaps:
            ref = source["configMapKeyRef"]
            env[var["name"]] = str(configmaps[ref["name"]].get("data", {}).get(ref["key"], ""))
        else:
            report.fail(f"{where}: env {var['name']}", f"this check does not model {json.dumps(source)}; extend deploy/check.py")
    return env


def listen_ports(config):
    ports = {}
    for key, value in (config.get("listen") or {}).items():
        match = re.fullmatch(r"(?:\[[0-9a-fA-F:.]+\]|[^:]+):(\d+)", str(value))
        if match:
            ports[key] = int(match.group(1))
    return ports


def config_paths(table, prefix=""):
    """(key, absolute path) for every string in the config that is one."""
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from config_paths(value, f"{name}.")
        elif isinstance(value, str) and value.startswith("/"):
            yield name, value


class Volumes:
    """What a pod's volumes hold: for each mount path, the files (relative
    path -> (origin, content or None)) or a writable volume of the pod."""

    def __init__(self):
        self.mounts = {}  # mount path -> {"volume", "readOnly", "kind", "files"}

    def mount_of(self, path):
        best = None
        for mount in self.mounts:
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                if best is None or len(mount) > len(best):
                    best = mount
        return best


# ---------------------------------------------------------------- kubernetes


class Material:
    """Files made for the volumes: a CA and a certificate per cert-manager
    Certificate, the demo geography, a seal key."""

    def __init__(self, tollgate, work, report):
        self.tollgate = tollgate
        self.work = work
        self.report = report
        self.secret_files = {}  # Secret name -> {key: bytes}
        self.trust_domain = None

    def make_certificates(self, certificates):
        domains = {}
        for name, cert in certificates.items():
            uris = cert["spec"].get("uris") or []
            match = SPIFFE.match(uris[0]) if len(uris) == 1 else None
            if not self.report.check(match, f"Certificate/{name}: one SPIFFE ID naming a node", f"uris = {uris}"):
                continue
            domains[name] = match
        if not domains:
            return
        tds = {m.group(1) for m in domains.values()}
        if not self.report.check(len(tds) == 1, "Certificates: one trust domain", f"{sorted(tds)}"):
            return
        self.trust_domain = tds.pop()
        pki = self.work / "pki"
        code, output = run([self.tollgate, "ctl", "certs", "init", "--out-dir", str(pki), "--trust-domain", self.trust_domain])
        if not self.report.check(code == 0, f"tollgate ctl certs init --trust-domain {self.trust_domain}", output):
            return
        for name, match in domains.items():
            spec = certificates[name]["spec"]
            holder = ["--origin-node", match.group(2)] if match.group(2) else ["--region", match.group(3), "--node", match.group(4)]
            names = []
            for dns in spec.get("dnsNames") or []:
                names += ["--dns", dns]
            for ip in spec.get("ipAddresses") or []:
                names += ["--ip", ip]
            out = self.work / "issued"
            code, output = run([self.tollgate, "ctl", "certs", "issue", "--ca-dir", str(pki), *holder, *names, "--no-default-names", "--out-dir", str(out), "--name", name])
            if self.report.check(code == 0, f"Certificate/{name}: tollgate ctl certs issue {' '.join(holder)} with its DNS names and addresses", output):
                self.secret_files[spec["secretName"]] = {
                    "ca.crt": (pki / "ca.pem").read_bytes(),
                    "tls.crt": (out / f"{name}.pem").read_bytes(),
                    "tls.key": (out / f"{name}.key").read_bytes(),
                }


def check_kubernetes(deploy_dir, tollgate, work, report):
    kube_dir = deploy_dir / "kubernetes"
    docs = load_manifests(kube_dir, report)
    docs = check_schemas(docs, report)

    by_kind = {}
    for _, doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    configmaps = by_kind.get("ConfigMap", {})
    services = by_kind.get("Service", {})
    certificates = by_kind.get("Certificate", {})
    readme = (kube_dir / "README.md").read_text()
    generated_dirs, generated_where = readme_generated_dirs(readme, deploy_dir, work)
    documented = documented_resources(readme, generated_dirs)

    material = Material(tollgate, work, report)
    material.make_certificates(certificates)
    for certificate in certificates.values():
        secret = certificate["spec"].get("secretName")
        documented.setdefault(("Secret", secret), set()).update(TLS_SECRET_KEYS)

    def volume_files(kind, name, items, where):
        """{relative path: content or None} that a Secret or ConfigMap puts
        in a volume; None (after a failure) if it is neither defined nor
        documented."""
        if kind == "ConfigMap" and name in configmaps:
            data = configmaps[name].get("data") or {}
            keys = {k: v.encode() for k, v in data.items()}
            origin = "defined in the manifests"
        elif (kind, name) in documented:
            keys = {k: None for k in documented[(kind, name)]}
            if kind == "Secret" and name in material.secret_files:
                keys.update(material.secret_files[name])
                origin = "made by cert-manager (certificates.yaml)"
            else:
                origin = "created by the operator (README.md)"
            for directory, files in generated_dirs.items():
                if set(files) <= set(keys):
                    for f in files:
                        keys[f] = (generated_where[directory] / f).read_bytes()
            if "seal.key" in keys and keys["seal.key"] is None:
                keys["seal.key"] = (secrets.token_hex(32) + "\n").encode()
        else:
            report.fail(f"{where}: {kind} {name}", "neither defined in deploy/kubernetes/*.yaml nor created by a command in deploy/kubernetes/README.md (kubectl create ...)")
            return None
        report.ok(f"{where}: {kind} {name} is {origin}")
        if not items:
            return dict(keys)
        files = {}
        for item in items:
            if report.check(item["key"] in keys, f"{where}: {kind} {name} has key {item['key']}", f"it has {sorted(keys)}"):
                files[item["path"]] = keys[item["key"]]
        return files

    roles = {}  # StatefulSet name -> (role, config, pods, template labels, listen ports)
    for sts_name, sts in by_kind.get("StatefulSet", {}).items():
        try:
            roles[sts_name] = check_statefulset(sts_name, sts, services, by_kind, configmaps, volume_files, material, tollgate, work, report)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            report.fail(f"StatefulSet/{sts_name}", f"this check cannot follow it ({type(error).__name__}: {error})")
            roles[sts_name] = None

    # A region's feed: a Service of the manifests that reaches an origin's feed port.
    for sts_name, found in roles.items():
        if not found or found["role"] != "region":
            continue
        feed = str((found["config"].get("origin") or {}).get("feed", ""))
        match = re.fullmatch(r"(https?)://([a-z0-9.-]+):(\d+)", feed)
        if not report.check(match, f"StatefulSet/{sts_name}: [origin] feed is a URL with a port", feed):
            continue
        scheme, host, port = match.group(1), match.group(2).split(".")[0], int(match.group(3))
        plaintext = (found["config"].get("tls") or {}).get("insecure_plaintext", False)
        report.check(scheme == ("http" if plaintext else "https"), f"StatefulSet/{sts_name}: [origin] feed is {'http' if plaintext else 'https'}", feed)
        origins = [f for f in roles.values() if f and f["role"] == "origin"]
        service = services.get(host)
        reached = False
        for origin in origins:
            if service and selects(service["spec"].get("selector"), origin["labels"]):
                for sp in service["spec"].get("ports", []):
                    if sp["port"] == port and resolve_target(sp, origin["container_ports"]) == origin["listen"].get("feed"):
                        reached = True
        report.check(reached, f"StatefulSet/{sts_name}: [origin] feed {feed} is a Service port reaching an origin's [listen] feed", f"no Service {host} with port {port} targeting an origin pod's feed port")


def resolve_target(service_port, container_ports):
    target = service_port.get("targetPort", service_port["port"])
    if isinstance(target, int):
        return target if target in container_ports.values() else None
    return container_ports.get(target)


def check_statefulset(name, sts, services, by_kind, configmaps, volume_files, material, tollgate, work, report):
    where = f"StatefulSet/{name}"
    spec = sts["spec"]
    template = spec["template"]
    labels = template.get("metadata", {}).get("labels", {})
    pod_spec = template["spec"]
    replicas = spec.get("replicas", 1)
    start = (spec.get("ordinals") or {}).get("start", 0)
    ordinals = list(range(start, start + replicas))
    pods = [f"{name}-{i}" for i in ordinals]
    svc_name = spec.get("serviceName")
    namespace = sts["metadata"].get("namespace", "tollgate")

    report.check(selects(spec["selector"].get("matchLabels"), labels), f"{where}: selector matches the pod template's labels")
    report.check(start >= 1, f"{where}: ordinals start at 1 (the pod index is the Raft node id; 0 is invalid)", f"start = {start}")
    headless = services.get(svc_name)
    report.check(
        headless is not None and headless["spec"].get("clusterIP") == "None" and selects(headless["spec"].get("selector"), labels),
        f"{where}: serviceName {svc_name} is a headless Service selecting its pods",
    )
    if headless is not None:
        report.check(headless["spec"].get("publishNotReadyAddresses") is True, f"{where}: Service {svc_name} publishes unready pods (members find each other before any is ready)")
    if replicas > 1:
        report.check(pod_spec.get("enableServiceLinks") is False and spec.get("podManagementPolicy") == "Parallel",
                     f"{where}: enableServiceLinks false, podManagementPolicy Parallel")

    containers = pod_spec.get("containers", [])
    container = next((c for c in containers if c["name"] == "tollgate"), None)
    if not report.check(container is not None, f"{where}: a container named tollgate"):
        return None
    args = container.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args and args.index("--config") + 1 < len(args) else None
    if not report.check(args[:1] == ["serve"] and config_path, f"{where}: runs `serve --config <file>`", f"args = {args}"):
        return None
    container_ports = {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports", [])}

    # Volumes and what they hold.
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    vols = Volumes()
    mounted = set()
    for mount in container.get("volumeMounts", []):
        vname = mount["name"]
        mounted.add(vname)
        if report.check(not mount.get("subPath"), f"{where}: volume {vname} mounted whole, not subPath (the kubelet never updates subPath files)") is False:
            continue
        entry = {"volume": vname, "readOnly": mount.get("readOnly", False), "files": {}, "kind": None}
        if vname in claims:
            entry["kind"] = "claim"
        elif vname not in volumes:
            report.fail(f"{where}: volumeMount {vname}", "no volume or volumeClaimTemplate of that name")
            continue
        else:
            volume = volumes[vname]
            entry["kind"] = "files"
            sources = []
            if "configMap" in volume:
                sources.append(("ConfigMap", volume["configMap"]["name"], volume["configMap"].get("items")))
            elif "secret" in volume:
                sources.append(("Secret", volume["secret"]["secretName"], volume["secret"].get("items")))
            elif "projected" in volume:
                for source in volume["projected"]["sources"]:
                    if "secret" in source:
                        sources.append(("Secret", source["secret"]["name"], source["secret"].get("items")))
                    elif "configMap" in source:
                        sources.append(("ConfigMap", source["configMap"]["name"], source["configMap"].get("items")))
                    else:
                        report.fail(f"{where}: volume {vname}", f"this check does not model {sorted(source)}")
            elif "emptyDir" in volume:
                entry["kind"] = "scratch"
            else:
                report.fail(f"{where}: volume {vname}", f"this check does not model {sorted(volume)}")
            entry["sources"] = []
            for kind, src_name, items in sources:
                files = volume_files(kind, src_name, items, where)
                if files is not None:
                    entry["sources"].append((kind, src_name, set(files)))
                    for path, content in files.items():
                        entry["files"][path] = content
        vols.mounts[mount["mountPath"]] = entry
    for vname in list(volumes) + sorted(claims):
        report.check(vname in mounted, f"{where}: volume {vname} is mounted")

    # The config in its ConfigMap.
    config_mount = vols.mount_of(config_path)
    config_text = None
    if config_mount is not None:
        config_text = vols.mounts[config_mount]["files"].get(config_path[len(config_mount):].lstrip("/"))
    if not report.check(config_text is not None, f"{where}: the config {config_path} is a ConfigMap's file on a volume"):
        return None
    try:
        config = tomllib.loads(config_text.decode())
    except tomllib.TOMLDecodeError as error:
        report.fail(f"{where}: config {config_path} is TOML", str(error))
        return None
    report.ok(f"{where}: config {config_path} is TOML")
    role = config.get("role")
    listen = listen_ports(config)
    plaintext = (config.get("tls") or {}).get("insecure_plaintext", False)

    # Ports: [listen] = containerPorts = Services = probes = metrics.
    report.check(sorted(listen.values()) == sorted(container_ports.values()),
                 f"{where}: containerPorts {sorted(container_ports.values())} are the config's [listen] ports",
                 f"[listen] {listen}, containerPorts {container_ports}")
    for svc_name_, service in sorted(services.items()):
        if not selects(service["spec"].get("selector"), labels):
            continue
        for sp in service["spec"].get("ports", []):
            target = resolve_target(sp, container_ports)
            report.check(target is not None and target == sp["port"] and target in listen.values(),
                         f"{where}: Service {svc_name_} port {sp.get('name', sp['port'])} {sp['port']} -> a [listen] port of the same number",
                         f"targetPort {sp.get('targetPort')} is {target}; [listen] {listen}")
    http = listen.get("http")
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if not probe:
            continue
        get = probe.get("httpGet")
        if get is None:
            report.fail(f"{where}: {probe_name}", "not httpGet")
            continue
        port = get["port"] if isinstance(get["port"], int) else container_ports.get(get["port"])
        report.check(port == http and get.get("scheme", "HTTP") == ("HTTP" if plaintext else "HTTPS"),
                     f"{where}: {probe_name} {get['path']} on the [listen] http port ({http}) over {'HTTP' if plaintext else 'HTTPS'}",
                     f"port {get['port']} = {port}, scheme {get.get('scheme', 'HTTP')}")
    annotations = template.get("metadata", {}).get("annotations", {})
    if "prometheus.io/port" in annotations:
        report.check(annotations["prometheus.io/port"] == str(http), f"{where}: prometheus.io/port is the [listen] http port", annotations["prometheus.io/port"])

    # The cluster: one member per replica, formed with no manual step.
    cluster = config.get("cluster") or {}
    members = cluster.get("members") or []
    raft_port = listen.get("raft")
    want = [{"id": i, "raft": f"{pod}.{svc_name}:{raft_port}"} for i, pod in zip(ordinals, pods)]
    if replicas > 1:
        report.check(cluster.get("bootstrap") is True, f"{where}: [cluster] bootstrap on every pod (the {replicas} form a cluster by themselves)")
        report.check(sorted(members, key=lambda m: m.get("id", 0)) == want,
                     f"{where}: [cluster] members are the {replicas} replicas at <pod>.{svc_name}:{raft_port}",
                     f"members {members}, replicas want {want}")
    else:
        report.check(members in ([], want), f"{where}: one replica, [cluster] members empty or itself", f"{members}")

    # The PodDisruptionBudget keeps a quorum.
    quorum = replicas // 2 + 1
    budgets = [p for p in by_kind.get("PodDisruptionBudget", {}).values() if selects(p["spec"].get("selector", {}).get("matchLabels"), labels)]
    if report.check(len(budgets) == 1, f"{where}: one PodDisruptionBudget selects its pods", f"{len(budgets)}"):
        budget = budgets[0]["spec"]
        if "maxUnavailable" in budget:
            left = replicas - int(budget["maxUnavailable"])
        else:
            left = int(budget.get("minAvailable", 0))
        report.check(left >= quorum, f"{where}: the PodDisruptionBudget leaves {left} of {replicas}, a quorum ({quorum})")

    # Every Service the pods are behind names them in each pod's certificate.
    client_services = [s for s, svc in services.items() if selects(svc["spec"].get("selector"), labels) and svc["spec"].get("clusterIP") != "None"]
    certificates = by_kind.get("Certificate", {})

    # Per pod: environment, files, TLS, `serve --check`.
    used_sources = set()
    for ordinal, pod in zip(ordinals, pods):
        pw = f"{where} pod {pod}"
        env = pod_env(container, pod, ordinal, namespace, configmaps, report, pw)
        report.check(env.get("TOLLGATE_NODE_ID") == str(ordinal), f"{pw}: TOLLGATE_NODE_ID is its index {ordinal}", env.get("TOLLGATE_NODE_ID"))
        advertise = env.get("TOLLGATE_ADVERTISE_RAFT", (config.get("advertise") or {}).get("raft"))
        report.check(advertise == f"{pod}.{svc_name}:{raft_port}", f"{pw}: advertises Raft at {pod}.{svc_name}:{raft_port}", f"{advertise}")
        refs = [("args --config", config_path)] + list(config_paths(config))
        refs += [(var, value) for var, value in env.items() if var.startswith("TOLLGATE_") and value.startswith("/")]
        overridden = {var[len("TOLLGATE_"):].lower() for var in env if var.startswith("TOLLGATE_")}
        problems, placed = [], []
        for key, path in refs:
            if key.replace(".", "_") in overridden:
                continue  # the environment sets it
            mount = vols.mount_of(path)
            if mount is None:
                problems.append(f"{key} = {path} is on no volume (the image, FROM scratch, holds nothing else)")
                continue
            entry = vols.mounts[mount]
            if key == "data_dir":
                if entry["kind"] != "claim" or entry["readOnly"]:
                    problems.append(f"data_dir = {path} is not the pod's own writable volume (volumeClaimTemplates)")
                placed.append(f"data_dir on {entry['volume']}")
                continue
            rel = path[len(mount):].lstrip("/")
            if entry["kind"] == "files":
                if rel not in entry["files"]:
                    problems.append(f"{key} = {path}: the volume {entry['volume']} holds only {sorted(entry['files'])}")
                    continue
                for kind, src_name, files in entry.get("sources", []):
                    if rel in files:
                        used_sources.add((entry["volume"], src_name))
                        placed.append(f"{key} from {kind} {src_name}")
            else:
                placed.append(f"{key} on {entry['volume']}")
        report.check(not problems, f"{pw}: every path its config and environment name is on its volumes ({'; '.join(placed)})", "; ".join(problems))
        tls_secret = f"{pod}-tls"
        cert = next((c for c in certificates.values() if c["spec"].get("secretName") == tls_secret), None)
        if report.check(cert is not None, f"{pw}: a Certificate makes its Secret {tls_secret}"):
            dns = set(cert["spec"].get("dnsNames") or [])
            wanted = {f"{pod}.{svc_name}"} | set(client_services)
            report.check(wanted <= dns, f"{pw}: its certificate names {sorted(wanted)}", f"missing {sorted(wanted - dns)}")
        serve_check(pw, config, ordinal, config_text, config_path, env, vols, material, tollgate, work / "pods" / pod, report)
    for vname, volume in volumes.items():
        if "projected" in volume:
            for source in volume["projected"]["sources"]:
                src = (source.get("secret") or source.get("configMap") or {}).get("name")
                report.check((vname, src) in used_sources, f"{where}: projected {src} in volume {vname} is some replica's", "no replica uses it (more Secrets than replicas?)")

    return {"role": role, "config": config, "labels": labels, "listen": listen, "container_ports": container_ports}


def serve_check(where, config, ordinal, config_text, config_path, env, vols, material, tollgate, root, report):
    """`tollgate serve --check` as the pod would run it, its volumes under root."""
    if root.exists():
        shutil.rmtree(root)
    left_out = []
    for mount, entry in vols.mounts.items():
        base = root / mount.lstrip("/")
        base.mkdir(parents=True, exist_ok=True)
        for rel, content in entry["files"].items():
            if content is None:
                left_out.append(f"{mount}/{rel}")
                continue
            target = base / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            if rel.endswith((".key", "tls.key")):
                target.chmod(0o600)

    def moved(text):
        for mount in sorted(vols.mounts, key=len, reverse=True):
            text = re.sub(r'(^|[="\s])' + re.escape(mount) + r'(?=/|"|$)', lambda m: m.group(1) + str(root) + mount, text, flags=re.M)
        return text

    config_file = root / config_path.lstrip("/")
    config_file.write_text(moved(config_text.decode()))
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1"}
    run_env.update({k: moved(v) for k, v in env.items()})
    code, output = run([tollgate, "serve", "--check", "--config", str(config_file)], env=run_env)
    output = output.replace(str(root), "<pod>")
    identity = None
    if material.trust_domain and config.get("role") == "origin":
        identity = f"spiffe://{material.trust_domain}/origin/node/{ordinal}"
    elif material.trust_domain and config.get("role") == "region":
        identity = f"spiffe://{material.trust_domain}/region/{config.get('region')}/node/{ordinal}"
    served_as = re.search(r"valid \(TLS as (spiffe://[^;)]+)[;)]", output)
    ok = code == 0 and served_as is not None and (identity is None or served_as.group(1) == identity)
    report.check(ok, f"{where}: tollgate serve --check with the pod's environment and volumes", f"exit {code}: {output}")
    if ok:
        report.note(output.splitlines()[-1])
    if left_out and not report.quiet:
        report.note(f"not there for the check (only the operator has them; serve --check does not read them): {', '.join(sorted(left_out))}")


# ---------------------------------------------------------------- systemd


def check_systemd(deploy_dir, work, report):
    unit_dir = deploy_dir / "systemd"
    unit = unit_dir / "tollgate@.service"
    sysusers = unit_dir / "tollgate-sysusers.conf"
    for tool in ("systemd-analyze", "systemd-sysusers"):
        if not report.check(shutil.which(tool), f"systemd: {tool} is installed"):
            return
    report.note(f"PID 1 here: {Path('/proc/1/comm').read_text().strip() if Path('/proc/1/comm').exists() else '?'} (no running systemd is needed)")

    # A root holding the unit, systemd's own units (verify resolves
    # sysinit.target and the like) and a stand-in for the binary, which
    # verify only needs to be executable.
    root = work / "systemd-root"
    if root.exists():
        shutil.rmtree(root)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/local/bin").mkdir(parents=True)
    system_units = Path("/usr/lib/systemd/system")
    if system_units.is_dir():
        shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    shutil.copy(unit, root / "etc/systemd/system/tollgate@.service")
    stand_in = root / "usr/local/bin/tollgate"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    instances = ["tollgate@origin-1.service", "tollgate@eu-1.service"]
    code, output = run(["systemd-analyze", "verify", f"--root={root}", "--man=no", *instances])
    report.check(code == 0 and not output, f"systemd: systemd-analyze verify {unit.name} as {' and '.join(instances)}: no error, no warning", f"exit {code}: {output}")
    code, output = run(["systemd-analyze", "security", "--offline=yes", f"--root={root}", f"--threshold={EXPOSURE_MAX}", "--no-pager", instances[1]])
    overall = next((line for line in output.splitlines() if "Overall exposure level" in line), output[-300:])
    report.check(code == 0, f"systemd: systemd-analyze security --offline=yes: exposure at most {EXPOSURE_MAX / 10}", overall)
    if code == 0:
        report.note(overall.strip("→ ").strip())

    # sysusers against an empty root: parses, and makes the unit's user.
    users_root = work / "sysusers-root"
    if users_root.exists():
        shutil.rmtree(users_root)
    (users_root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        (users_root / "etc" / name).touch()
    code, output = run(["systemd-sysusers", f"--root={users_root}", "--dry-run", str(sysusers.resolve())])
    unit_text = unit.read_text()
    user = re.search(r"^User=(\S+)", unit_text, re.M)
    group = re.search(r"^Group=(\S+)", unit_text, re.M)
    user, group = (user.group(1) if user else None), (group.group(1) if group else None)
    report.check(code == 0 and "Failed" not in output and "rror" not in output, f"systemd: systemd-sysusers --dry-run {sysusers.name} parses", f"exit {code}: {output}")
    report.check(
        f"Creating user '{user}'" in output and f"Creating group '{group}'" in output,
        f"systemd: {sysusers.name} creates the user {user} and group {group} that {unit.name} runs as",
        output,
    )


# ---------------------------------------------------------------- main


def check_all(deploy_dir, tollgate, work, report):
    work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=work))  # fresh for every run
    check_kubernetes(deploy_dir, tollgate, work, report)
    check_systemd(deploy_dir, work, report)


# Breakages the check must catch: (what, file under deploy/, old, new,
# text the failure names).
SELF_TEST_BREAKAGES = [
    ("a misspelled field", "kubernetes/origin.yaml", "podManagementPolicy: Parallel", "podManagmentPolicy: Parallel", "podManagmentPolicy"),
    ("a number given as a string", "kubernetes/origin.yaml", "replicas: 3", 'replicas: "3"', "is not of type 'integer'"),
    ("a misspelled cert-manager field", "kubernetes/certificates.yaml", "secretName: region-eu-2-tls", "secretNme: region-eu-2-tls", "secretNme"),
    ("a fourth replica without its member, Secret or Certificate", "kubernetes/origin.yaml", "replicas: 3", "replicas: 4", "members are the 4 replicas"),
    ("a config port no containerPort or Service has", "kubernetes/region-eu.yaml", 'grpc = "0.0.0.0:7300"', 'grpc = "0.0.0.0:7301"', "containerPorts"),
    ("an unknown config key (serve --check)", "kubernetes/origin.yaml", "retention_revisions = 100000", "retention_revision = 100000", "retention_revision"),
    ("a certificate naming another node (serve --check)", "kubernetes/certificates.yaml", "spiffe://acme.example/origin/node/2", "spiffe://acme.example/origin/node/3", "it names spiffe://acme.example/origin/node/3"),
    ("a Secret nobody creates", "kubernetes/origin.yaml", "secretName: origin-seal-key", "secretName: origin-seal-keys", "Secret origin-seal-keys: neither defined"),
    ("a config file on no volume", "kubernetes/origin.yaml", 'seal_key_path = "/etc/tollgate/seal/seal.key"', 'seal_key_path = "/etc/tollgate/sealed/seal.key"', "seal_key_path = /etc/tollgate/sealed/seal.key is on no volume"),
    ("a misspelled systemd key", "systemd/tollgate@.service", "\nProtectSystem=strict\n", "\nProtectSystm=strict\n", "Unknown key 'ProtectSystm'"),
    ("lost hardening (no system-call filter)", "systemd/tollgate@.service", "\nSystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\n", "\n# (no filter)\n", "systemd-analyze security"),
    ("a sysusers line that does not parse", "systemd/tollgate-sysusers.conf", 'u tollgate - "Tollgate node"', 'u tollgate abc "Tollgate node"', "sysusers"),
]


def self_test(deploy_dir, tollgate, work):
    report = Report()
    copy_dir = work / "self-test" / "deploy"
    for part in ("kubernetes", "systemd", "compose/demo-geo.py"):
        source, target = deploy_dir / part, copy_dir / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    baseline = Report(quiet=True)
    check_all(copy_dir, tollgate, work / "self-test" / "work", baseline)
    report.check(not baseline.failures, f"self-test: the unbroken copy passes ({baseline.passed} checks)", "; ".join(baseline.failures[:3]))
    for what, rel, old, new, expect in SELF_TEST_BREAKAGES:
        path = copy_dir / rel
        original = path.read_text()
        if original.count(old) < 1:
            report.fail(f"self-test: {what}", f"{rel} no longer contains {old!r}: update SELF_TEST_BREAKAGES")
            continue
        path.write_text(original.replace(old, new, 1))
        broken = Report(quiet=True)
        check_all(copy_dir, tollgate, work / "self-test" / "work", broken)
        path.write_text(original)
        caught = [f for f in broken.failures if expect in f]
        report.check(caught, f"self-test: caught {what} ({rel}: {old.strip()!r} -> {new.strip().splitlines()[0]!r})", f"failures: {broken.failures[:3]}")
        if caught:
            report.note(caught[0][:220])
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tollgate", required=True, help="the tollgate binary")
    parser.add_argument("--deploy-dir", default=str(Path(__file__).resolve().parent), help="the deploy/ directory to check")
    parser.add_argument("--self-test", action="store_true", help="prove the check fails on broken copies")
    args = parser.parse_args()
    started = time.monotonic()
    deploy_dir = Path(args.deploy_dir)
    with tempfile.TemporaryDirectory(prefix="tollgate-deploy-check-") as tmp:
        work = Path(tmp)
        if args.self_test:
            report = self_test(deploy_dir, args.tollgate, work)
            label = "self-test"
        else:
            report = Report()
            check_all(deploy_dir, args.tollgate, work, report)
            label = "deploy-check"
    if report.failures:
        print(f"\n{label}: FAIL")
        for failure in report.failures:
            print(f"  - {failure}")
    else:
        print(f"\n{label}: PASS")
    print(f"{label}: took {time.monotonic() - started:.1f} s")
    print(f"{label}: {report.passed} passed, {len(report.failures)} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
