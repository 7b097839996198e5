#!/usr/bin/env python3
"""The checks behind scripts/check-deploy, one subcommand each; exits 1 if any check failed.

  manifests   rendered kustomize output: Kubernetes schemas (kubernetes-validate, strict,
              offline) for the stated versions, then the deployment rules (sidecar placement,
              probes, security context, writable paths, secrets, grace period, Service target)
              cross-checked against the sidecar config inside the ConfigMap
  dockerfile  the Dockerfile's rules (stages, dependency layer, --locked, pinned bases, final
              stage without RUN, non-root USER, EXPOSE, config path, .dockerignore)
  systemd     the unit's hardening and its agreement with deploy/systemd/config.toml
  configs     every shipped sidecar config accepted by the real binary (check-config)
  syscalls    the binary under strace: its system calls, socket families and memory mappings
              within the systemd unit's SystemCallFilter=, RestrictAddressFamilies=,
              MemoryDenyWriteExecute=; its files written only under the state directory
  live        the sidecar started on a make-identity-cert certificate; Synapse 1.3.1's own
              https client policy (Twisted BrowserLikePolicyForHTTPS) verifies it through an
              SSL_CERT_FILE bundle, as the Kubernetes trust-bundle init container sets it up

Prints the failures and a count (CHECK_DEPLOY_VERBOSE=1: every check). Only the standard
library and what kubernetes-validate brings (PyYAML) are used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

FAILED = 0
PASSED = 0
VERBOSE = os.environ.get("CHECK_DEPLOY_VERBOSE") == "1"


def ok(msg: str) -> None:
    global PASSED
    PASSED += 1
    if VERBOSE:
        print(f"  ok    {msg}")


def fail(msg: str) -> None:
    global FAILED
    FAILED += 1
    print(f"  FAIL  {msg}")


def check(cond: bool, msg: str, detail: str = "") -> bool:
    if cond:
        ok(msg)
    else:
        fail(f"{msg}{': ' + detail if detail else ''}")
    return bool(cond)


# --- small parsers ------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> float:
    """'25s', '1m 30s', '500ms', '40' (systemd: bare number = seconds) -> seconds."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)", text):
        if m.start() != pos or m.group(2) not in _UNITS:
            raise ValueError(f"not a duration: {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"not a duration: {text!r}")
    return total


def host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def under(path: str, directory: str) -> bool:
    p, d = PurePosixPath(path), PurePosixPath(directory)
    return p == d or d in p.parents


def file_keys(toml: dict, prefix: str = "") -> dict[str, str]:
    """Every `*_file` key (dotted name -> path) in a parsed config."""
    out = {}
    for key, value in toml.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(file_keys(value, name + "."))
        elif key.endswith("_file") and isinstance(value, str):
            out[name] = value
    return out


def shutdown_grace(config: dict) -> float:
    return seconds(config.get("server", {}).get("shutdown_grace", "25s"))


# --- manifests ------------------------------------------------------------------------------------

# Secrets the kustomizations do not contain (created out of band) and the keys they hold.
IDENTITY_SECRET = "threepid-sidecar-identity-tls"
IDENTITY_KEYS = {"tls.crt", "tls.key", "ca.crt"}  # what deploy/make-identity-cert writes
SIDECAR = "threepid-sidecar"
# Margin of terminationGracePeriodSeconds over server.shutdown_grace: the homeserver stops first.
GRACE_MARGIN = 10


def load_yaml_docs(path: Path) -> list[dict]:
    import yaml

    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def schema_check(label: str, docs: list[dict], versions: list[str]) -> None:
    from kubernetes_validate import utils as kv

    for version in versions:
        errors = []
        for doc in docs:
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                errors.append(f"{name}: {where}: {e.message}")
            except kv.SchemaNotFoundError as e:
                errors.append(f"{name}: {e.message}")
        check(
            not errors,
            f"{label}: {len(docs)} documents valid against the Kubernetes {version} schemas (strict)",
            "; ".join(errors),
        )


def expect_schema_refusal(label: str, docs: list[dict], version: str, needle: str) -> None:
    """A negative control: proves the validator really checks the fields we rely on."""
    from kubernetes_validate import utils as kv

    messages = []
    for doc in docs:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            messages.append(e.message)
    check(
        any(needle in m for m in messages),
        f"{label}: refused by the {version} schema as it must be ({needle!r} unknown before native sidecars)",
        f"got {messages or 'no error'}",
    )


def port_number(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def mounts_of(container: dict, volumes: dict[str, dict]) -> list[tuple[str, dict, dict]]:
    return [(m["mountPath"], m, volumes.get(m["name"], {})) for m in container.get("volumeMounts", [])]


def check_hardened(label: str, c: dict) -> None:
    sc = c.get("securityContext", {})
    problems = []
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        problems.append("capabilities not dropped (drop: [ALL])")
    res = c.get("resources", {})
    if "memory" not in res.get("requests", {}) or "memory" not in res.get("limits", {}):
        problems.append("no memory request and limit")
    check(not problems, f"{label}: container {c['name']} hardened, with resources", "; ".join(problems))


def check_manifests(label: str, docs: list[dict], native: bool, known_secrets: dict[str, set]) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    secrets = dict(known_secrets)
    for name, s in by_kind.get("Secret", {}).items():
        secrets[name] = set(s.get("data", {})) | set(s.get("stringData", {}))

    dep = by_kind.get("Deployment", {}).get("homeserver")
    if not check(dep is not None, f"{label}: Deployment homeserver present"):
        return
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    inits = {c["name"]: c for c in pod.get("initContainers", [])}
    mains = {c["name"]: c for c in pod.get("containers", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}

    # Placement: native sidecar, or (plain-container) a plain container and no restartPolicy
    # anywhere (before 1.29 the field is behind an alpha gate).
    if native:
        side = inits.get(SIDECAR)
        check(
            side is not None and side.get("restartPolicy") == "Always" and SIDECAR not in mains,
            f"{label}: {SIDECAR} is a native sidecar (initContainers, restartPolicy: Always)",
        )
    else:
        side = mains.get(SIDECAR)
        stray = [c["name"] for c in list(inits.values()) + list(mains.values()) if "restartPolicy" in c]
        check(
            side is not None and SIDECAR not in inits and not stray,
            f"{label}: {SIDECAR} is a plain container, no container-level restartPolicy (pre-1.29)",
            f"restartPolicy on {stray}" if stray else "",
        )
    if side is None:
        return
    check(
        ":" in side.get("image", ""),
        f"{label}: sidecar image has a registry name and tag ({side.get('image')})",
    )
    check(pod.get("automountServiceAccountToken") is False, f"{label}: no service account token mounted")

    sc = side.get("securityContext", {})
    check(
        sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0,
        f"{label}: sidecar runAsNonRoot with a non-zero runAsUser",
    )
    for c in list(inits.values()) + list(mains.values()):
        if c["name"] != "homeserver":  # the user's own image: left to them
            check_hardened(label, c)
    req = side.get("resources", {}).get("requests", {})
    lim = side.get("resources", {}).get("limits", {})
    check(
        req.get("memory") == "32Mi" and lim.get("memory") == "128Mi",
        f"{label}: sidecar memory 32Mi request / 128Mi limit",
    )

    # The sidecar's config, from the ConfigMap mounted where --config points.
    args = side.get("args", [])
    config_path = (
        args[args.index("--config") + 1] if "--config" in args else "/etc/threepid-sidecar/config.toml"
    )
    config = None
    for mount_path, _, vol in mounts_of(side, volumes):
        if "configMap" in vol and under(config_path, mount_path):
            cm = by_kind.get("ConfigMap", {}).get(vol["configMap"]["name"])
            key = str(PurePosixPath(config_path).relative_to(mount_path))
            if cm and key in cm.get("data", {}):
                try:
                    config = tomllib.loads(cm["data"][key])
                except tomllib.TOMLDecodeError as e:
                    fail(f"{label}: ConfigMap {cm['metadata']['name']} {key} is not TOML: {e}")
                    return
    if not check(
        config is not None, f"{label}: --config {config_path} is a ConfigMap key mounted into the sidecar"
    ):
        return

    # Ports and probes against the config.
    client_port = host_port(config["server"]["listen"])[1]
    admin_host, admin_port = host_port(config["admin"]["listen"])
    id_host, id_port = host_port(config["identity"]["listen"])
    check(
        port_number(side, "client") == client_port,
        f"{label}: port 'client' = server.listen port {client_port}",
    )
    check(
        admin_host in ("0.0.0.0", "::"),
        f"{label}: admin.listen on every interface (the kubelet probes the Pod IP)",
    )
    want = {
        "startupProbe": "/health/live",
        "livenessProbe": "/health/live",
        "readinessProbe": "/health/ready",
    }
    for probe, path in want.items():
        p = side.get(probe, {}).get("httpGet", {})
        check(
            p.get("path") == path and port_number(side, p.get("port")) == admin_port,
            f"{label}: {probe} GET {path} on the admin port {admin_port}",
            f"got {p}",
        )
    check(
        config["identity"]["server_name"] == f"localhost:{id_port}" and id_host in ("127.0.0.1", "::1"),
        f"{label}: identity.server_name localhost:{id_port}, listener on loopback (same Pod)",
    )
    upstream = config["upstream"]["url"]
    check(
        re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\]):\d+/?$", upstream) is not None,
        f"{label}: upstream.url is the homeserver in the same Pod ({upstream})",
    )
    check(config.get("store", {}).get("backend") == "redis", f"{label}: store.backend = redis")
    check(
        config.get("email", {}).get("transport") == "smtp"
        and "smtp_password_file" in config.get("email", {}),
        f"{label}: SMTP with the password from a file",
    )

    # Writable paths: on an emptyDir mounted read-write into the sidecar.
    writable = [mp for mp, m, v in mounts_of(side, volumes) if "emptyDir" in v and not m.get("readOnly")]
    for key in ("identity.generated_cert_dir", "email.file_dir"):
        section, _, field = key.partition(".")
        path = config.get(section, {}).get(field)
        check(
            path is not None and any(under(path, w) for w in writable),
            f"{label}: {key} ({path}) on a writable emptyDir ({', '.join(writable) or 'none'})",
        )

    # Every *_file: a key of a mounted Secret that exists (here or created out of band).
    for key, path in sorted(file_keys(config).items()):
        found = None
        for mount_path, _, vol in mounts_of(side, volumes):
            if not under(path, mount_path):
                continue
            rel = str(PurePosixPath(path).relative_to(mount_path))
            if "secret" in vol:
                sname = vol["secret"]["secretName"]
                items = {i["path"]: i["key"] for i in vol["secret"].get("items", [])} or None
                skey = items.get(rel) if items is not None else rel
                have = secrets.get(sname)
                if skey is None:
                    found = f"not among the items of Secret {sname}"
                elif have is None:
                    found = f"Secret {sname} unknown (not rendered, not in secrets.example.yaml)"
                elif skey not in have:
                    found = f"Secret {sname} has no key {skey}"
                else:
                    found = True
            elif "configMap" in vol:
                found = True
        check(
            found is True,
            f"{label}: {key} = {path} is a mounted Secret key",
            str(found or "not under any mount"),
        )

    # Grace period vs the drain deadline.
    grace = shutdown_grace(config)
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    check(
        tgps >= grace + GRACE_MARGIN,
        f"{label}: terminationGracePeriodSeconds {tgps} >= shutdown_grace {grace:g}s + {GRACE_MARGIN}s",
    )

    # The homeserver's trust in the identity certificate.
    hs = mains.get("homeserver")
    if check(hs is not None, f"{label}: homeserver container present"):
        env = {e["name"]: e.get("value") for e in hs.get("env", [])}
        bundle = env.get("SSL_CERT_FILE")
        tb = inits.get("trust-bundle")
        script = " ".join(tb.get("command", []) + tb.get("args", [])) if tb else ""
        ca_mounts = [
            mp
            for mp, m, v in mounts_of(tb or {}, volumes)
            if v.get("secret", {}).get("secretName") == IDENTITY_SECRET
        ]
        check(
            bundle is not None
            and bundle in script
            and any(f"{mp}/ca.crt" in script for mp in ca_mounts)
            and any(under(bundle, mp) for mp, m, v in mounts_of(hs, volumes)),
            f"{label}: homeserver trusts the identity CA (SSL_CERT_FILE bundle made by trust-bundle)",
        )
        hs_secrets = [v["secret"] for mp, m, v in mounts_of(hs, volumes) if "secret" in v]
        check(not hs_secrets, f"{label}: no sidecar Secret (private key) mounted into the homeserver")

    # The Service: to the sidecar's client port, selecting this Pod.
    svc = by_kind.get("Service", {}).get("homeserver")
    if check(svc is not None, f"{label}: Service homeserver present"):
        sel = svc["spec"].get("selector", {})
        check(
            sel and all(labels.get(k) == v for k, v in sel.items()),
            f"{label}: Service selects the homeserver Pod",
        )
        for p in svc["spec"]["ports"]:
            target = port_number(side, p.get("targetPort", p["port"]))
            check(
                target == client_port,
                f"{label}: Service port {p['port']} -> sidecar client port {client_port} (not the homeserver's)",
                f"targets {p.get('targetPort')}",
            )

    # Redis, when the overlay brings it: AOF on a PVC, and the name store.url uses.
    sts = by_kind.get("StatefulSet", {}).get("threepid-redis")
    if sts is not None:
        rpod = sts["spec"]["template"]["spec"]
        rc = rpod["containers"][0]
        rvols = {v["name"]: v for v in rpod.get("volumes", [])}
        conf = ""
        for _, _, v in mounts_of(rc, rvols):
            if "configMap" in v:
                conf = "\n".join(
                    by_kind.get("ConfigMap", {}).get(v["configMap"]["name"], {}).get("data", {}).values()
                )
        data_dir = re.search(r"^dir\s+(\S+)", conf, re.M)
        claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
        data_mount = [mp for mp, m, v in mounts_of(rc, rvols) if m["name"] in claims]
        check(
            re.search(r"^appendonly\s+yes\s*$", conf, re.M) is not None
            and data_dir is not None
            and data_dir.group(1) in data_mount,
            f"{label}: Redis appendonly yes, its dir on a PersistentVolumeClaim",
        )
        for c in rpod["containers"]:
            check_hardened(label, c)
        url = config["store"]["url"]
        m = re.match(r"^redis://([^/:@]+):(\d+)", url)
        rsvc = by_kind.get("Service", {}).get(m.group(1)) if m else None
        check(
            rsvc is not None and any(p["port"] == int(m.group(2)) for p in rsvc["spec"]["ports"]),
            f"{label}: store.url {url} names the Redis Service",
        )


def cmd_manifests(args) -> None:
    from kubernetes_validate import utils as kv

    latest = kv.latest_version()
    known = {IDENTITY_SECRET: IDENTITY_KEYS}
    example = load_yaml_docs(Path(args.secrets_example))
    print(f"  Kubernetes schemas: kubernetes-validate {kv.__version__}, latest {latest}")
    schema_check("secrets.example.yaml", example, ["1.25", latest])
    for doc in example:
        if doc["kind"] == "Secret":
            known[doc["metadata"]["name"]] = set(doc.get("stringData", {})) | set(doc.get("data", {}))

    for spec in args.rendered:
        # label=path=native|plain|none=version,version
        label, path, mode, versions = spec.split("=")
        docs = load_yaml_docs(Path(path))
        versions = [latest if v == "latest" else v for v in versions.split(",")]
        schema_check(label, docs, versions)
        if mode == "native":
            expect_schema_refusal(label, docs, "1.27", "'restartPolicy' was unexpected")
        if mode != "none":
            check_manifests(label, docs, native=(mode == "native"), known_secrets=known)


# --- Dockerfile -------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    out, buf = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    import fnmatch

    allowed = True
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
            allowed = neg
    return allowed


def cmd_dockerfile(args) -> None:
    text = Path(args.dockerfile).read_text()
    ins = dockerfile_instructions(text)
    stages: list[list[tuple[str, str]]] = []
    for word, rest in ins:
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    print(f"  Dockerfile: {len(stages)} stages, {len(ins)} instructions")
    check(len(stages) >= 2, "multi-stage build")

    for st in stages:
        image = st[0][1].split()[0]
        pinned = ("@sha256:" in image) or (
            re.search(r":[^/:]+$", image) is not None and not image.endswith(":latest")
        )
        check(pinned and "$" not in image, f"base image pinned: {image}")

    build = [w for st in stages[:-1] for w in st]
    runs = [(i, r) for i, (w, r) in enumerate(build) if w == "RUN"]
    cargo_runs = [(i, r) for i, r in runs if "cargo build" in r]
    check(
        cargo_runs and all("--locked" in r and "--release" in r for i, r in cargo_runs),
        f"every cargo build is --release --locked ({len(cargo_runs)})",
    )
    copies = [(i, r) for i, (w, r) in enumerate(build) if w == "COPY"]
    manifest_copy = next((i for i, r in copies if "Cargo.toml" in r and "Cargo.lock" in r), None)
    src_copy = next((i for i, r in copies if re.search(r"(^|\s)src/?(\s|$)", r)), None)
    check(
        manifest_copy is not None
        and src_copy is not None
        and any(manifest_copy < i < src_copy for i, r in cargo_runs),
        "dependency layer: Cargo.toml + Cargo.lock copied and built before src/",
    )

    final = stages[-1]
    words = [w for w, r in final]
    check("RUN" not in words, "no RUN in the final stage (no shell needed at run time)")
    check(
        "distroless" in final[0][1] or "slim" in final[0][1],
        f"small runtime image: {final[0][1]}",
    )
    users = [r for w, r in final if w == "USER"]
    check(
        users and users[-1].split(":")[0] not in ("root", "0"),
        f"final stage runs as a non-root USER ({users[-1] if users else 'none'})",
    )
    exposed = {int(p.split("/")[0]) for w, r in final if w == "EXPOSE" for p in r.split()}
    check(exposed == {8080, 9090}, f"EXPOSE 8080 9090 (got {sorted(exposed)})")
    envs = " ".join(r for w, r in final if w == "ENV")
    check(
        "THREEPID_SIDECAR_CONFIG=/etc/threepid-sidecar/config.toml" in envs,
        "ENV THREEPID_SIDECAR_CONFIG=/etc/threepid-sidecar/config.toml",
    )
    check(
        "HEALTHCHECK" not in words or "HEALTHCHECK NONE" in text,
        "no HEALTHCHECK (distroless: no shell; probe :9090)",
    )

    # The config the image ships: everything it writes under the VOLUME.
    config_copy = [r for w, r in final if w == "COPY" and r.endswith(" /etc/threepid-sidecar/config.toml")]
    volumes = [v.strip('"[] ') for w, r in final if w == "VOLUME" for v in r.split(",")]
    if check(len(config_copy) == 1, "the image ships /etc/threepid-sidecar/config.toml"):
        src = config_copy[0].split()[-2]
        config = tomllib.loads((Path(args.dockerfile).parent / src).read_text())
        for section, key in (("identity", "generated_cert_dir"), ("email", "file_dir")):
            path = config.get(section, {}).get(key, "")
            check(
                any(under(path, v) for v in volumes),
                f"{src}: {section}.{key} ({path}) under the VOLUME {volumes}",
            )
        ports = {host_port(config[s]["listen"])[1] for s in ("server", "admin")}
        hosts = {host_port(config[s]["listen"])[0] for s in ("server", "admin")}
        check(ports == exposed and hosts == {"0.0.0.0"}, f"{src}: client and admin listeners on 0.0.0.0 at the EXPOSEd ports")
        id_host = host_port(config["identity"]["listen"])[0]
        check(id_host in ("127.0.0.1", "::1"), f"{src}: the identity listener on loopback (got {id_host})")

    # .dockerignore keeps out what must stay out and lets in what COPY needs.
    patterns = [
        line.strip()
        for line in Path(args.dockerignore).read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    sources = [
        s
        for st in stages
        for w, r in st
        if w == "COPY" and "--from" not in r
        for s in [a for a in r.split() if not a.startswith("--")][:-1]
    ]
    blocked = [s for s in sources if not dockerignore_allows(patterns, s.rstrip("/"))]
    check(
        not blocked, f".dockerignore lets in every COPY source ({', '.join(sources)})", f"blocked: {blocked}"
    )
    leaked = [p for p in ("target", ".git", ".e2e", "tests", "mail") if dockerignore_allows(patterns, p)]
    check(not leaked, ".dockerignore keeps out target/, .git/, .e2e/, tests/, mail/", f"let in: {leaked}")


# --- systemd ----------------------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("["):
            section = s.strip("[]")
            continue
        key, _, value = s.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def cmd_systemd(args) -> None:
    unit = parse_unit(Path(args.unit).read_text())
    config = tomllib.loads(Path(args.config).read_text())
    name = Path(args.unit).name
    print(f"  {name} against {args.config}")

    def last(key: str) -> str | None:
        values = unit.get(f"Service.{key}")
        return values[-1] if values else None

    exact = {
        "ExecStart": "/usr/local/bin/threepid-sidecar --config /etc/threepid-sidecar/config.toml",
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "Restart": "on-failure",
        "StateDirectory": "threepid-sidecar",
        "RuntimeDirectory": "threepid-sidecar",
    }
    for key, want in exact.items():
        check(last(key) == want, f"{key}={want}", f"got {last(key)!r}")
    check("@system-service" in unit.get("Service.SystemCallFilter", []), "SystemCallFilter=@system-service")

    grace = shutdown_grace(config)
    stop = seconds(last("TimeoutStopSec") or "90s")
    check(stop >= grace + 5, f"TimeoutStopSec {stop:g}s >= shutdown_grace {grace:g}s + 5s")

    for section in ("server", "identity", "admin"):
        host, port = host_port(config[section]["listen"])
        check(port > 1024, f"{section}.listen port {port} > 1024 (no capabilities)")

    state = "/var/lib/threepid-sidecar"
    for section, key in (("identity", "generated_cert_dir"), ("email", "file_dir")):
        path = config.get(section, {}).get(key, "")
        check(under(path, state), f"{section}.{key} ({path}) in StateDirectory {state}")

    creds_dir = f"/run/credentials/{name}"
    creds = {v.split(":", 1)[0]: v.split(":", 1)[1] for v in unit.get("Service.LoadCredential", [])}
    referenced = set()
    for key, path in sorted(file_keys(config).items()):
        if under(path, creds_dir):
            cred = str(PurePosixPath(path).relative_to(creds_dir))
            referenced.add(cred)
            check(cred in creds, f"{key} = $CREDENTIALS_DIRECTORY/{cred}, a LoadCredential=")
        elif key in ("email.smtp_password_file", "sms.webhook_token_file", "identity.tls_key_file"):
            fail(f"{key} = {path}: a secret, but not from $CREDENTIALS_DIRECTORY ({creds_dir})")
        else:
            ok(f"{key} = {path} (not a secret)")
    unused = set(creds) - referenced
    check(not unused, "every LoadCredential= is used by the config", f"unused: {sorted(unused)}")


# --- configs through the real binary ----------------------------------------------------------------


def with_stub_files(text: str, tmp: Path) -> str:
    """The config with every `*_file` path pointing at a stub file (the real ones are mounted
    at run time only)."""

    def repl(m: re.Match) -> str:
        stub = tmp / f"stub-{abs(hash(m.group(2)))}"
        stub.write_text("stub-secret\n")
        return f'{m.group(1)}"{stub}"'

    return re.sub(r'^(\s*\w+_file\s*=\s*)"([^"]*)"', repl, text, flags=re.M)


def cmd_configs(args) -> None:
    print(f"  sidecar configs through {args.bin} check-config")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for path in args.configs:
            cfg = tmp / (Path(path).parent.name + "-" + Path(path).name)
            cfg.write_text(with_stub_files(Path(path).read_text(), tmp))
            r = subprocess.run(
                [args.bin, "check-config", "--config", str(cfg)], capture_output=True, text=True
            )
            check(
                r.returncode == 0, f"{path}: accepted by check-config", (r.stderr or r.stdout).strip()[-500:]
            )


# --- live: the identity certificate as Synapse 1.3.1 verifies it --------------------------------------

TWISTED_CLIENT = r"""
import sys
from twisted.internet import reactor, defer
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, readBody

url = sys.argv[1].encode()
result = {}

@defer.inlineCallbacks
def main():
    try:
        # synapse/server.py build_http_client_context_factory(): the identity-server client
        response = yield Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS()).request(b"GET", url)
        body = yield readBody(response)
        result["out"] = "%d %s" % (response.code, body.decode())
    except Exception as e:
        result["out"] = "ERROR %r" % (e,)
    reactor.stop()

reactor.callWhenRunning(main)
reactor.run()
print(result["out"])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmd_live(args) -> None:
    cert_dir = Path(args.cert_dir)
    print(f"  {args.bin} on a make-identity-cert certificate, verified as Synapse 1.3.1 does")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        client, ident, admin = free_port(), free_port(), free_port()
        (tmp / "config.toml").write_text(
            f"""
[server]
listen = "127.0.0.1:{client}"
shutdown_grace = "2s"
[identity]
listen = "127.0.0.1:{ident}"
server_name = "localhost:{ident}"
tls_cert_file = "{cert_dir / "tls.crt"}"
tls_key_file = "{cert_dir / "tls.key"}"
[email]
file_dir = "{tmp / "mail"}"
[admin]
listen = "127.0.0.1:{admin}"
[log]
format = "json"
level = "warn"
"""
        )
        log = open(tmp / "sidecar.log", "w+")
        proc = subprocess.Popen([args.bin, "--config", str(tmp / "config.toml")], stdout=log, stderr=log)
        try:
            live = False
            for _ in range(100):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health/live", timeout=1) as r:
                        live = r.status == 200
                        break
                except OSError:
                    if proc.poll() is not None:
                        break
                    time.sleep(0.1)
            log.seek(0)
            if not check(
                live, "sidecar started with the identity certificate, /health/live 200", log.read()[-800:]
            ):
                return

            bundle = tmp / "ca-bundle.pem"
            system = Path("/etc/ssl/certs/ca-certificates.crt")
            bundle.write_text(
                (system.read_text() if system.exists() else "") + (cert_dir / "ca.crt").read_text()
            )
            url = f"https://localhost:{ident}/_matrix/identity/api/v1"

            def fetch(env_extra: dict) -> str:
                env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
                env.update(env_extra)
                r = subprocess.run(
                    [args.synapse_python, "-c", TWISTED_CLIENT, url],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=30,
                )
                return (r.stdout.strip() or r.stderr.strip())[-400:]

            out = fetch({"SSL_CERT_FILE": str(bundle)})
            check(
                out.startswith("200"),
                f"Synapse's https client policy trusts it via SSL_CERT_FILE bundle: {out}",
            )
            out = fetch({})
            check(
                not out.startswith("200"),
                f"...and refuses it without the bundle (the check is real): {out[:120]}",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = None
            check(code == 0, f"sidecar exits 0 on SIGTERM (got {code})")


# --- syscalls: the unit's sandbox against what the binary really calls ------------------------------


def syscall_group(name: str, seen: set | None = None) -> set[str]:
    """A systemd syscall group (or a single name), expanded recursively."""
    seen = set() if seen is None else seen
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager", name], capture_output=True, text=True, check=True
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            calls |= syscall_group(entry, seen)
    return calls


def proc_children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cmd_syscalls(args) -> None:
    """Runs the binary under strace through start, requests on every listener (a requestToken
    that writes a mail file, a proxied request, the identity listener's TLS with a generated
    certificate) and SIGTERM, and checks every system call, socket family and memory mapping
    against the unit's SystemCallFilter=, RestrictAddressFamilies= and
    MemoryDenyWriteExecute=, and that every file written is under the state directory (what a
    read-only root filesystem needs: the image's VOLUME, the unit's StateDirectory=)."""
    unit = parse_unit(Path(args.unit).read_text())
    allowed: set[str] = set()
    for value in unit.get("Service.SystemCallFilter", []):
        deny = value.startswith("~")
        names = set()
        for entry in value.lstrip("~").split():
            names |= syscall_group(entry)
        allowed = allowed - names if deny else allowed | names
    families = set(unit.get("Service.RestrictAddressFamilies", [""])[-1].split())
    print(
        f"  {args.bin} under strace, against the filters of {Path(args.unit).name} ({len(allowed)} system calls allowed)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        client, ident, admin, upstream = free_port(), free_port(), free_port(), free_port()
        (tmp / "config.toml").write_text(
            f"""
[server]
listen = "127.0.0.1:{client}"
shutdown_grace = "2s"
[upstream]
url = "http://127.0.0.1:{upstream}"
path_compat = "r0"
[identity]
listen = "127.0.0.1:{ident}"
generated_cert_dir = "{tmp / "state" / "identity"}"
[email]
file_dir = "{tmp / "state" / "mail"}"
[admin]
listen = "127.0.0.1:{admin}"
[log]
format = "json"
"""
        )
        trace = tmp / "strace.log"
        proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-o", str(trace), args.bin, "--config", str(tmp / "config.toml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        code = None
        try:
            ready = False
            for _ in range(150):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health/ready", timeout=1) as r:
                        ready = r.status == 200
                        break
                except OSError:
                    if proc.poll() is not None:
                        break
                    time.sleep(0.1)
            if not check(ready, "sidecar ready under strace"):
                return

            def request(url: str, body: bytes | None = None) -> int:
                req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        return r.status
                except urllib.error.HTTPError as e:
                    return e.code

            token = request(
                f"http://127.0.0.1:{client}/_matrix/client/v3/register/email/requestToken",
                json.dumps(
                    {"client_secret": "deploycheck", "email": "a@example.org", "send_attempt": 1}
                ).encode(),
            )
            proxied = request(f"http://127.0.0.1:{client}/_matrix/client/v3/sync")  # upstream down: 502
            metrics = request(f"http://127.0.0.1:{admin}/metrics")
            import ssl

            ctx = ssl.create_default_context(cafile=str(tmp / "state" / "identity" / "identity-cert.pem"))
            with urllib.request.urlopen(
                f"https://localhost:{ident}/_matrix/identity/api/v1", context=ctx, timeout=5
            ) as r:
                identity = r.status
            mails = list((tmp / "state" / "mail").glob("*.eml"))
            check(
                token == 200 and proxied == 502 and metrics == 200 and identity == 200 and len(mails) == 1,
                "requests served on every listener under strace",
                f"requestToken {token}, proxied {proxied}, metrics {metrics}, identity {identity}, {len(mails)} mail",
            )
        finally:
            for child in proc_children(proc.pid):
                os.kill(child, signal.SIGTERM)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        check(code == 0, f"sidecar exits 0 on SIGTERM under strace (got {code})")

        used: set[str] = set()
        socket_families: set[str] = set()
        wx = []
        writes = set()
        state = tmp / "state"
        for line in trace.read_text(errors="replace").splitlines():
            w = re.match(r'^\d+\s+(?:openat|open|creat)\((?:AT_FDCWD, )?"([^"]*)", ([A-Z_|]+)', line)
            if w and re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", w.group(2)) and "= -1" not in line:
                writes.add(w.group(1))
            w = re.match(
                r'^\d+\s+(?:mkdir|mkdirat|rename|renameat2?|unlink|unlinkat|rmdir|linkat|symlinkat)\((?:AT_FDCWD, )?"([^"]*)"',
                line,
            )
            if w and "= -1" not in line:
                writes.add(w.group(1))
            m = re.match(r"^\d+\s+([a-z_0-9]+)\(", line)
            if not m:
                continue
            used.add(m.group(1))
            f = re.match(r"^\d+\s+socket(?:pair)?\((AF_[A-Z0-9]+)", line)
            if f:
                socket_families.add(f.group(1))
            if (
                m.group(1) in ("mmap", "mprotect", "pkey_mprotect")
                and "PROT_WRITE" in line
                and "PROT_EXEC" in line
            ):
                wx.append(line.strip()[:120])
        # execve is strace starting the program, before the filter would apply
        denied = sorted(used - allowed - {"execve"})
        check(
            used and not denied,
            f"all {len(used)} system calls used are allowed by SystemCallFilter=",
            f"denied: {denied}",
        )
        check(
            socket_families <= families,
            f"socket families {sorted(socket_families)} within RestrictAddressFamilies=",
            f"outside: {sorted(socket_families - families)}",
        )
        check(not wx, "no writable+executable mapping (MemoryDenyWriteExecute=yes)", "; ".join(wx[:3]))
        outside = sorted(p for p in writes if not under(p, str(state)) and not p.startswith("/dev/"))
        check(
            writes and not outside,
            f"writes only under the state directory ({len(writes)} paths): a read-only root filesystem works",
            f"also writes {outside[:5]}",
        )


def cmd_same_render(args) -> None:
    """Two kustomize builds of one kustomization give the same objects (order aside)."""

    def objects(path: str) -> list[str]:
        return sorted(json.dumps(d, sort_keys=True) for d in load_yaml_docs(Path(path)))

    for spec in args.pairs:
        label, pa, pb = spec.split("=")
        a, b = objects(pa), objects(pb)
        check(a == b, f"{label}: the same {len(a)} objects from both builds", f"{pa} and {pb} differ")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("manifests")
    p.add_argument("--secrets-example", required=True)
    p.add_argument("rendered", nargs="+", help="label=path=native|plain|none=version[,version]")
    p = sub.add_parser("dockerfile")
    p.add_argument("--dockerfile", required=True)
    p.add_argument("--dockerignore", required=True)
    p = sub.add_parser("systemd")
    p.add_argument("--unit", required=True)
    p.add_argument("--config", required=True)
    p = sub.add_parser("configs")
    p.add_argument("--bin", required=True)
    p.add_argument("configs", nargs="+")
    p = sub.add_parser("syscalls")
    p.add_argument("--bin", required=True)
    p.add_argument("--unit", required=True)
    p = sub.add_parser("same-render")
    p.add_argument("pairs", nargs="+", help="label=render-a=render-b")
    p = sub.add_parser("live")
    p.add_argument("--bin", required=True)
    p.add_argument("--cert-dir", required=True)
    p.add_argument("--synapse-python", required=True)
    args = ap.parse_args()
    {
        "manifests": cmd_manifests,
        "dockerfile": cmd_dockerfile,
        "systemd": cmd_systemd,
        "configs": cmd_configs,
        "live": cmd_live,
        "same-render": cmd_same_render,
        "syscalls": cmd_syscalls,
    }[args.cmd](args)
    print(f"  {args.cmd}: {PASSED} checks passed, {FAILED} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
