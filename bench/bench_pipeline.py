"""Benchmark: the embedded pipeline over the bundled sample, stage by stage.

Run: ``.venv/bin/python bench/bench_pipeline.py`` (or ``make bench``). Prints the numbers
and writes them to ``bench/results/pipeline.json``. Wall-clock numbers on a shared machine
are noisy: compare ratios within one run, not absolute times across machines.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from prometheus_trader.app.pipeline import run_pipeline
from prometheus_trader.app.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"


def main() -> int:
    """Run the pipeline once on the sample and report per-stage timings."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(var_dir=Path(tmp))
        began = time.perf_counter()
        summary = run_pipeline(settings)
        wall = time.perf_counter() - began
        timings = json.loads((settings.run_dir / "timings.json").read_text())
    simulated = timings["simulated_minutes"]
    result = {
        "benchmark": "embedded pipeline over the bundled sample",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "wall_seconds": round(wall, 3),
        "simulated_minutes": simulated,
        "simulated_minutes_per_second": round(simulated / wall, 1),
        "signals_published": summary["signals_published"],
        "positions_opened": summary["positions_opened"],
        "stages": timings["stages"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"wall {wall:.1f} s for {simulated} simulated minutes "
        f"({result['simulated_minutes_per_second']} min/s)"
    )
    for name, stage in result["stages"].items():
        share = stage["seconds"] / wall * 100
        print(
            f"  {name:18s} {stage['seconds']:8.2f} s  {stage['calls']:7d} calls  "
            f"{stage['ms_per_call']:8.3f} ms/call  {share:5.1f} %"
        )
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
