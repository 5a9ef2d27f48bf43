"""Offline checks of a rendered overlay that kubernetes-validate cannot make (deploy/lint.sh).

    python deploy/k8s/check.py RENDERED.yaml BUILTINS.yaml

- Prometheus Operator objects (monitoring.coreos.com; kubernetes-validate has no schema for CRDs
  and would only warn) against schemas/monitoring.coreos.com-v1.yaml, and every rule expression
  for balanced brackets and quotes;
- the restricted pod shape of every workload: uid 10001, non-root, read-only root filesystem with
  /tmp mounted, no privilege escalation, ALL capabilities dropped, RuntimeDefault seccomp, no
  service account token, requests and limits, an image with a tag that is not `latest`;
- no Secret object: secrets are referenced (secretKeyRef), never shipped.
Every other object is written to BUILTINS.yaml for kubernetes-validate. Exit 1 on any problem.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

SCHEMA = Path(__file__).with_name("schemas") / "monitoring.coreos.com-v1.yaml"
PAIRS = {")": "(", "]": "[", "}": "{"}


def promql_balanced(expr: str) -> str | None:
    stack: list[str] = []
    quote = ""
    for char in expr:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in PAIRS and (not stack or stack.pop() != PAIRS[char]):
            return f"unbalanced {char!r}"
    return f"unclosed {quote or stack[-1]!r}" if quote or stack else None


def pod_problems(pod: dict[str, Any]) -> list[str]:
    problems = []
    context = pod.get("securityContext", {})
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken must be false")
    if context.get("runAsNonRoot") is not True or context.get("runAsUser") != 10001:
        problems.append("securityContext needs runAsNonRoot: true and runAsUser: 10001")
    if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("securityContext.seccompProfile.type must be RuntimeDefault")
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        name, sc = container["name"], container.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        mounts = {m.get("mountPath") for m in container.get("volumeMounts", [])}
        if "/tmp" not in mounts:  # noqa: S108 (a path compared, not a file used)
            problems.append(f"{name}: needs a writable /tmp (emptyDir)")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(kind, {})):
                problems.append(f"{name}: resources.{kind} needs cpu and memory")
        image = container.get("image", "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if "@sha256:" not in image and tag in ("", "latest"):
            problems.append(f"{name}: image {image!r} needs a tag other than latest or a digest")
    return problems


def main(rendered: str, builtins_out: str) -> int:
    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    validator = Draft202012Validator(yaml.safe_load(SCHEMA.read_text()))
    builtins, problems = [], []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if str(doc.get("apiVersion", "")).startswith("monitoring.coreos.com/"):
            for error in validator.iter_errors(doc):
                path = ".".join(str(p) for p in error.absolute_path)
                problems.append(f"{where}: {path}: {error.message}")
            for group in doc.get("spec", {}).get("groups", []):
                for rule in group.get("rules", []):
                    issue = promql_balanced(str(rule.get("expr", "")))
                    if issue:
                        problems.append(f"{where}: {rule.get('alert')}: expr {issue}")
            continue
        builtins.append(doc)
        if doc.get("kind") == "Secret":
            problems.append(f"{where}: no Secret manifests; reference the Secret instead")
        spec = doc.get("spec", {})
        if doc.get("kind") == "CronJob":
            spec = spec.get("jobTemplate", {}).get("spec", {})
        pod = spec.get("template", {}).get("spec")
        if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"):
            problems.extend(f"{where}: {p}" for p in pod_problems(pod or {}))
    Path(builtins_out).write_text(yaml.safe_dump_all(builtins, sort_keys=False))
    for problem in problems:
        print(f"ERROR {Path(rendered).stem}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
