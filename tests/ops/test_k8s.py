"""ops/k8s: every overlay renders, every object is valid, and the manifests keep the
promises docs/operations.md ("Kubernetes") makes: a Deployment and a ScaledObject per
pool scaled on its own queue, probes that never ask the broker, a grace period past the
warm-shutdown deadline, secrets only referenced, the alerts of ops/prometheus/alerts.yml.
"""

from __future__ import annotations

import copy
import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from nanobanana_queue.producers.cli.main import app as cli
from nanobanana_queue.workers.app import celery_config
from nanobanana_queue.workers.contract import DECLARED_QUEUES
from nanobanana_queue.workers.probes import DEFAULT_MISSED
from nanobanana_queue.workers.settings import SECRET_FIELDS, load_settings
from tests.ops.compose import services
from tests.ops.k8s import (
    K8S,
    OVERLAYS,
    ROOT,
    containers,
    crd_schemas,
    objects,
    rendered,
    validate,
)
from tests.ops.probes import check_exec_probe

#: KEDA's scaler for each overlay, and the trigger field naming the queue.
SCALER = {"redis": "redis", "redis-sentinel": "redis-sentinel", "rabbitmq": "rabbitmq"}
QUEUE_FIELD = {"redis": "listName", "redis-sentinel": "listName", "rabbitmq": "queueName"}
#: Trigger metadata and auth parameters each scaler reads (KEDA v2.20: pkg/scalers/
#: redis_scaler.go and rabbitmq_scaler.go, their ``keda:"name=..."`` tags).
TRIGGER_FIELDS = {
    "redis": {"address", "addresses", "host", "hosts", "port", "ports", "databaseIndex"}
    | {"listName", "listLength", "activationListLength", "enableTLS", "unsafeSsl"},
    "redis-sentinel": {"address", "addresses", "host", "hosts", "port", "ports"}
    | {"sentinelMaster", "databaseIndex", "listName", "listLength", "activationListLength"}
    | {"enableTLS", "unsafeSsl"},
    "rabbitmq": {"queueName", "mode", "value", "activationValue", "protocol", "vhostName"}
    | {"useRegex", "excludeUnacknowledged", "pageSize", "operation", "timeout", "unsafeSsl"},
}
AUTH_PARAMS = {
    "redis": {"password", "username", "tls", "ca", "cert", "key", "keyPassword"},
    "redis-sentinel": {"password", "username", "sentinelPassword", "sentinelUsername"}
    | {"sentinelMaster", "tls", "ca", "cert", "key", "keyPassword"},
    "rabbitmq": {"host", "username", "password", "vhostName", "protocol", "tls", "ca"}
    | {"cert", "key", "keyPassword"},
}
#: Where the pods read their secrets: a file per key, or an env reference.
SECRET_MOUNT = "/run/secrets/nbq"
SECRET_NAMES = {"nbq-secrets", "nbq-broker", "nbq-flower-prometheus"}
#: Every pool: the three stages and the webhooks (notify), each scaled on its own queue.
WORKERS = {f"nbq-worker-{queue}": queue for queue in DECLARED_QUEUES}
#: The release the manifests deploy (the base's ``images`` tag): the package's version.
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
CLICK = typer.main.get_command(cli)


def deployments(overlay: str) -> dict[str, dict[str, Any]]:
    return objects(overlay, "Deployment")


def _option(args: list[str], name: str) -> str:
    return str(args[args.index(name) + 1])


# --- rendering and schemas --------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_the_overlay_is_valid_against_its_schema(overlay: str) -> None:
    kinds = set()
    for obj in rendered(overlay):
        validate(obj)
        kinds.add(obj["kind"])
    assert {"Deployment", "Service", "ScaledObject", "TriggerAuthentication"} <= kinds
    assert {"PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds


def test_the_schemas_refuse_an_unknown_field_in_each_kind_checked() -> None:
    # Strict, as kubeconform: a misspelt field is an error, not silently dropped
    import kubernetes_validate

    refused = (jsonschema.ValidationError, kubernetes_validate.ValidationError)
    for obj in rendered("redis"):
        broken = copy.deepcopy(obj)
        broken.get("spec", broken)["notAField"] = 1
        with pytest.raises(refused):
            validate(broken)


def test_the_vendored_crd_schemas_are_the_four_kinds_used() -> None:
    assert set(crd_schemas()) == {
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_lands_in_the_overlays_namespace(overlay: str) -> None:
    assert {o["metadata"].get("namespace") for o in rendered(overlay)} == {"nbq"}


# --- pools and autoscaling ----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_deployment_per_pool_runs_what_compose_runs(overlay: str) -> None:
    found = deployments(overlay)
    for name, queue in WORKERS.items():
        (container,) = containers(found[name])
        args = container["args"]
        assert args[0] == "worker" and _option(args, "--queues") == queue
        assert _option(args, "--hostname") == f"{queue}@%h"  # the alerts group by pool
        compose_args = services()[f"worker-{queue}"]["command"]
        for option in ("--pool", "--concurrency"):
            assert _option(args, option) == _option(compose_args, option), (name, option)
        assert "replicas" not in found[name]["spec"], "KEDA's HPA owns the replica count"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_scaled_object_per_pool_scales_it_on_its_own_queue(overlay: str) -> None:
    scaled = objects(overlay, "ScaledObject")
    auths = objects(overlay, "TriggerAuthentication")
    targets = {}
    for obj in scaled.values():
        spec = obj["spec"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == SCALER[overlay]
        metadata = trigger["metadata"]
        assert set(metadata) <= TRIGGER_FIELDS[overlay], set(metadata) - TRIGGER_FIELDS[overlay]
        auth = auths[trigger["authenticationRef"]["name"]]
        params = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
        assert params <= AUTH_PARAMS[overlay]
        assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} <= SECRET_NAMES
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        targets[spec["scaleTargetRef"]["name"]] = metadata[QUEUE_FIELD[overlay]]
    # Then every pool, and only the pools, is scaled on its own queue
    assert targets == WORKERS
    assert set(targets) <= set(deployments(overlay))


def test_rabbitmq_scales_on_ready_messages_over_amqp() -> None:
    # Countdowns wait in the celery_delayed_* queues, not in the pool's queue: the queue
    # length is the real backlog (docs/operations.md, "Kubernetes")
    for obj in objects("rabbitmq", "ScaledObject").values():
        metadata = obj["spec"]["triggers"][0]["metadata"]
        assert metadata["protocol"] == "amqp" and metadata["mode"] == "QueueLength"


def test_the_sentinel_overlay_names_the_master_the_processes_use() -> None:
    config = next(iter(objects("redis-sentinel", "ConfigMap").values()))["data"]
    for obj in objects("redis-sentinel", "ScaledObject").values():
        metadata = obj["spec"]["triggers"][0]["metadata"]
        assert metadata["sentinelMaster"] == config["NBQ_REDIS_SENTINEL_MASTER"]


# --- probes and shutdown --------------------------------------------------------------


def _probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    kinds = ("startupProbe", "livenessProbe", "readinessProbe")
    return {kind: container[kind] for kind in kinds if kind in container}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_probe_runs_in_the_image_and_never_asks_the_broker(overlay: str) -> None:
    for name, deployment in deployments(overlay).items():
        for container in containers(deployment):
            probes = _probes(container)
            assert "livenessProbe" in probes, name
            for kind, probe in probes.items():
                if "exec" in probe:
                    check_exec_probe(probe["exec"]["command"], f"{name} {kind}")
                elif "httpGet" in probe:
                    assert probe["httpGet"]["path"] in ("/healthz", "/readyz", "/healthcheck")
                else:
                    assert "tcpSocket" in probe, f"{name} {kind}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_are_live_on_their_heartbeat_and_ready_while_consuming(overlay: str) -> None:
    for name in WORKERS:
        (container,) = containers(deployments(overlay)[name])
        probes = _probes(container)
        assert probes["livenessProbe"]["exec"]["command"][-1] == "live"
        assert probes["startupProbe"]["exec"]["command"][-1] == "live"
        assert probes["readinessProbe"]["exec"]["command"][-1] == "ready"
    reconciler = containers(deployments(overlay)["nbq-reconciler"])[0]
    assert reconciler["livenessProbe"]["exec"]["command"][-2:] == ["--name", "reconcile"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_outlasts_the_warm_shutdown_deadline(overlay: str) -> None:
    # The bounded warm shutdown (workers/shutdown.py) ends a worker this long after SIGTERM
    deadline_s = celery_config(load_settings())["worker_soft_shutdown_timeout"]
    for name in WORKERS:
        grace_s = deployments(overlay)[name]["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
        assert grace_s >= deadline_s + 10, name  # + room to close pools and connections


def test_liveness_outlasts_a_warm_shutdown_and_tolerates_missed_beats() -> None:
    interval_s = float(
        next(iter(objects("redis", "ConfigMap").values()))["data"]["NBQ_HEALTH_INTERVAL_S"]
    )
    for name in WORKERS:
        spec = deployments("redis")[name]["spec"]["template"]["spec"]
        live = spec["containers"][0]["livenessProbe"]
        # The probe's own window (missed beats) plus the kubelet's failures
        window_s = DEFAULT_MISSED * interval_s + live["periodSeconds"] * live["failureThreshold"]
        assert window_s > spec["terminationGracePeriodSeconds"]


def _selected(overlay: str, key: str, value: str) -> set[tuple[str, str]]:
    return {
        (o["kind"], o["metadata"]["name"])
        for o in rendered(overlay)
        if o["metadata"].get("labels", {}).get(key) == value
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_upgrade_steps_select_the_config_then_one_pool_at_a_time(overlay: str) -> None:
    # docs/operations.md, "Upgrade with no job lost": `kubectl apply -k ... -l <selector>`
    (config,) = objects(overlay, "ConfigMap")
    assert _selected(overlay, "app.kubernetes.io/component", "config") == {("ConfigMap", config)}
    for name in WORKERS:
        assert _selected(overlay, "app.kubernetes.io/name", name) == {("Deployment", name)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_args_parse_with_the_real_cli(overlay: str) -> None:
    for name, deployment in deployments(overlay).items():
        args = containers(deployment)[0]["args"]
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, (name, result.output)
        with CLICK.commands[args[0]].make_context(f"nbq {args[0]}", list(args[1:])):  # type: ignore[attr-defined]
            pass


# --- security and resources --------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_non_root_on_a_read_only_root_with_resources(overlay: str) -> None:
    for name, deployment in deployments(overlay).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["shareProcessNamespace"] is True, name  # SIGTERM is not lost on a PID 1
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name
            assert container["image"] == f"nanobanana-queue:{PROJECT_VERSION}", name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_inlined(overlay: str) -> None:
    assert objects(overlay, "Secret") == {}
    secret_env = {f"NBQ_{field.upper()}" for field in SECRET_FIELDS} | {"NBQ_BROKER_URL"}
    for name, deployment in deployments(overlay).items():
        pod = deployment["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in SECRET_NAMES
        for var in containers(deployment)[0].get("env", []):
            if var["name"] in secret_env:
                ref = var["valueFrom"]["secretKeyRef"]  # never a literal value
                assert ref["name"] in SECRET_NAMES, (name, var["name"])
            elif var["name"].endswith("_FILE"):
                assert var["value"].startswith(f"{SECRET_MOUNT}/"), (name, var["name"])
    for config in objects(overlay, "ConfigMap").values():
        assert not set(config["data"]) & secret_env


def _environment(overlay: str, deployment: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """The container's environment with placeholder secrets (files under ``tmp_path``)."""
    (config,) = objects(overlay, "ConfigMap").values()
    env = dict(config["data"])
    broker = {
        "redis": "redis://:pw@redis.nbq.svc.cluster.local:6379/0",
        "redis-sentinel": "sentinel://redis-sentinel.nbq.svc.cluster.local:26379/0",
        "rabbitmq": "amqp://nbq:pw@rabbitmq.nbq.svc.cluster.local:5672/nbq",
    }[overlay]
    for var in containers(deployment)[0].get("env", []):
        if "value" in var:
            value = var["value"]
            if value.startswith(f"{SECRET_MOUNT}/"):
                path = tmp_path / value.rsplit("/", 1)[1]
                path.write_text("user:placeholder-secret", encoding="utf-8")
                value = str(path)
            env[var["name"]] = value
        elif not var["valueFrom"]["secretKeyRef"].get("optional"):
            env[var["name"]] = broker
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_environment_is_valid_settings_for_its_role(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for name, deployment in deployments(overlay).items():
        for key in list(os.environ):
            if key.startswith("NBQ_"):
                monkeypatch.delenv(key)
        for key, value in _environment(overlay, deployment, tmp_path).items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        role = containers(deployment)[0]["args"]
        if role[0] == "worker" and _option(role, "--queues") in ("submit", "poll"):
            settings.require("evolink_api_key")
        if role[0] in ("worker", "reconcile"):
            settings.require("s3_access_key", "s3_secret_key")
        if role[0] == "reconcile":
            settings.require("evolink_api_key")
        if role[0] == "flower":
            settings.require("flower_basic_auth")
        if role[0] == "serve":
            settings.require("ingress_tokens", "s3_access_key")
        if role[0] == "worker":  # nbq-reconciler does it, once, whatever the pools' size
            assert settings.reconcile_in_worker is False, name


# --- disruption budgets, monitoring ----------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pool_and_the_ingress_have_a_disruption_budget(overlay: str) -> None:
    budgets = objects(overlay, "PodDisruptionBudget").values()
    covered = set()
    for name, deployment in deployments(overlay).items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for budget in budgets:
            selector = budget["spec"]["selector"]["matchLabels"]
            if selector.items() <= labels.items():
                covered.add(name)
    assert {*WORKERS, "nbq-ingress"} <= covered


def test_service_monitors_scrape_the_exporter_and_flower_as_the_alerts_name_them() -> None:
    monitors = objects("redis", "ServiceMonitor")
    svcs = objects("redis", "Service")
    jobs = {}
    for monitor in monitors.values():
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [
            s for s in svcs.values() if selector.items() <= s["metadata"]["labels"].items()
        ]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        (relabel,) = endpoint["relabelings"]
        jobs[service["metadata"]["name"]] = relabel["replacement"]
    assert jobs == {"nbq-metrics": "nbq", "nbq-flower": "flower"}
    alerts = (ROOT / "ops" / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    assert 'up{job="nbq"}' in alerts and 'up{job="flower"}' in alerts


def test_the_prometheus_rule_is_alerts_yml() -> None:
    (rule,) = objects("redis", "PrometheusRule").values()
    alerts = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text("utf-8"))
    assert rule["spec"]["groups"] == alerts["groups"]


def test_the_prometheus_rule_file_matches_its_generator() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_k8s_rules", ROOT / "ops" / "scripts" / "build_k8s_rules.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = K8S / "base" / "prometheusrule.yaml"
    assert path.read_text(encoding="utf-8") == module.render(), (
        "run python ops/scripts/build_k8s_rules.py"
    )
