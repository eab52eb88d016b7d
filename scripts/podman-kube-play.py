#!/usr/bin/env python3
"""Plays Kubernetes manifests on Debian 12's podman (4.3) as closely as that engine allows,
and says on stderr what it could not play. Used by scripts/e2e-kubernetes.sh.

    podman-kube-play.py NETWORK DIR FILE...

Writes one file per workload into DIR (`DIR/<kind>-<name>.yaml`) and runs `podman kube play`
on it; prints, one a line on stdout, `<file> <pod> <container>` for each pod played: podman's
names of the pod and of its first (main) container. What podman 4.3 lacks, and what is done
instead (docs/kubernetes.md, "The image"):

- Service: ignored by podman. Each Service's name becomes a network alias of the pods whose
  labels its selector matches, so `NAME:PORT` resolves to the pod (one replica: no balancing).
- Secret: podman 4.3 stores a Secret document in a form its own env lookup cannot read (podman
  issue 16269). Each is created here as a podman secret holding the JSON object of base64
  values that the lookup expects, and left out of the played files.
- ports: podman 4.3 publishes every containerPort on the host's port of the same number (for
  every address of the machine, taken from anything else listening there). The played copies
  have no `ports:`; a pod is reached on its own address, as in a cluster.
- restartPolicy: podman 4.3 gives a pod's init containers its restart policy; with Always
  (every Deployment's) each init container stalls the start for 20 s and its removal races.
  Pod templates are played with OnFailure: a container that is killed still restarts.
- Job, CronJob, StatefulSet and anything else but Pod, Deployment, ConfigMap and
  PersistentVolumeClaim: not played (podman 4.3 has none of them), named on stderr.
ConfigMaps go into every played file (podman reads them from the same file).
"""
import base64
import json
import os
import subprocess
import sys

import yaml  # PyYAML, from the virtualenv that holds kubernetes-validate

PLAYED = {"Pod", "Deployment"}


def load(paths):
    documents = []
    for path in paths:
        with open(path, encoding="utf-8") as stream:
            documents += [d for d in yaml.safe_load_all(stream) if d]
    return documents


def pod_spec(document):
    return document["spec"] if document["kind"] == "Pod" else document["spec"]["template"]["spec"]


def pod_labels(document):
    if document["kind"] == "Pod":
        return document.get("metadata", {}).get("labels", {}) or {}
    return document["spec"]["template"].get("metadata", {}).get("labels", {}) or {}


def pod_names(document):
    name = document["metadata"]["name"]
    if document["kind"] == "Pod":
        return [name]
    return [f"{name}-pod-{index}" for index in range(document["spec"].get("replicas", 1))]


def create_secret(document):
    values = {key: value for key, value in (document.get("data") or {}).items()}
    for key, value in (document.get("stringData") or {}).items():
        values[key] = base64.b64encode(value.encode()).decode()
    name = document["metadata"]["name"]
    subprocess.run(["podman", "secret", "rm", name], capture_output=True)
    subprocess.run(["podman", "secret", "create", name, "-"], input=json.dumps(values).encode(),
                   check=True, capture_output=True)
    print(f"podman-kube-play: Secret {name}: created as a podman secret ({len(values)} keys)", file=sys.stderr)


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: podman-kube-play.py NETWORK DIR FILE...")
    network, directory, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    documents = load(paths)
    config_maps = [d for d in documents if d["kind"] == "ConfigMap"]
    claims = [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    services = [d for d in documents if d["kind"] == "Service"]
    for document in documents:
        kind, name = document["kind"], document["metadata"]["name"]
        if kind == "Secret":
            create_secret(document)
        elif kind not in PLAYED | {"ConfigMap", "PersistentVolumeClaim", "Service"}:
            print(f"podman-kube-play: {kind} {name}: not played (podman 4.3 has no {kind})", file=sys.stderr)
    for document in (d for d in documents if d["kind"] in PLAYED):
        kind, name = document["kind"], document["metadata"]["name"]
        labels = pod_labels(document)
        aliases = [s["metadata"]["name"] for s in services
                   if s["spec"].get("selector") and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
        spec = pod_spec(document)
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            container.pop("ports", None)
        if spec.get("restartPolicy", "Always") == "Always":
            spec["restartPolicy"] = "OnFailure"
        path = os.path.join(directory, f"{kind.lower()}-{name}.yaml")
        with open(path, "w", encoding="utf-8") as stream:
            yaml.safe_dump_all(config_maps + claims + [document], stream, sort_keys=False)
        target = network + "".join(f"{',' if i else ':'}alias={a}" for i, a in enumerate(aliases))
        result = subprocess.run(["podman", "kube", "play", "--network", target, path], capture_output=True, text=True)
        # podman 4.3 logs a harmless error for each init container it has already removed.
        noise = "from database: no container with ID"
        errors = [line for line in result.stderr.splitlines() if line.strip() and noise not in line]
        if result.returncode != 0:
            sys.exit(f"podman-kube-play: {kind} {name}: podman kube play failed:\n" + "\n".join(errors))
        print(f"podman-kube-play: {kind} {name}: played on {target}", file=sys.stderr)
        for pod in pod_names(document):
            print(path, pod, f"{pod}-{spec['containers'][0]['name']}")


if __name__ == "__main__":
    main()
