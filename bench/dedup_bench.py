#!/usr/bin/env python3
"""States covered and recoveries run per second by `qcrash explore`, with the
deduplicating recovery (the default, properties/dedup.h) and without it
(--no-dedup: every state recovered in full), on one core; and --jobs 2
against --jobs 1. Writes JSON (bench/results/dedup.json); never a timed test.

    python3 bench/dedup_bench.py [--qcrash build/ci/qcrash] [--out FILE] [--all]

--all also covers every state of refcount-growth's exhaustive enumeration
(about 200 M states: minutes)."""

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile

ONE_CORE = ["taskset", "-c", "0"]
RG = ["--workload", "builtin:refcount-growth", "--enumerator", "exhaustive:100000000"]


def explore(qcrash, args, pin=True):
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "r.json")
        cmd = (ONE_CORE if pin else []) + [qcrash, "explore"] + args + ["--report", report]
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        with open(report) as f:
            r = json.load(f)
    covered = r.get("states_covered", r["states_checked"])
    out = {"command": "qcrash explore " + " ".join(args),
           "states_covered": covered,
           "recoveries_run": r.get("recoveries_run"),
           "elapsed_seconds": round(r["elapsed_seconds"], 3),
           "states_per_second": round(covered / r["elapsed_seconds"]) if r["elapsed_seconds"] else 0}
    if r.get("recoveries_run") is not None and r["elapsed_seconds"]:
        out["recoveries_per_second"] = round(r["recoveries_run"] / r["elapsed_seconds"])
    if "generated_workloads" in r:
        out["generated_workloads"] = r["generated_workloads"]
        out["cells"] = len(r.get("cells", []))
        # The suite's data pass (data:LIMIT cells) apart from the other passes.
        passes = {}
        for cell in r.get("cells", []):
            name = "data" if cell["enumerator"].startswith("data:") else "other"
            p = passes.setdefault(name, {"cells": 0, "states": 0, "recoveries": 0, "seconds": 0.0})
            p["cells"] += 1
            p["states"] += cell["states_checked"]
            p["recoveries"] += cell.get("recoveries_run") or 0
            p["seconds"] += cell["elapsed_seconds"]
        for p in passes.values():
            p["seconds"] = round(p["seconds"], 3)
            p["states_per_second"] = round(p["states"] / p["seconds"]) if p["seconds"] else 0
        out["passes"] = passes
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--qcrash", default="build/ci/qcrash")
    parser.add_argument("--out", default="bench/results/dedup.json")
    parser.add_argument("--all", action="store_true")
    a = parser.parse_args()
    q = a.qcrash
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.machine() + ", " + str(os.cpu_count()) + " cores",
        "note": "one core (taskset -c 0) unless jobs; states_per_second counts covered states",
        "refcount_growth_exhaustive": {
            "dedup": explore(q, RG + ["--states", "20000000"]),
            "full": explore(q, RG + ["--states", "200000", "--no-dedup"]),
        },
        "default_suite_20s": {
            "dedup": explore(q, []),
            "full": explore(q, ["--no-dedup"]),
        },
    }
    jobs1 = explore(q, RG + ["--budget", "10"], pin=False)
    jobs2 = explore(q, RG + ["--budget", "10", "--jobs", "2"], pin=False)
    results["jobs"] = {"jobs_1": jobs1, "jobs_2": jobs2,
                       "speedup": round(jobs2["states_per_second"] / max(1, jobs1["states_per_second"]), 2)}
    if a.all:
        results["refcount_growth_exhaustive"]["dedup_every_state"] = explore(q, RG)
    elif os.path.exists(a.out):
        # Minutes to measure: carried over from the last --all run.
        with open(a.out) as f:
            last = json.load(f).get("refcount_growth_exhaustive", {}).get("dedup_every_state")
        if last:
            last.setdefault("measured", "an earlier --all run")
            results["refcount_growth_exhaustive"]["dedup_every_state"] = last
    rg = results["refcount_growth_exhaustive"]
    rg["speedup"] = round(rg["dedup"]["states_per_second"] / max(1, rg["full"]["states_per_second"]), 1)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
