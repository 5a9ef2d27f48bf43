"""`make k8s-test`: the manifests on a real Kubernetes API server (deploy/k8s/test/cluster.sh:
etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and kwok's fake nodes).

For each overlay, as a platform team would meet it on a first apply: a namespace that enforces
Pod Security `restricted`, the out-of-band Secret, the migrate Job first (README "Deployment"),
then everything, server-side. Every object must be accepted, every pod admitted, the Deployments
must reach their replicas, the Job complete, the PDBs allow one disruption and `kubectl drain`
respect them. Unsafe changes must be refused by the server itself. Evidence is what the server
answers and stores, read back with kubectl.
Run alone (`make k8s-test`); `make test` leaves it out (the `kubernetes` marker)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.kubernetes

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
STATE = Path(os.environ.get("STACK_DIR", ROOT / ".stack")) / "k8s"
# The commands topic's partitions (deploy/local/kafka.sh topics): no more workers than this.
COMMAND_PARTITIONS = int(
    re.search(r'KAFKA_PARTITIONS", "(\d+)"', (ROOT / "deploy/local/kafka.sh").read_text())[1]  # type: ignore[index]
)


@dataclass(frozen=True)
class Overlay:
    name: str
    namespace: str
    components: tuple[str, ...]
    api_replicas: tuple[int, int]  # the HPA's min and max (README "Deployment")
    workers_min: int


OVERLAYS = {
    "dev": Overlay("dev", "conference-dev", ("keda-worker",), (1, 2), 2),
    "prod": Overlay("prod", "conference", ("keda-worker", "keda-worker-sasl"), (3, 10), 2),
}


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    binary = Path((STATE / "bin").read_text().strip()) / "kubectl"
    done = subprocess.run(
        [str(binary), "--kubeconfig", str(STATE / "kubeconfig"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


def get(kind: str, name: str = "", namespace: str = "", selector: str = "") -> dict[str, Any]:
    args = ["get", kind, *([name] if name else []), "-o", "json"]
    args += ["-n", namespace] if namespace else []
    args += ["-l", selector] if selector else []
    return dict(json.loads(kubectl(*args).stdout))


def wait_until(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


@dataclass
class Release:
    """One overlay applied to its namespace, and what the checks counted."""

    overlay: Overlay
    objects: list[dict[str, Any]]
    checked: list[str] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.overlay.namespace

    @property
    def instance(self) -> str:
        return str(self.objects[0]["metadata"]["labels"]["app.kubernetes.io/instance"])

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def ready_pods(self, component: str) -> list[dict[str, Any]]:
        pods = get(
            "pods", namespace=self.namespace, selector=f"app.kubernetes.io/component={component}"
        )
        return [
            p
            for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        ]


def render(overlay: Overlay, work: Path, components: tuple[str, ...] = ()) -> str:
    """The overlay, with optional components, as `kubectl kustomize` renders it."""
    folder = work / f"render-{overlay.name}"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / overlay.name, folder)],
                "components": [os.path.relpath(K8S / "components" / c, folder) for c in components],
            }
        )
    )
    return kubectl("kustomize", str(folder)).stdout


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    assert kubectl("get", "--raw", "/readyz", check=False).returncode == 0, (
        "no control plane: run `make k8s-test` (deploy/k8s/test/cluster.sh start)"
    )
    crds = sorted((K8S / "crds").glob("*/*.yaml"))
    for crd in crds:
        kubectl("apply", "--server-side", "--field-manager=k8s-test", "-f", str(crd))
    names = [yaml.safe_load(c.read_text())["metadata"]["name"] for c in crds]
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    print(f"\nk8s-test: {len(crds)} CRDs installed and established ({', '.join(names)})")
    yield


@pytest.fixture(scope="module", params=list(OVERLAYS))
def release(
    request: pytest.FixtureRequest, cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    overlay = OVERLAYS[request.param]
    rendered = render(overlay, tmp_path_factory.mktemp("k8s"))
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    release = Release(overlay, objects)
    ns = overlay.namespace
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=k8s-test",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": ns,
                    "labels": {
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                        "pod-security.kubernetes.io/warn": "restricted",
                    },
                },
            }
        ),
    )
    # The Secret every workload references; made out of band, never by the manifests.
    kubectl(
        "create",
        "secret",
        "generic",
        "conference-service",
        "-n",
        ns,
        "--from-literal=database-url=postgresql://conference:x@postgres:5432/conference",
        "--from-literal=api-tokens=caller:token",
        "--from-literal=webhook-secret=x",
        "--from-literal=totalvoice-access-token=x",
        "--from-literal=kafka-sasl-username=x",
        "--from-literal=kafka-sasl-password=x",
    )
    wait_until(
        lambda: kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0,
        60,
        "the namespace's default ServiceAccount",
    )
    # The README's rollout: the migrate Job alone, awaited, then everything (the Job unchanged).
    apply = ["apply", "--server-side", "--field-manager=k8s-test", "-f", "-"]
    kubectl(*apply, "-l", "app.kubernetes.io/component=migrate", stdin=rendered)
    kubectl("wait", "-n", ns, "--for=condition=complete", "--timeout=90s", "job/conference-migrate")
    applied = kubectl(*apply, stdin=rendered)
    # Pod Security warns (without refusing) on a workload whose pods it would refuse.
    assert "Warning" not in applied.stderr, applied.stderr
    yield release
    print(f"\nk8s-test {overlay.name} (namespace {ns}):")
    for line in release.checked:
        print(f"  ok  {line}")


def test_every_object_is_accepted_and_stored(release: Release) -> None:
    kinds: dict[str, int] = {}
    for obj in release.objects:
        stored = get(
            obj["kind"], obj["metadata"]["name"], namespace=obj["metadata"].get("namespace", "")
        )
        assert stored["metadata"]["uid"], obj["metadata"]["name"]
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    release.checked.append(
        f"{len(release.objects)} objects accepted server-side and stored ({summary})"
    )


def _pod_templates(release: Release) -> list[tuple[str, dict[str, Any]]]:
    templates = []
    for obj in release.objects:
        spec = obj.get("spec", {})
        if obj["kind"] in ("Deployment", "Job"):
            templates.append((f"{obj['kind']}/{obj['metadata']['name']}", spec["template"]))
        elif obj["kind"] == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]
            templates.append((f"CronJob/{obj['metadata']['name']}", template))
    return templates


def _bare_pod(name: str, namespace: str, template: dict[str, Any]) -> str:
    """A Pod from a workload's template: Pod Security admission enforces on Pods only (on a
    Deployment, Job or CronJob it merely warns), so each template is checked as a Pod."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }
    return json.dumps(pod)


def test_every_pod_template_is_admitted_under_restricted(release: Release) -> None:
    templates = _pod_templates(release)
    for workload, template in templates:
        name = "admission-" + workload.lower().replace("/", "-")
        created = kubectl(
            "create",
            "--dry-run=server",
            "-f",
            "-",
            stdin=_bare_pod(name, release.namespace, template),
            check=False,
        )
        assert created.returncode == 0, (workload, created.stderr)
        assert "Warning" not in created.stderr, (workload, created.stderr)
    replica_sets = get("replicasets", namespace=release.namespace)["items"]
    refused = [
        (rs["metadata"]["name"], c["message"])
        for rs in replica_sets
        for c in rs.get("status", {}).get("conditions", [])
        if c["type"] == "ReplicaFailure"
    ]
    assert not refused, refused
    release.checked.append(
        f"{len(templates)} pod templates admitted as Pods under Pod Security restricted "
        f"({', '.join(w for w, _ in templates)}), no warning; no ReplicaSet refused a pod"
    )


def test_unsafe_changes_are_refused_by_the_server(release: Release) -> None:
    workload, template = _pod_templates(release)[0]
    unsafe = json.loads(json.dumps(template))
    unsafe["spec"]["securityContext"].pop("runAsNonRoot")
    for container in unsafe["spec"]["containers"]:
        container.get("securityContext", {}).pop("runAsNonRoot", None)
    pod = kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=_bare_pod("unsafe-pod", release.namespace, unsafe),
        check=False,
    )
    assert pod.returncode != 0, pod.stdout
    assert 'violates PodSecurity "restricted:latest"' in pod.stderr, pod.stderr
    assert "runAsNonRoot" in pod.stderr, pod.stderr

    monitor = json.loads(json.dumps(release.of_kind("ServiceMonitor")[0]))
    monitor["spec"]["endpoints"][0]["intervall"] = monitor["spec"]["endpoints"][0].pop("interval")
    applied = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=k8s-test",
        "-f",
        "-",
        stdin=json.dumps(monitor),
        check=False,
    )
    assert applied.returncode != 0, applied.stdout
    assert "intervall" in applied.stderr and "field not declared in schema" in applied.stderr, (
        applied.stderr
    )
    release.checked.append(
        f"refused: a Pod from {workload} without runAsNonRoot "
        '(violates PodSecurity "restricted:latest"); a ServiceMonitor with the undeclared '
        "field spec.endpoints[0].intervall (field not declared in schema)"
    )


def _wanted_replicas(release: Release, deployment: dict[str, Any]) -> int:
    name = deployment["metadata"]["name"]
    autoscalers = [
        h
        for h in release.of_kind("HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == name
    ]
    if autoscalers:  # no `replicas` in the manifest: the HPA raises it to its floor
        return int(autoscalers[0]["spec"]["minReplicas"])
    return int(deployment["spec"]["replicas"])


def _deployments_ready(release: Release) -> dict[str, int] | None:
    ready = {}
    for deployment in release.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        status = get("deployment", name, namespace=release.namespace)["status"]
        wanted = _wanted_replicas(release, deployment)
        if status.get("readyReplicas", 0) != wanted or status.get("updatedReplicas", 0) != wanted:
            return None
        ready[name] = wanted
    return ready


def test_deployments_reach_their_replicas_on_the_nodes(release: Release) -> None:
    ready = wait_until(lambda: _deployments_ready(release), 120, "every Deployment to be ready")
    nodes = {
        p["spec"]["nodeName"]
        for p in get(
            "pods",
            namespace=release.namespace,
            selector="app.kubernetes.io/component in (api,worker)",
        )["items"]
    }
    # Applying the release again must not take the count back from the HPA.
    rendered = "\n---\n".join(yaml.safe_dump(o) for o in release.objects)
    kubectl("apply", "--server-side", "--field-manager=k8s-test", "-f", "-", stdin=rendered)
    assert _deployments_ready(release) == ready
    replicas = ", ".join(f"{name} {n}/{n}" for name, n in ready.items())
    release.checked.append(
        f"Deployments ready: {replicas}, on {len(nodes)} kwok nodes; "
        "a second apply leaves the HPA's count alone"
    )


def test_the_migrate_job_completed(release: Release) -> None:
    job = get("job", "conference-migrate", namespace=release.namespace)
    assert job["status"].get("succeeded") == 1, job["status"]
    assert any(
        c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"]
    )
    release.checked.append(
        "Job conference-migrate completed (1 succeeded), before the rest was applied"
    )


def test_a_job_from_the_cronjob_is_admitted_and_completes(release: Release) -> None:
    job = "reconcile-now"
    kubectl("create", "job", job, "--from=cronjob/conference-reconcile", "-n", release.namespace)
    kubectl(
        "wait", "-n", release.namespace, "--for=condition=complete", "--timeout=60s", f"job/{job}"
    )
    pods = get("pods", namespace=release.namespace, selector=f"job-name={job}")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"], pods
    kubectl("delete", "job", job, "-n", release.namespace, "--wait=false")
    release.checked.append(
        "a Job made from CronJob conference-reconcile: its pod admitted and Succeeded"
    )


def _allowed_disruptions(release: Release) -> dict[str, int]:
    return {
        pdb["metadata"]["name"]: int(
            get("pdb", pdb["metadata"]["name"], namespace=release.namespace)
            .get("status", {})
            .get("disruptionsAllowed", 0)
        )
        for pdb in release.of_kind("PodDisruptionBudget")
    }


def test_the_disruption_budgets_each_allow_one(release: Release) -> None:
    wait_until(lambda: _deployments_ready(release), 120, "every Deployment to be ready")
    allowed = wait_until(
        lambda: (a := _allowed_disruptions(release)) and all(v == 1 for v in a.values()) and a,
        60,
        "each PodDisruptionBudget to allow one disruption",
    )
    release.checked.append(
        "PodDisruptionBudgets: " + ", ".join(f"{n} allows {v}" for n, v in allowed.items())
    )


def _nodes_of(release: Release, component: str) -> list[str]:
    return [p["spec"]["nodeName"] for p in release.ready_pods(component)]


def _drain(release: Release, node: str, timeout: str) -> subprocess.CompletedProcess[str]:
    return kubectl(
        "drain",
        node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        f"--timeout={timeout}",
        f"--pod-selector=app.kubernetes.io/instance={release.instance}",
        check=False,
        timeout=120,
    )


def test_drain_respects_the_disruption_budgets(release: Release) -> None:
    wait_until(lambda: _deployments_ready(release), 120, "every Deployment to be ready")
    nodes = [n["metadata"]["name"] for n in get("nodes")["items"]]
    api_floor = next(
        int(p["spec"].get("minAvailable", 0))
        for p in release.of_kind("PodDisruptionBudget")
        if p["metadata"]["name"] == "conference-api"
    )
    try:
        # Nowhere to reschedule: each eviction leaves a pod down until the test uncordons.
        for node in nodes:
            kubectl("cordon", node)
        api_nodes = _nodes_of(release, "api")
        worker_nodes = _nodes_of(release, "worker")
        first = min(set(api_nodes), key=lambda n: (api_nodes.count(n), worker_nodes.count(n)))
        drained = _drain(release, first, "60s")
        assert drained.returncode == 0, drained.stderr
        evicted = drained.stdout.count("evicted")
        api_ready = len(release.ready_pods("api"))
        message = f"drained {first}: {evicted} pods evicted, {api_ready} api pods ready"
        if api_floor:
            # The api's budget is now spent: a drain of another api node must wait.
            assert api_ready == api_floor, (api_ready, api_floor)
            second = next(n for n in _nodes_of(release, "api") if n != first)
            blocked = _drain(release, second, "15s")
            assert blocked.returncode != 0, blocked.stdout
            assert "violate the pod's disruption budget" in blocked.stderr, blocked.stderr
            assert len(release.ready_pods("api")) == api_floor
            message += (
                f"; a drain of {second} was refused by the api's budget (minAvailable "
                f"{api_floor}) and {api_floor} api pods stayed ready"
            )
    finally:
        for node in nodes:
            kubectl("uncordon", node)
    wait_until(lambda: _deployments_ready(release), 120, "every Deployment to be ready again")
    release.checked.append(message + "; uncordoned, every Deployment ready again")


def test_cronjob_and_autoscaler_carry_the_promised_fields(release: Release) -> None:
    cron = get("cronjob", "conference-reconcile", namespace=release.namespace)["spec"]
    assert (cron["schedule"], cron["timeZone"], cron["concurrencyPolicy"]) == (
        "30 6 * * *",
        "America/Sao_Paulo",
        "Forbid",
    )
    rules = cron["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [1], rules
    hpa = get("hpa", "conference-api", namespace=release.namespace)
    low, high = release.overlay.api_replicas
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (low, high)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    current = wait_until(
        lambda: get("hpa", "conference-api", namespace=release.namespace)["status"].get(
            "currentReplicas"
        ),
        60,
        "the HPA to report its replicas",
    )
    assert current == low
    release.checked.append(
        "CronJob conference-reconcile: 30 6 * * * America/Sao_Paulo, Forbid, exit 1 fails the Job; "
        f"HPA conference-api: {low}-{high} replicas on CPU 70%, holding {current}"
    )


def test_the_dashboard_and_rules_are_stored_beside_the_workloads(release: Release) -> None:
    dashboard = get("configmap", "conference-dashboard", namespace=release.namespace)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["conference-service.json"])["panels"]
    rule = get("prometheusrule", "conference-alerts", namespace=release.namespace)
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert len(panels) >= 8 and alerts
    release.checked.append(
        f"ConfigMap conference-dashboard: {len(panels)} panels (grafana_dashboard=1); "
        f"PrometheusRule conference-alerts: {len(alerts)} alerts"
    )


def test_the_keda_component_is_accepted(
    release: Release, tmp_path_factory: pytest.TempPathFactory
) -> None:
    overlay = release.overlay
    rendered = render(overlay, tmp_path_factory.mktemp("keda"), overlay.components)
    applied = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=k8s-test",
        "-o",
        "json",
        "-f",
        "-",
        stdin=rendered,
    )
    stored = {(o["kind"], o["metadata"]["name"]): o for o in json.loads(applied.stdout)["items"]}
    scaled = stored[("ScaledObject", "conference-worker")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "conference-worker"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= COMMAND_PARTITIONS
    trigger = scaled["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["allowIdleConsumers"] == "false"
    config = next(
        o
        for o in json.loads(applied.stdout)["items"]
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("conference-config")
    )
    for key in ("bootstrapServersFromEnv", "consumerGroupFromEnv", "topicFromEnv"):
        assert trigger["metadata"][key] in config["data"], (key, trigger["metadata"][key])
    # KEDA's autoscaler owns the worker's count: the rendered Deployment no longer sets it.
    worker = next(
        o
        for o in yaml.safe_load_all(rendered)
        if o and o["kind"] == "Deployment" and o["metadata"]["name"] == "conference-worker"
    )
    assert "replicas" not in worker["spec"], worker["spec"]
    sasl = "keda-worker-sasl" in overlay.components
    if sasl:
        assert trigger["authenticationRef"]["name"] == "conference-kafka"
        assert ("TriggerAuthentication", "conference-kafka") in stored
    release.checked.append(
        f"components {', '.join(overlay.components)} accepted (server dry-run): ScaledObject "
        f"conference-worker {scaled['minReplicaCount']}-{scaled['maxReplicaCount']} workers "
        f"(commands topic: {COMMAND_PARTITIONS} partitions), Kafka lag trigger"
        + (" over SASL (TriggerAuthentication conference-kafka)" if sasl else "")
    )
