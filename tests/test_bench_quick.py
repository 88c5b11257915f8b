"""The CPU benchmark harness must keep working: run the quick ingest and job-store benchmarks into a tmp dir.

Each runs as a user would (``python bench/<name>.py --quick --out DIR``), on SQLite and on the test
PostgreSQL server, and the JSON it writes must carry machine info and positive rates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_ADMIN, REPO

MACHINE_KEYS = {"cpu_model", "cpu_count", "ram_gib", "os", "python", "packages"}


def _run(script: str, out: Path, *extra: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBUMD_")}
    env["ALBUMD_BENCH_PG"] = PG_ADMIN
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    name = script.removeprefix("bench_").removesuffix(".py")
    doc = json.loads((out / f"cpu-{name}-quick.json").read_text())
    assert {"benchmark", "date", "machine", "settings", "results"} <= doc.keys()
    assert doc["machine"].keys() >= MACHINE_KEYS
    assert doc["settings"]["quick"] is True
    return doc


@pytest.mark.timeout(150)
def test_bench_ingest_quick(tmp_path: Path) -> None:
    doc = _run("bench_ingest.py", tmp_path, "--sizes", "100")
    results = doc["results"]
    assert set(results) == {"sqlite/100", "postgres/100"}
    for case in results.values():
        assert case["ingest"]["queued"] == case["ingest"]["files"] == 100
        assert case["ingest"]["files_per_s"] > 0
        assert set(case["ingest"]["phases_s"]) == {"scan", "stability_due", "hash_and_enqueue"}
        assert case["rescan"]["files_per_s"] > 0
        assert case["rescan"]["hashed"] == 0  # a rescan of an ingested inbox re-hashes nothing


@pytest.mark.timeout(150)
def test_bench_jobstore_quick(tmp_path: Path) -> None:
    doc = _run("bench_jobstore.py", tmp_path, "--jobs", "48")
    results = doc["results"]
    assert set(results) == {"sqlite/bare/1", "sqlite/bare/4", "postgres/bare/1", "postgres/bare/4"}
    for case in results.values():
        assert case["jobs"] == 48
        assert sum(case["jobs_per_worker"]) == 48
        assert case["jobs_per_s"] > 0
        assert case["claim_transactions_per_s"] > 0
        assert case["claim_ms"]["p50"] > 0
