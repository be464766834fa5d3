"""scripts/cost.py: the estimate follows the Terraform settings and is reproducible."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.infra.terraform_model import REPO, TERRAFORM_DIR, TerraformModel, function_dirs

pytestmark = pytest.mark.infra


def _load_cost() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prometheus_cost", REPO / "scripts" / "cost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


cost = _load_cost()


def test_reads_the_terraform_defaults() -> None:
    dep = cost.read_deployment(TERRAFORM_DIR)
    tf = TerraformModel.load()
    assert dep.worker_cpu == float(tf.default("worker_cpu"))
    assert sorted(dep.functions) == sorted(tf.locals["functions"])
    assert sorted(dep.functions) == function_dirs()
    ranker_runs = cost._runs_per_month(dep.functions["ranker"]["schedule"])
    interval = int(tf.default("ranker_schedule").split()[0].removeprefix("*/"))
    assert ranker_runs == 30 * 24 * 60 / interval
    assert dep.alert_conditions == 2


def test_worker_line_is_cpu_and_memory_around_the_clock() -> None:
    dep = cost.read_deployment(TERRAFORM_DIR)
    lines, _ = cost.estimate(dep, cost.SCENARIOS[0])
    worker = next(x for x in lines if x.resource.startswith("cloud run worker"))
    seconds = 30 * 24 * 3600
    expected = seconds * (
        dep.worker_cpu * cost.PRICES["run_instance_vcpu_second"]
        + dep.worker_memory_gib * cost.PRICES["run_instance_gib_second"]
    )
    assert worker.usd == pytest.approx(expected)


def test_busy_scenario_costs_more_on_the_same_resources() -> None:
    data = cost.report(TERRAFORM_DIR)
    idle, busy = data["scenarios"]["a"], data["scenarios"]["b"]
    assert [x["resource"] for x in idle["lines"]] == [x["resource"] for x in busy["lines"]]
    assert all(x["usd"] >= 0 for x in idle["lines"] + busy["lines"])
    assert busy["total_usd"] > idle["total_usd"] > 0
    executor = {
        s: next(x for x in data["scenarios"][s]["lines"] if x["resource"] == "function executor")
        for s in "ab"
    }
    assert executor["a"]["usd"] == 0 and executor["b"]["usd"] > 0
    assert data["prices"]["as_of"] and data["prices"]["verified_online"] is False


def test_estimate_follows_a_changed_setting(tmp_path: Path) -> None:
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM_DIR, copy, ignore=shutil.ignore_patterns(".terraform"))
    variables = copy / "variables.tf"
    text = variables.read_text(encoding="utf-8")
    old = (
        'description = "Memory of the always-on exit monitor."\n'
        '  type        = string\n  default     = "512Mi"'
    )
    assert old in text
    variables.write_text(text.replace(old, old.replace('"512Mi"', '"2Gi"')), encoding="utf-8")
    before = cost.report(TERRAFORM_DIR)["scenarios"]["a"]["total_usd"]
    after = cost.report(copy)["scenarios"]["a"]["total_usd"]
    extra = 1.5 * 30 * 24 * 3600 * cost.PRICES["run_instance_gib_second"]
    assert after - before == pytest.approx(extra, abs=0.02)


def test_main_prints_a_table_and_writes_identical_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "one.json", tmp_path / "two.json"
    assert cost.main(["--json", str(first)]) == 0
    assert cost.main(["--json", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    printed = capsys.readouterr().out
    assert "total after free tier" in printed
    assert "cloud run worker (always on)" in printed
    assert "not verified online" in printed
