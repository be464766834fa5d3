"""Benchmark: the embedded pipeline over the bundled sample, stage by stage.

Run: ``.venv/bin/python bench/bench_pipeline.py`` (or ``make bench``). Prints the numbers
and writes them to ``bench/results/pipeline.json``: the loop's wall and CPU seconds per
stage (from the run's ``timings.json``), and the whole process (imports included) as
``prometheus-trader run`` pays it. Wall-clock numbers on a shared machine are noisy and
grow with the load: the CPU seconds are the comparable figure.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

# PROMETHEUS_BENCH_RESULTS_DIR: write elsewhere than bench/results/ (the smoke test does)
RESULTS_DIR = Path(
    os.environ.get("PROMETHEUS_BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results"
)
RESULTS = RESULTS_DIR / "pipeline.json"


def main() -> int:
    """Run the pipeline once on the sample and report per-stage timings."""
    began, began_cpu = time.perf_counter(), time.process_time()
    # imported here: their cost is part of what `prometheus-trader run` pays
    from prometheus_trader.app.pipeline import run_pipeline
    from prometheus_trader.app.settings import Settings

    import_cpu = time.process_time() - began_cpu
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(var_dir=Path(tmp))
        summary = run_pipeline(settings)
        timings = json.loads((settings.run_dir / "timings.json").read_text())
    wall = time.perf_counter() - began
    cpu = time.process_time() - began_cpu
    usage = resource.getrusage(resource.RUSAGE_SELF)
    simulated = timings["simulated_minutes"]
    result = {
        "benchmark": "embedded pipeline over the bundled sample",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "user_seconds": round(usage.ru_utime, 3),
        "system_seconds": round(usage.ru_stime, 3),
        "import_cpu_seconds": round(import_cpu, 3),
        "loop_wall_seconds": timings["total_seconds"],
        "loop_cpu_seconds": timings.get("total_cpu_seconds"),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "simulated_minutes": simulated,
        "simulated_minutes_per_cpu_second": round(simulated / cpu, 1),
        "signals_published": summary["signals_published"],
        "positions_opened": summary["positions_opened"],
        "ledger_sha256": summary["ledger_sha256"],
        "stages": timings["stages"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{simulated} simulated minutes: wall {wall:.1f} s, CPU {cpu:.1f} s "
        f"(imports {import_cpu:.1f} s; loop {result['loop_cpu_seconds']} s), "
        f"load average {result['load_average_1m']} on {result['cpus']} CPUs"
    )
    for name, stage in result["stages"].items():
        share = stage.get("cpu_seconds", 0.0) / cpu * 100
        print(
            f"  {name:18s} {stage.get('cpu_seconds', 0.0):8.2f} CPU s "
            f"{stage['seconds']:8.2f} wall s  {stage['calls']:7d} calls  {share:5.1f} % of CPU"
        )
    print(f"ledger {result['ledger_sha256']}; written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
