"""The Kubernetes manifests and the Grafana dashboard, checked offline.

Core kinds are validated strictly against the Kubernetes JSON schemas that ``kubernetes-validate`` ships (no
cluster needed). The ServiceMonitor has no core schema: it is checked for the fields the Prometheus Operator reads
and for agreement with the Service, the Secret and the server's routes. Names the manifests and the dashboard
rely on (env variables, probe paths, metric names) are checked against the server's code, so renaming a metric or
a setting fails here rather than in a cluster.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

from orpo_deploy.serve.app import create_app
from orpo_deploy.serve.config import ENV_PREFIX, ConfigError, ServeConfig
from orpo_deploy.serve.metrics import ServeMetrics
from tests.serve.serve_fakes import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DASHBOARD = ROOT / "deploy" / "grafana" / "orpo-serve-dashboard.json"
# The oldest Kubernetes release the manifests target (autoscaling/v2 and the fields used are GA there).
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
NOT_CORE = {"ServiceMonitor", "Kustomization"}


def load_docs() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in docs, f"{path.name}: a second {doc['kind']}"
            docs[doc["kind"]] = doc
    return docs


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    return load_docs()


def metric_series_names() -> set[str]:
    """Every series name /metrics can expose: the server's own collectors, then the default registry's."""
    names = set()
    for registry in (ServeMetrics().registry, REGISTRY):
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
            # A labelled family has no samples until a first request: name its series from its type.
            if family.type == "histogram":
                names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
            if family.type == "counter":
                names.add(family.name + "_total")
            names.add(family.name)
    return names


def test_kustomization_lists_every_manifest(docs):
    listed = set(docs["Kustomization"]["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_manifests_validate_against_the_kubernetes_schemas(docs, version):
    core = {kind: doc for kind, doc in docs.items() if kind not in NOT_CORE}
    assert set(core) == {"Deployment", "Service", "HorizontalPodAutoscaler", "Secret", "PersistentVolumeClaim"}
    for doc in core.values():
        kubernetes_validate.validate(doc, version, strict=True)  # raises with the path of the bad field


def test_schema_validation_can_fail(docs):
    bad = json.loads(json.dumps(docs["Deployment"]))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_deployment_matches_the_server(docs):
    spec = docs["Deployment"]["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    settings = {f.name for f in fields(ServeConfig)}
    env = {e["name"]: e for e in container["env"]}
    for name in env:
        if name.startswith(ENV_PREFIX):
            assert name[len(ENV_PREFIX) :].lower() in settings, f"{name} is not an orpo-serve setting"
    # The literal values parse as the server would read them (a bad number or boolean raises here).
    config = ServeConfig.from_env({k: e["value"] for k, e in env.items() if k.startswith(ENV_PREFIX) and "value" in e})
    assert config.metrics_auth and config.tensor_parallel_size >= 1 and config.data_parallel_size >= 1
    secret_ref = env["ORPO_SERVE_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert secret_ref["name"] == docs["Secret"]["metadata"]["name"]
    assert secret_ref["key"] in docs["Secret"]["stringData"]
    # Drain (grace) and the preStop pause fit in the termination grace period.
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > config.grace_seconds + 5

    routes = {route.path for route in create_app(ServeConfig(), engine=FakeEngine()).routes}
    port_names = {p["name"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready"), ("startupProbe", "/health")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["path"] in routes and get["port"] in port_names
    assert "/metrics" in routes


def test_service_selects_the_pods(docs):
    service = docs["Service"]["spec"]
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    container_ports = {p["name"] for p in docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["ports"]} <= container_ports


def test_servicemonitor_scrapes_the_service(docs):
    monitor = docs["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= docs["Service"]["metadata"]["labels"].items()
    service_ports = {p["name"] for p in docs["Service"]["spec"]["ports"]}
    secret = docs["Secret"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "authorization", "scheme"}
        assert endpoint["port"] in service_ports and endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"]) and re.fullmatch(r"\d+[smh]", endpoint["scrapeTimeout"])
        auth = endpoint["authorization"]
        assert auth["type"] == "Bearer"
        assert auth["credentials"]["name"] == secret["metadata"]["name"]
        assert auth["credentials"]["key"] in secret["stringData"]
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    metrics_ref = env["ORPO_SERVE_METRICS_KEYS"]["valueFrom"]["secretKeyRef"]
    assert (metrics_ref["name"], metrics_ref["key"]) == (secret["metadata"]["name"], auth["credentials"]["key"])


def test_the_kustomization_ships_no_secret_and_the_example_keys_are_refused():
    """A placeholder Secret in the kustomization would overwrite the real one on every apply."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    kinds = [doc["kind"] for r in kustomization["resources"] for doc in yaml.safe_load_all((K8S / r).read_text())]
    assert "Secret" not in kinds and "secret.example.yaml" not in kustomization["resources"]
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    for value in example.values():
        with pytest.raises(ConfigError, match="placeholder"):
            ServeConfig(api_keys=tuple(value.split(",")))


def test_hpa_scales_the_deployment_on_served_metrics(docs):
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", docs["Deployment"]["metadata"]["name"])
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    names = metric_series_names()
    used = [m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert used and all(name in names for name in used), f"{used} not all in serve/metrics.py"


def test_dashboard_queries_only_metrics_the_server_exposes():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    names = metric_series_names()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = set()
    for expr in exprs:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        # Series names: identifiers followed by a label selector or a range, minus PromQL's functions and labels.
        used.update(re.findall(r"\b([a-z_:][a-z0-9_:]*)\s*(?=\{|\[|,\s*job\))", expr))
    assert used and used <= names, f"unknown metrics in the dashboard: {sorted(used - names)}"
    assert any(name.startswith("orpo_serve_") for name in used)
