"""Offline checks of terraform/: it parses, it is formatted, and it is in step with the code.

Terraform cannot download providers on this machine, so ``terraform validate`` cannot run;
these tests read the configuration with python-hcl2 and compare it with what the package
and the functions really use (names.py, triggers.py, settings.py, the Pub/Sub adapter).
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from prometheus_trader.adapters.gcp import pubsub_bus
from prometheus_trader.adapters.gcp.envelopes import subscription_id
from prometheus_trader.app import triggers, worker
from prometheus_trader.app.settings import Settings
from prometheus_trader.usecases.names import Subscriptions, Topics
from tests.infra.terraform_model import (
    FUNCTIONS_DIR,
    REPO,
    TERRAFORM_DIR,
    TerraformModel,
    block,
    function_dirs,
    parse_file,
    tf_files,
)

pytestmark = pytest.mark.infra

CONCERN_FILES = {
    "apis.tf",
    "firestore.tf",
    "functions.tf",
    "iam.tf",
    "monitoring.tf",
    "outputs.tf",
    "pubsub.tf",
    "run.tf",
    "scheduler.tf",
    "secrets.tf",
    "storage.tf",
    "variables.tf",
    "versions.tf",
}


@pytest.fixture(scope="module")
def tf() -> TerraformModel:
    return TerraformModel.load()


def _names_in(cls: type) -> dict[str, str]:
    """The string constants of a names.py class (Topics, Subscriptions)."""
    return {k: v for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, str)}


def _string_list(expression: str) -> list[str]:
    """The quoted strings inside an expression such as ``${toset(["a", "b"])}``."""
    return re.findall(r'"([^"]*)"', expression)


def _minute_interval(cron: str) -> int | None:
    """Minutes between runs of an every-N-minutes cron (None for any other shape)."""
    fields = cron.split()
    if len(fields) != 5 or fields[1:] != ["*", "*", "*", "*"]:
        return None
    if fields[0] == "*":
        return 1
    match = re.fullmatch(r"\*/([0-9]+)", fields[0])
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- syntax


def test_terraform_is_split_by_concern() -> None:
    names = {p.name for p in tf_files()}
    assert names >= CONCERN_FILES, f"missing: {sorted(CONCERN_FILES - names)}"


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: p.name)
def test_every_tf_file_parses(path: Path) -> None:
    parsed = parse_file(path)
    assert parsed, f"{path.name} parsed to nothing"


def test_terraform_fmt_check() -> None:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("no terraform binary on PATH: `terraform fmt -check` not run")
    done = subprocess.run(
        [binary, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"terraform fmt -check failed:\n{done.stdout}{done.stderr}"


# ------------------------------------------------------------------------ functions


def test_every_function_entry_point_has_a_function_resource(tf: TerraformModel) -> None:
    on_disk = function_dirs()
    assert on_disk, f"no functions/*/main.py under {FUNCTIONS_DIR}"
    declared = sorted(tf.locals["functions"])
    assert declared == on_disk, "terraform functions and functions/*/main.py differ"
    fn = tf.resource("google_cloudfunctions2_function", "fn")
    assert fn["for_each"] == "${local.functions}"


def test_function_entry_points_exist_in_main_py(tf: TerraformModel) -> None:
    fn = tf.resource("google_cloudfunctions2_function", "fn")
    assert block(fn, "build_config")["entry_point"] == "${each.key}"
    for name in tf.locals["functions"]:
        tree = ast.parse((FUNCTIONS_DIR / name / "main.py").read_text(encoding="utf-8"))
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert name in defined, f"functions/{name}/main.py defines no `def {name}`"


def test_functions_have_no_eventarc_trigger(tf: TerraformModel) -> None:
    for name, body in tf.of_type("google_cloudfunctions2_function").items():
        assert "event_trigger" not in body, f"{name}: use our push subscriptions instead"


def test_function_triggers_match_spec_and_code(tf: TerraformModel) -> None:
    functions = tf.locals["functions"]
    pushed = {n: f["topic"] for n, f in functions.items() if f["trigger"] == "pubsub"}
    assert pushed == dict(triggers.TOPIC_OF), "push wiring differs from triggers.TOPIC_OF"
    scheduled = {n for n, f in functions.items() if f["trigger"] == "schedule"}
    assert scheduled == {"collector", "ranker", "reporter", "housekeeping"}
    assert functions["api"]["trigger"] == "http"
    # ordering key = user id on executions (SPEC §5)
    assert functions["executor"]["ordered"] is True


def test_function_sources_are_content_hashed_staged_zips(tf: TerraformModel) -> None:
    archive = tf.data["archive_file"]["function"]
    assert archive["type"] == "zip"
    assert archive["source_dir"] == "${var.build_dir}/${each.key}"
    build_dir = (TERRAFORM_DIR / tf.default("build_dir")).resolve()
    assert build_dir == REPO / "build", "build_dir must point at `make stage`'s output"
    assert tf.locals["staged_manifest_file"] == "${var.build_dir}/manifest.json"
    digest = tf.locals["bundle_digest"]
    assert "local.staged_manifest[name]" in digest
    assert "data.archive_file.function[name].output_sha256" in digest

    obj = tf.resource("google_storage_bucket_object", "function_source")
    assert "${local.bundle_digest[each.key]}" in obj["name"]
    assert obj["source"] == "${data.archive_file.function[each.key].output_path}"
    source = block(
        tf.resource("google_cloudfunctions2_function", "fn"),
        "build_config",
        "source",
        "storage_source",
    )
    assert source["object"] == "${google_storage_bucket_object.function_source[each.key].name}"
    stage = (REPO / "scripts" / "stage.py").read_text(encoding="utf-8")
    assert "manifest.json" in stage, "make stage no longer writes build/manifest.json"


def test_function_environment_names_real_settings(tf: TerraformModel) -> None:
    env = tf.locals["common_env"]
    keys = re.findall(r"\bPROMETHEUS_([A-Z_]+)\s*=", env)
    assert keys, "no PROMETHEUS_* settings in common_env"
    unknown = sorted(k for k in keys if k.lower() not in Settings.model_fields)
    assert not unknown, f"not Settings fields: {unknown}"
    assert 'PROMETHEUS_BACKEND = "gcp"' in env
    assert "PROMETHEUS_SECRET_PREFIX = var.user_secret_prefix" in env
    assert "PROMETHEUS_MARKET_PREFIX = local.market_prefix" in env
    assert tf.locals["market_prefix"] == Settings.model_fields["market_prefix"].default


# --------------------------------------------------------------------------- Pub/Sub


def test_every_topic_exists_with_dead_letter_and_keep_subscription(tf: TerraformModel) -> None:
    topics = set(_string_list(tf.locals["topics"]))
    assert set(_names_in(Topics).values()) <= topics, "a names.Topics topic is not declared"

    suffix = inspect.signature(pubsub_bus.PubSubBus).parameters["dead_letter_suffix"].default
    assert tf.resource("google_pubsub_topic", "topic")["for_each"] == "${local.topics}"
    dead = tf.resource("google_pubsub_topic", "dead_letter")
    assert dead["for_each"] == "${local.topics}"
    assert dead["name"] == "${each.key}" + suffix
    keep = tf.resource("google_pubsub_subscription", "dead_letter_keep")
    assert keep["for_each"] == "${local.topics}"
    assert keep["name"] == "${each.key}" + suffix + pubsub_bus.KEEP_SUFFIX
    assert keep["topic"] == "${google_pubsub_topic.dead_letter[each.key].id}"
    assert block(keep, "expiration_policy")["ttl"] == "", "dead letters must not expire away"


def test_every_subscription_is_our_push_subscription(tf: TerraformModel) -> None:
    functions = tf.locals["functions"]
    push = tf.resource("google_pubsub_subscription", "push")
    assert push["for_each"] == "${local.push_functions}"
    assert 'f.trigger == "pubsub"' in tf.locals["push_functions"]
    for sub in _names_in(Subscriptions).values():
        spec = functions[sub]
        assert spec["trigger"] == "pubsub" and spec["subscription"] == sub
        rendered = (
            push["name"]
            .replace("${each.value.topic}", spec["topic"])
            .replace("${each.value.subscription}", sub)
        )
        assert rendered == subscription_id(spec["topic"], sub), "adapter cannot parse the id"

    config = block(push, "push_config")
    assert config["push_endpoint"] == (
        "${google_cloudfunctions2_function.fn[each.key].service_config[0].uri}"
    )
    oidc = block(push, "push_config", "oidc_token")
    assert oidc["service_account_email"] == "${google_service_account.push.email}"
    assert oidc["audience"] == config["push_endpoint"]
    assert "ack_deadline_seconds" in push
    assert push["enable_message_ordering"] == "${each.value.ordered}"
    retry = block(push, "retry_policy")
    assert retry["minimum_backoff"] and retry["maximum_backoff"]
    dead = block(push, "dead_letter_policy")
    assert dead["dead_letter_topic"] == "${google_pubsub_topic.dead_letter[each.value.topic].id}"
    attempts = tf.resolve(dead["max_delivery_attempts"])
    assert attempts == Settings.model_fields["max_delivery_attempts"].default


def test_pubsub_service_agent_can_dead_letter(tf: TerraformModel) -> None:
    publisher = tf.resource("google_pubsub_topic_iam_member", "dead_letter_publisher")
    assert publisher["for_each"] == "${google_pubsub_topic.dead_letter}"
    assert publisher["role"] == "roles/pubsub.publisher"
    assert publisher["member"] == "${local.pubsub_service_agent}"
    subscriber = tf.resource("google_pubsub_subscription_iam_member", "dead_letter_subscriber")
    assert subscriber["for_each"] == "${google_pubsub_subscription.push}"
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in tf.locals["pubsub_service_agent"]


def test_publishers_cover_the_topics_the_code_publishes_to(tf: TerraformModel) -> None:
    publishers = tf.locals["topic_publishers"]
    assert set(publishers) == set(_names_in(Topics).values())
    for topic, ids in publishers.items():
        assert ids, f"nobody may publish to {topic}"
    # SPEC §1: ranker -> signals, dispatcher -> executions, executor/worker -> events
    assert "ranker" in publishers[Topics.SIGNALS]
    assert "dispatcher" in publishers[Topics.EXECUTIONS]
    assert {"executor", "worker", "reporter"} <= set(publishers[Topics.EVENTS])


# ------------------------------------------------------------------------- scheduler


def test_scheduler_cadences_match_spec(tf: TerraformModel) -> None:
    functions = tf.locals["functions"]
    schedule = {n: tf.resolve(f["schedule"]) for n, f in functions.items() if f["schedule"]}
    assert schedule["collector"] == "* * * * *"
    assert schedule["reporter"] == "0 0 * * *"
    ranker_every = _minute_interval(schedule["ranker"])
    assert ranker_every is not None and 1 <= ranker_every <= 5
    assert functions["ranker"]["schedule"] == "${var.ranker_schedule}", "ranker: a variable"
    assert _minute_interval(schedule["housekeeping"]) is not None
    # the variable's validation admits only 1..5 minutes
    allowed = _string_list(block(tf.variables["ranker_schedule"], "validation")["condition"])
    intervals = [_minute_interval(c) for c in allowed]
    assert allowed and all(i is not None and 1 <= i <= 5 for i in intervals)


def test_scheduler_jobs_use_oidc_in_utc(tf: TerraformModel) -> None:
    job = tf.resource("google_cloud_scheduler_job", "fn")
    assert job["for_each"] == "${local.scheduled_functions}"
    assert 'f.trigger == "schedule"' in tf.locals["scheduled_functions"]
    assert job["time_zone"] == "UTC"
    assert job["schedule"] == "${each.value.schedule}"
    target = block(job, "http_target")
    assert target["uri"] == "${google_cloudfunctions2_function.fn[each.key].service_config[0].uri}"
    oidc = block(job, "http_target", "oidc_token")
    assert oidc["service_account_email"] == "${google_service_account.scheduler.email}"
    assert oidc["audience"] == target["uri"]


def test_invokers_hold_run_invoker_on_the_cloud_run_services(tf: TerraformModel) -> None:
    members = tf.of_type("google_cloud_run_v2_service_iam_member")
    expected = {
        "scheduler_invoker": ("${local.scheduled_functions}", "scheduler"),
        "push_invoker": ("${local.push_functions}", "push"),
    }
    for name, (for_each, identity) in expected.items():
        grant = members[name]
        assert grant["for_each"] == for_each
        assert grant["role"] == "roles/run.invoker"
        assert grant["name"] == "${google_cloudfunctions2_function.fn[each.key].name}"
        assert grant["member"] == f"${{google_service_account.{identity}.member}}"
    for rtype, resources in tf.resources.items():
        if rtype.startswith("google_cloudfunctions2_function_iam"):
            for body in resources.values():
                assert body.get("role") != "roles/run.invoker", "cloudfunctions2 IAM rejects it"


# ---------------------------------------------------------------------------- worker


def test_worker_is_always_on_with_health_checks(tf: TerraformModel) -> None:
    worker = tf.resource("google_cloud_run_v2_service", "worker")
    template = block(worker, "template")
    assert block(template, "scaling")["min_instance_count"] == 1
    container = block(template, "containers")
    assert block(container, "resources")["cpu_idle"] is False
    health = tf.default("worker_health_path")
    worker_src = (REPO / "shared/prometheus_trader/app/worker.py").read_text(encoding="utf-8")
    assert f'"{health}"' in worker_src, "the worker does not serve the probed path"
    port = block(container, "ports")["container_port"]
    assert port == Settings.model_fields["worker_port"].default
    for probe in ("startup_probe", "liveness_probe"):
        http = block(container, probe, "http_get")
        assert http["path"] == "${var.worker_health_path}" and http["port"] == port
    assert template["service_account"] == '${google_service_account.runtime["worker"].email}'


# ----------------------------------------------------------------- service accounts


def _all_roles(tf: TerraformModel) -> list[str]:
    text = "\n".join(tf.files.values())
    return re.findall(r"roles/[A-Za-z0-9_.]+", text)


def test_one_service_account_per_function_and_worker(tf: TerraformModel) -> None:
    runtime = tf.resource("google_service_account", "runtime")
    assert runtime["for_each"] == "${toset(local.runtime_identities)}"
    assert tf.locals["runtime_identities"] == '${concat(keys(local.functions), ["worker"])}'
    service = block(tf.resource("google_cloudfunctions2_function", "fn"), "service_config")
    assert service["service_account_email"] == "${google_service_account.runtime[each.key].email}"


def test_no_service_account_holds_a_basic_role(tf: TerraformModel) -> None:
    roles = _all_roles(tf)
    assert roles, "no roles found: the scan is broken"
    basic = sorted({r for r in roles if r in ("roles/owner", "roles/editor", "roles/viewer")})
    assert not basic, f"basic roles granted: {basic}"
    for rtype in ("google_project_iam_binding", "google_project_iam_policy"):
        assert rtype not in tf.resources, f"{rtype} is authoritative: use *_iam_member"


def test_project_level_grants_are_minimal(tf: TerraformModel) -> None:
    # Firestore has no finer scope; builder needs logs + image push; the rest is conditioned.
    unconditioned_ok: set[str] = {
        "roles/datastore.user",
        "roles/logging.logWriter",
        "roles/artifactregistry.writer",
    }
    # creating a secret is checked on the project; a role holding only that may go there
    creator = tf.resource("google_project_iam_custom_role", "user_secret_creator")
    assert creator["permissions"] == ["secretmanager.secrets.create"]
    unconditioned_ok.add("${google_project_iam_custom_role.user_secret_creator.name}")
    for name, body in tf.of_type("google_project_iam_member").items():
        role = body["role"]
        roles = set(_string_list(body["for_each"])) if role == "${each.key}" else {role}
        if "condition" in body:
            assert "resource.name.startsWith" in block(body, "condition")["expression"]
        else:
            assert roles <= unconditioned_ok, f"{name}: unconditioned project grant {roles}"


# ---------------------------------------------------------------------------- secrets

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS key id": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "SendGrid key": re.compile(r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b"),
    "Telegram token": re.compile(r"\b[0-9]{8,10}:[A-Za-z0-9_\-]{35}\b"),
    "secret payload": re.compile(r"\b(secret_data|secret_data_wo|payload)\s*="),
    # an attribute named like a credential, set to a literal without spaces
    "literal credential": re.compile(
        r"(?<![\w-])(password|passwd|api_key|api_secret|secret|token|private_key)"
        r"\s*=\s*\"[^\"$\s]+\"",
        re.IGNORECASE,
    ),
    # 32+ opaque characters with a digit and an upper-case letter (base64), or hex
    "long opaque literal": re.compile(
        r"\"(?:(?=[A-Za-z0-9+/_=\-]*[0-9])(?=[A-Za-z0-9+/_=\-]*[A-Z])[A-Za-z0-9+/_=\-]{32,}"
        r"|[0-9a-f]{32,})\""
    ),
}


def find_secret_values(text: str) -> list[str]:
    """Names of the secret-looking patterns found in ``text``."""
    return sorted(name for name, pattern in SECRET_PATTERNS.items() if pattern.search(text))


@pytest.mark.parametrize(
    ("planted", "kind"),
    [
        ('  secret_data = "hunter2"', "secret payload"),
        ('  api_key = "abc"', "literal credential"),
        ('  token = "x1y2"', "literal credential"),
        ('  x = "' + "3f9a" * 8 + '"', "long opaque literal"),
        ('  x = "' + "AKIA" + "ABCDEFGHIJKLMNOP" + '"', "AWS key id"),
        ('  x = "-----BEGIN RSA ' + 'PRIVATE KEY-----"', "private key"),
        ('  x = "' + "q8Zt2mX9vL4kP7wR1nB6yC3hF5jD0sA2" + '"', "long opaque literal"),
    ],
)
def test_secret_scanner_finds_planted_values(planted: str, kind: str) -> None:
    assert kind in find_secret_values(planted)


@pytest.mark.parametrize(
    "harmless",
    [
        'resource "google_cloud_run_v2_service_iam_member" "x" {',
        '  telegram-bot-token = "Telegram bot token (optional notifications)."',
        "  secret_id = google_secret_manager_secret.static[each.value.secret].secret_id",
    ],
)
def test_secret_scanner_ignores_ordinary_terraform(harmless: str) -> None:
    assert find_secret_values(harmless) == []


def test_no_secret_value_in_any_tf_file(tf: TerraformModel) -> None:
    found = {name: find_secret_values(text) for name, text in tf.files.items()}
    assert not {k: v for k, v in found.items() if v}
    assert "google_secret_manager_secret_version" not in tf.resources


def test_secrets_have_per_secret_iam(tf: TerraformModel) -> None:
    static = tf.resource("google_secret_manager_secret", "static")
    assert static["for_each"] == "${local.static_secrets}"
    assert set(tf.locals["secret_readers"]) == set(tf.locals["static_secrets"])
    reader = tf.resource("google_secret_manager_secret_iam_member", "reader")
    assert reader["for_each"] == "${local.secret_reader_grants}"
    assert reader["role"] == "roles/secretmanager.secretAccessor"
    assert reader["secret_id"] == (
        "${google_secret_manager_secret.static[each.value.secret].secret_id}"
    )
    # per-user keys: readable by the executor and the worker only, by name prefix
    assert sorted(tf.locals["user_secret_readers"]) == ["executor", "worker"]
    prefix = tf.locals["user_secret_name_prefix"]
    assert prefix.endswith("/secrets/${var.user_secret_prefix}")
    user_reader = tf.resource("google_project_iam_member", "user_secret_reader")
    expression = block(user_reader, "condition")["expression"]
    assert "${local.exchange_key_name_prefix}" in expression
    assert tf.locals["exchange_key_name_prefix"].startswith("${local.user_secret_name_prefix}")


# ---------------------------------------------------------------------------- storage


def _lifecycle_rules(body: dict[str, Any]) -> list[Any]:
    rules: list[Any] = list(body.get("lifecycle_rule", []))
    rules += [d["lifecycle_rule"] for d in body.get("dynamic", []) if "lifecycle_rule" in d]
    return rules


def test_buckets_are_private_uniform_and_have_lifecycle_rules(tf: TerraformModel) -> None:
    buckets = tf.of_type("google_storage_bucket")
    assert {"data", "sources", "access_logs"} <= set(buckets)
    for name, body in buckets.items():
        assert body["uniform_bucket_level_access"] is True, name
        assert body["public_access_prevention"] == "enforced", name
        assert _lifecycle_rules(body), f"{name}: no lifecycle rule"


def test_market_and_report_lifecycles(tf: TerraformModel) -> None:
    market = tf.locals["buckets"]["market"]["rules"]
    actions = {(r["action"], r["storage_class"]) for r in market}
    assert {("SetStorageClass", "NEARLINE"), ("SetStorageClass", "COLDLINE")} <= actions
    assert any(
        r["action"] == "Delete" and r["age"] == "${var.market_retention_days}" for r in market
    )
    assert tf.default("market_retention_days") >= 365, "bars are kept at least a year"
    blobs = tf.locals["buckets"]["blobs"]["rules"]
    prefixes = {p for r in blobs for p in r["prefixes"]}
    assert {"reports/", "audit/"} <= prefixes
    usecases = REPO / "shared/prometheus_trader/usecases"
    assert 'f"reports/' in (usecases / "report.py").read_text(encoding="utf-8")
    assert 'f"audit/' in (usecases / "audit.py").read_text(encoding="utf-8")


# -------------------------------------------------------------------------- firestore


def test_firestore_indexes_come_from_the_infra_file(tf: TerraformModel) -> None:
    path = REPO / "infra" / "firestore.indexes.json"
    assert tf.locals["firestore_indexes_file"] == "${path.module}/../infra/firestore.indexes.json"
    index = tf.resource("google_firestore_index", "composite")
    assert index["for_each"] == "${local.firestore_indexes}"
    assert index["database"] == "${google_firestore_database.main.name}"
    assert path.is_file(), "infra/firestore.indexes.json is missing"
    doc = json.loads(path.read_text(encoding="utf-8"))
    keys = []
    for entry in doc.get("indexes", []):
        fields = entry["fields"]
        assert entry["collectionGroup"] and fields
        assert all("fieldPath" in f and ("order" in f or "arrayConfig" in f) for f in fields)
        parts = [f"{f['fieldPath']}:{f.get('order', f.get('arrayConfig', ''))}" for f in fields]
        scope = entry.get("queryScope", "COLLECTION")
        keys.append("/".join([entry["collectionGroup"], scope, *parts]))
    assert len(keys) == len(set(keys)), "two indexes share a for_each key"


# ------------------------------------------------------------------------- monitoring


def test_error_log_metric_and_alert(tf: TerraformModel) -> None:
    metric = tf.resource("google_logging_metric", "errors")
    assert "severity>=ERROR" in metric["filter"]
    assert "cloud_run_revision" in metric["filter"]
    policy = tf.resource("google_monitoring_alert_policy", "errors")
    condition = block(policy, "conditions", "condition_threshold")
    assert "${google_logging_metric.errors.name}" in condition["filter"]


def test_stale_heartbeat_alert(tf: TerraformModel) -> None:
    metric = tf.resource("google_logging_metric", "worker_heartbeat")
    assert "${var.heartbeat_log_message}" in metric["filter"]
    assert "${var.name_prefix}-worker" in metric["filter"]
    policy = tf.resource("google_monitoring_alert_policy", "worker_heartbeat_stale")
    absent = block(policy, "conditions", "condition_absent")
    assert "${google_logging_metric.worker_heartbeat.name}" in absent["filter"]
    assert absent["duration"] == "${var.heartbeat_stale_seconds}s"
    # the worker logs exactly this message, more often than the alert's window
    assert tf.default("heartbeat_log_message") == worker.HEARTBEAT_MESSAGE
    assert tf.default("heartbeat_stale_seconds") > worker.HEARTBEAT_LOG_SECONDS
