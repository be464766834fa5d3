"""Monthly cost estimate of a Prometheus deployment, per resource, for two workloads.

    python scripts/cost.py [--terraform-dir terraform] [--json var/cost.json]

Sizes, cadences and retention come from the Terraform configuration (variable defaults
and the function table in functions.tf, read with python-hcl2), so the estimate follows
the settings. Workload figures that Terraform does not know (how long a collector run
takes, how many API calls a user makes) are the assumptions below: replace them with
measured values when you have them.

Scenarios: (a) one user, idle market (no signal published); (b) 100 users, 20 signals a day.

Prices: Google Cloud list prices in USD for a tier-1 region (us-central1 / europe-west1),
as published on the pricing pages in January 2025, written down from memory: they could
NOT be checked online from the machine this was written on. Check them before relying on
the numbers (https://cloud.google.com/pricing). Free tiers are per billing account and
shown as one credit line; network egress and taxes are left out.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

REPO = Path(__file__).resolve().parent.parent
SECONDS_PER_MONTH = 30 * 24 * 3600  # a 30-day month
MINUTES_PER_MONTH = SECONDS_PER_MONTH // 60
DAYS_PER_MONTH = 30
GIB = 1024**3

PRICES_AS_OF = "2025-01"
PRICES_VERIFIED = False
PRICES: dict[str, float] = {
    # Cloud Run / Cloud Functions gen2, request-based billing (tier 1)
    "run_request_vcpu_second": 0.000024,
    "run_request_gib_second": 0.0000025,
    "run_requests_per_million": 0.40,
    # Cloud Run, instance-based billing (CPU always allocated: the worker)
    "run_instance_vcpu_second": 0.000018,
    "run_instance_gib_second": 0.000002,
    # Cloud Scheduler
    "scheduler_job_month": 0.10,
    # Pub/Sub: throughput (publish + delivery), at least 1 KB per message
    "pubsub_per_tib": 40.0,
    # Firestore native, regional location
    "firestore_reads_per_100k": 0.03,
    "firestore_writes_per_100k": 0.09,
    "firestore_deletes_per_100k": 0.01,
    "firestore_gib_month": 0.15,
    # Cloud Storage, regional
    "gcs_standard_gib_month": 0.020,
    "gcs_nearline_gib_month": 0.010,
    "gcs_coldline_gib_month": 0.004,
    "gcs_class_a_per_1000": 0.005,
    "gcs_class_b_per_1000": 0.0004,
    # Secret Manager
    "secret_version_month": 0.06,
    "secret_access_per_10k": 0.03,
    # Cloud Logging ingestion, Cloud Monitoring alert conditions
    "logging_per_gib": 0.50,
    "alert_condition_month": 0.10,
    # Artifact Registry storage, Cloud Build (e2-standard-2 build minutes)
    "artifact_registry_gib_month": 0.10,
    "cloud_build_minute": 0.006,
}
FREE_TIER: dict[str, float] = {
    "run_request_vcpu_seconds": 180_000,
    "run_request_gib_seconds": 360_000,
    "run_requests": 2_000_000,
    "run_instance_vcpu_seconds": 240_000,
    "run_instance_gib_seconds": 450_000,
    "scheduler_jobs": 3,
    "pubsub_gib": 10,
    "firestore_reads_per_day": 50_000,
    "firestore_writes_per_day": 20_000,
    "firestore_gib": 1,
    "secret_versions": 6,
    "secret_accesses": 10_000,
    "logging_gib": 50,
    "artifact_registry_gib": 0.5,
    "cloud_build_minutes": 2_500,
}

# Workload assumptions (seconds are wall time of one invocation).
ASSUMPTIONS: dict[str, float] = {
    "collector_seconds": 20.0,  # tickers + 1m OHLCV + OI + funding for ~300 perps
    "ranker_seconds": 30.0,  # features + analyst panel over the universe
    "housekeeping_seconds": 3.0,
    "reporter_seconds_base": 5.0,
    "reporter_seconds_per_user": 2.0,
    "dispatcher_seconds": 1.0,
    "executor_seconds": 2.0,
    "evaluator_seconds": 0.5,
    "notifier_seconds": 0.5,
    "api_seconds": 0.2,
    "telegram_seconds": 0.2,
    "api_requests_per_user_day": 100.0,
    "accept_rate": 0.5,  # share of (signal, user) executions that open a position
    "hold_hours": 0.5,  # average time a position stays open
    "message_kib": 2.0,
    "log_bytes_per_invocation": 1500.0,
    "worker_log_bytes_per_minute": 600.0,
    "symbols": 300.0,
    "candle_bytes_per_row": 30.0,  # compressed Parquet
    "market_kinds_rewritten_per_minute": 8.0,  # day partitions rewritten by a collection
    "market_objects_read_per_rank": 20.0,
    "trades_mib_per_day": 20.0,  # recent trades of the shortlist
    "firestore_doc_kib": 2.0,
    "report_kib_per_user_day": 60.0,
    "audit_kib_per_order": 0.5,
    "worker_image_gib": 0.25,
    "function_image_gib": 0.3,
    "builds_per_month": 20.0,
    "build_minutes": 25.0,
    "secret_cache_ttl_seconds": 60.0,  # SecretManagerSecretStore cache
    "monitor_interval_seconds": 2.0,
    "firestore_ops_per_execution_reads": 10.0,
    "firestore_ops_per_execution_writes": 3.0,
}


@dataclass(frozen=True)
class Scenario:
    """A workload: users and published signals a day."""

    key: str
    title: str
    users: int
    signals_per_day: float


SCENARIOS = (
    Scenario("a", "1 user, idle market", users=1, signals_per_day=0.0),
    Scenario("b", "100 users, 20 signals/day", users=100, signals_per_day=20.0),
)


@dataclass(frozen=True)
class Line:
    """One resource's monthly cost in one scenario."""

    resource: str
    quantity: str
    usd: float


# --------------------------------------------------------------------- terraform


def _load_tf(path: Path) -> dict[str, Any]:
    options = SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    with path.open(encoding="utf-8") as fh:
        parsed: dict[str, Any] = hcl2.load(fh, serialization_options=options)
    return parsed


def _memory_gib(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)\s*(Mi|Gi|M|G)", text)
    if not match:
        raise ValueError(f"unsupported memory size {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1024 if unit in ("Mi", "M") else value


def _runs_per_month(cron: str) -> float:
    """Runs a month of an every-N-minutes, hourly or daily cron."""
    minute, hour, *rest = cron.split()
    if rest != ["*", "*", "*"]:
        raise ValueError(f"unsupported cron {cron!r}")
    per_hour = 60.0 if minute == "*" else None
    if per_hour is None:
        step = re.fullmatch(r"\*/([0-9]+)", minute)
        per_hour = 60.0 / int(step.group(1)) if step else 1.0
    if hour == "*":
        return per_hour * 24 * DAYS_PER_MONTH
    if re.fullmatch(r"[0-9]+", hour) and re.fullmatch(r"[0-9]+", minute):
        return float(DAYS_PER_MONTH)
    raise ValueError(f"unsupported cron {cron!r}")


@dataclass(frozen=True)
class Deployment:
    """What the estimate needs from terraform/."""

    region: str
    functions: dict[str, dict[str, Any]]  # name -> {trigger, schedule, cpu, memory_gib}
    worker_cpu: float
    worker_memory_gib: float
    static_secrets: int
    alert_conditions: int
    trades_retention_days: int
    market_nearline_after_days: int
    market_coldline_after_days: int
    market_retention_days: int
    report_retention_days: int
    audit_retention_days: int
    audit_noncurrent_days: int


def read_deployment(terraform_dir: Path) -> Deployment:
    """Variable defaults and the function table of ``terraform_dir``."""
    variables: dict[str, Any] = {}
    locals_: dict[str, Any] = {}
    alert_conditions = 0
    for path in sorted(terraform_dir.glob("*.tf")):
        parsed = _load_tf(path)
        for block in parsed.get("variable", []):
            for name, body in block.items():
                if "default" in body:
                    variables[name] = body["default"]
        for block in parsed.get("locals", []):
            locals_.update(block)
        for block in parsed.get("resource", []):
            for body in block.get("google_monitoring_alert_policy", {}).values():
                alert_conditions += len(body.get("conditions", []))

    def value(expr: Any) -> Any:
        if isinstance(expr, str):
            match = re.fullmatch(r"\$\{var\.([A-Za-z0-9_]+)\}", expr)
            if match:
                return variables[match.group(1)]
        return expr

    settings = variables["function_settings"]
    functions: dict[str, dict[str, Any]] = {}
    for name, spec in sorted(locals_["functions"].items()):
        functions[name] = {
            "trigger": spec["trigger"],
            "schedule": value(spec["schedule"]),
            "cpu": float(settings[name]["cpu"]),
            "memory_gib": _memory_gib(settings[name]["memory"]),
        }
    return Deployment(
        region=variables["region"],
        functions=functions,
        worker_cpu=float(variables["worker_cpu"]),
        worker_memory_gib=_memory_gib(variables["worker_memory"]),
        static_secrets=len(locals_["static_secrets"]),
        alert_conditions=alert_conditions,
        trades_retention_days=int(variables["trades_retention_days"]),
        market_nearline_after_days=int(variables["market_nearline_after_days"]),
        market_coldline_after_days=int(variables["market_coldline_after_days"]),
        market_retention_days=int(variables["market_retention_days"]),
        report_retention_days=int(variables["report_retention_days"]),
        audit_retention_days=int(variables["audit_retention_days"]),
        audit_noncurrent_days=int(variables["audit_noncurrent_days"]),
    )


# ----------------------------------------------------------------------- workload


def invocations(dep: Deployment, sc: Scenario) -> dict[str, float]:
    """Invocations a month of every function."""
    a = ASSUMPTIONS
    signals = sc.signals_per_day * DAYS_PER_MONTH
    executions = signals * sc.users
    trades = executions * a["accept_rate"]
    events = signals + 2 * trades + sc.users * DAYS_PER_MONTH  # opened, closed, daily summary
    counts: dict[str, float] = {}
    for name, fn in dep.functions.items():
        if fn["trigger"] == "schedule":
            counts[name] = _runs_per_month(fn["schedule"])
    counts.update(
        dispatcher=signals,
        executor=executions,
        evaluator=events,
        notifier=events,
        api=a["api_requests_per_user_day"] * sc.users * DAYS_PER_MONTH,
        # Telegram bot commands: assume as many as a fifth of the API's requests
        telegram=a["api_requests_per_user_day"] * sc.users * DAYS_PER_MONTH / 5,
    )
    return {name: counts[name] for name in dep.functions}


def _seconds(name: str, sc: Scenario) -> float:
    a = ASSUMPTIONS
    if name == "reporter":
        return a["reporter_seconds_base"] + a["reporter_seconds_per_user"] * sc.users
    return a[f"{name}_seconds"]


def _free(used: float, free: float, price: float) -> float:
    return min(used, free) * price


def estimate(dep: Deployment, sc: Scenario) -> tuple[list[Line], float]:
    """Monthly lines (gross list price) and the free-tier credit for one scenario."""
    a, p = ASSUMPTIONS, PRICES
    lines: list[Line] = []
    credit = 0.0
    calls = invocations(dep, sc)

    # functions (request-based Cloud Run billing, 100 ms granularity)
    vcpu_s_total = gib_s_total = requests_total = 0.0
    for name, fn in dep.functions.items():
        seconds = math.ceil(_seconds(name, sc) * 10) / 10
        vcpu_s = calls[name] * seconds * fn["cpu"]
        gib_s = calls[name] * seconds * fn["memory_gib"]
        usd = (
            vcpu_s * p["run_request_vcpu_second"]
            + gib_s * p["run_request_gib_second"]
            + calls[name] / 1e6 * p["run_requests_per_million"]
        )
        vcpu_s_total += vcpu_s
        gib_s_total += gib_s
        requests_total += calls[name]
        lines.append(Line(f"function {name}", f"{calls[name]:,.0f} calls x {seconds:g} s", usd))
    credit += _free(
        vcpu_s_total, FREE_TIER["run_request_vcpu_seconds"], p["run_request_vcpu_second"]
    )
    credit += _free(gib_s_total, FREE_TIER["run_request_gib_seconds"], p["run_request_gib_second"])
    credit += _free(requests_total, FREE_TIER["run_requests"], p["run_requests_per_million"] / 1e6)

    # worker: one instance, CPU always allocated (instance-based billing)
    w_vcpu_s = dep.worker_cpu * SECONDS_PER_MONTH
    w_gib_s = dep.worker_memory_gib * SECONDS_PER_MONTH
    lines.append(
        Line(
            "cloud run worker (always on)",
            f"{dep.worker_cpu:g} vCPU, {dep.worker_memory_gib:g} GiB, 720 h",
            w_vcpu_s * p["run_instance_vcpu_second"] + w_gib_s * p["run_instance_gib_second"],
        )
    )
    credit += _free(w_vcpu_s, FREE_TIER["run_instance_vcpu_seconds"], p["run_instance_vcpu_second"])
    credit += _free(w_gib_s, FREE_TIER["run_instance_gib_seconds"], p["run_instance_gib_second"])

    # scheduler
    jobs = sum(1 for fn in dep.functions.values() if fn["trigger"] == "schedule")
    lines.append(Line("cloud scheduler", f"{jobs} jobs", jobs * p["scheduler_job_month"]))
    credit += _free(jobs, FREE_TIER["scheduler_jobs"], p["scheduler_job_month"])

    # pub/sub: each message is published once and pushed to each subscriber
    signals = calls["dispatcher"]
    messages = (
        signals * 2  # publish + push to the dispatcher
        + calls["executor"] * 2
        + calls["evaluator"] * 3  # publish + push to evaluator and notifier
    )
    pubsub_gib = messages * max(1.0, a["message_kib"]) / 1024 / 1024
    lines.append(
        Line(
            "pub/sub",
            f"{messages:,.0f} msgs, {pubsub_gib:.2f} GiB",
            pubsub_gib / 1024 * p["pubsub_per_tib"],
        )
    )
    credit += _free(pubsub_gib, FREE_TIER["pubsub_gib"], p["pubsub_per_tib"] / 1024)

    # firestore
    trades = calls["executor"] * a["accept_rate"]
    open_positions = trades * a["hold_hours"] / (DAYS_PER_MONTH * 24)
    cycles = SECONDS_PER_MONTH / a["monitor_interval_seconds"]
    reads = (
        cycles * max(1.0, open_positions)  # worker: open-position query (min 1 read)
        + calls["ranker"] * 10  # watchlists, history
        + signals * sc.users  # dispatcher reads every user
        + calls["executor"] * a["firestore_ops_per_execution_reads"]
        + calls["evaluator"] * 5
        + calls["notifier"] * 2
        + calls["reporter"] * sc.users * 20
        + calls["housekeeping"] * 5
        + calls["api"] * 3
    )
    writes = (
        cycles  # worker heartbeat
        + calls["ranker"] * 11  # top N rankings + run record
        + signals * 2
        + calls["executor"] * a["firestore_ops_per_execution_writes"]
        + trades * 3  # close: position, event, journal
        + calls["evaluator"] * 1
        + calls["notifier"] * 1
        + calls["reporter"] * sc.users * 2
        + calls["api"] * 0.1
    )
    stored_docs = trades * 12 + calls["executor"] + sc.users * 10  # one year of records
    firestore_gib = stored_docs * a["firestore_doc_kib"] / 1024 / 1024
    lines.append(
        Line(
            "firestore",
            f"{reads:,.0f} reads, {writes:,.0f} writes, {firestore_gib:.2f} GiB",
            reads / 1e5 * p["firestore_reads_per_100k"]
            + writes / 1e5 * p["firestore_writes_per_100k"]
            + firestore_gib * p["firestore_gib_month"],
        )
    )
    credit += _free(
        reads,
        FREE_TIER["firestore_reads_per_day"] * DAYS_PER_MONTH,
        p["firestore_reads_per_100k"] / 1e5,
    )
    credit += _free(
        writes,
        FREE_TIER["firestore_writes_per_day"] * DAYS_PER_MONTH,
        p["firestore_writes_per_100k"] / 1e5,
    )
    credit += _free(firestore_gib, FREE_TIER["firestore_gib"], p["firestore_gib_month"])

    # cloud storage: market data steady state after a full retention period
    day_gib = a["symbols"] * 1440 * a["candle_bytes_per_row"] * 1.4 / GIB  # + rollups, OI, funding
    standard = day_gib * dep.market_nearline_after_days
    nearline = day_gib * (dep.market_coldline_after_days - dep.market_nearline_after_days)
    coldline = day_gib * (dep.market_retention_days - dep.market_coldline_after_days)
    trades_gib = a["trades_mib_per_day"] / 1024 * dep.trades_retention_days
    noncurrent = day_gib / 2 * 1440  # a day of per-minute rewrites, half-size on average
    blobs_gib = (
        sc.users * a["report_kib_per_user_day"] * min(dep.report_retention_days, 365) / 1024 / 1024
        + trades * 2 * a["audit_kib_per_order"] * 12 / 1024 / 1024
    )
    storage_usd = (
        (standard + trades_gib + noncurrent + blobs_gib) * p["gcs_standard_gib_month"]
        + nearline * p["gcs_nearline_gib_month"]
        + coldline * p["gcs_coldline_gib_month"]
    )
    class_a = (
        MINUTES_PER_MONTH * a["market_kinds_rewritten_per_minute"]
        + trades * 2  # audit appends
        + calls["reporter"] * sc.users * 3
    )
    class_b = calls["ranker"] * a["market_objects_read_per_rank"] * 2 + calls["executor"] * 4
    lines.append(
        Line(
            "cloud storage",
            f"{standard + trades_gib + noncurrent + blobs_gib:.1f} GiB std, "
            f"{nearline:.1f} nearline, {coldline:.1f} coldline, {class_a:,.0f} writes",
            storage_usd
            + class_a / 1000 * p["gcs_class_a_per_1000"]
            + class_b / 1000 * p["gcs_class_b_per_1000"],
        )
    )

    # secret manager: static secrets + 2 per user (key, secret); reads cached per instance
    versions = dep.static_secrets + 2 * sc.users
    key_holders = min(float(sc.users), max(open_positions, 0.0))
    accesses = (
        calls["executor"] * 2
        + key_holders * 2 * SECONDS_PER_MONTH / a["secret_cache_ttl_seconds"]
        + calls["notifier"] * 0.1
    )
    lines.append(
        Line(
            "secret manager",
            f"{versions} versions, {accesses:,.0f} accesses",
            versions * p["secret_version_month"] + accesses / 1e4 * p["secret_access_per_10k"],
        )
    )
    credit += _free(versions, FREE_TIER["secret_versions"], p["secret_version_month"])
    credit += _free(accesses, FREE_TIER["secret_accesses"], p["secret_access_per_10k"] / 1e4)

    # logging + monitoring
    log_gib = (
        sum(calls.values()) * a["log_bytes_per_invocation"]
        + MINUTES_PER_MONTH * a["worker_log_bytes_per_minute"]
    ) / GIB
    lines.append(Line("cloud logging", f"{log_gib:.2f} GiB", log_gib * p["logging_per_gib"]))
    credit += _free(log_gib, FREE_TIER["logging_gib"], p["logging_per_gib"])
    lines.append(
        Line(
            "cloud monitoring alerts",
            f"{dep.alert_conditions} conditions",
            dep.alert_conditions * p["alert_condition_month"],
        )
    )

    # images and builds (same in both scenarios)
    image_gib = 10 * a["worker_image_gib"] + len(dep.functions) * a["function_image_gib"]
    lines.append(
        Line(
            "artifact registry",
            f"{image_gib:.1f} GiB",
            image_gib * p["artifact_registry_gib_month"],
        )
    )
    credit += _free(image_gib, FREE_TIER["artifact_registry_gib"], p["artifact_registry_gib_month"])
    build_minutes = a["builds_per_month"] * a["build_minutes"]
    lines.append(
        Line("cloud build", f"{build_minutes:.0f} min", build_minutes * p["cloud_build_minute"])
    )
    credit += _free(build_minutes, FREE_TIER["cloud_build_minutes"], p["cloud_build_minute"])
    return lines, credit


# -------------------------------------------------------------------------- output


def report(terraform_dir: Path) -> dict[str, Any]:
    """The whole estimate as a JSON-ready dict (rounded to cents, stable order)."""
    dep = read_deployment(terraform_dir)
    scenarios: dict[str, Any] = {}
    for sc in SCENARIOS:
        lines, credit = estimate(dep, sc)
        gross = sum(line.usd for line in lines)
        scenarios[sc.key] = {
            "title": sc.title,
            "users": sc.users,
            "signals_per_day": sc.signals_per_day,
            "lines": [
                {"resource": x.resource, "quantity": x.quantity, "usd": round(x.usd, 2)}
                for x in lines
            ],
            "total_usd": round(gross, 2),
            "free_tier_credit_usd": round(credit, 2),
            "total_after_free_tier_usd": round(max(0.0, gross - credit), 2),
        }
    return {
        "prices": {
            "as_of": PRICES_AS_OF,
            "verified_online": PRICES_VERIFIED,
            "note": "Google Cloud list prices (USD, tier-1 region) written down from the "
            "pricing pages as of the date above; not verified online here",
            "unit_prices": PRICES,
            "free_tier": FREE_TIER,
        },
        "deployment": asdict(dep),
        "assumptions": ASSUMPTIONS,
        "scenarios": scenarios,
    }


def format_table(data: dict[str, Any]) -> str:
    """A plain-text table: one row per resource, one column per scenario."""
    keys = list(data["scenarios"])
    by_resource: dict[str, dict[str, float]] = {}
    for key in keys:
        for line in data["scenarios"][key]["lines"]:
            by_resource.setdefault(line["resource"], {})[key] = line["usd"]
    titles = [f"({k}) {data['scenarios'][k]['title']}" for k in keys]
    width = max(len(r) for r in [*by_resource, "total after free tier"]) + 2
    cols = [max(len(t), 12) + 2 for t in titles]
    out = [
        f"Prometheus monthly cost estimate, USD (list prices as of {data['prices']['as_of']}, "
        f"not verified online)",
        "resource".ljust(width) + "".join(t.rjust(c) for t, c in zip(titles, cols, strict=True)),
    ]
    out.append("-" * len(out[-1]))
    for resource, costs in by_resource.items():
        cells = "".join(
            f"{costs.get(k, 0.0):,.2f}".rjust(c) for k, c in zip(keys, cols, strict=True)
        )
        out.append(resource.ljust(width) + cells)
    out.append("-" * len(out[1]))
    for label, field in (
        ("total (list)", "total_usd"),
        ("free tier credit", "free_tier_credit_usd"),
        ("total after free tier", "total_after_free_tier_usd"),
    ):
        cells = "".join(
            f"{data['scenarios'][k][field]:,.2f}".rjust(c) for k, c in zip(keys, cols, strict=True)
        )
        out.append(label.ljust(width) + cells)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terraform-dir", type=Path, default=REPO / "terraform")
    parser.add_argument("--json", type=Path, default=REPO / "var" / "cost.json")
    args = parser.parse_args(argv)
    data = report(args.terraform_dir)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(format_table(data))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
