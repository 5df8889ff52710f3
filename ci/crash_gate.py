#!/usr/bin/env python3
"""The crash gate: runs `qcrash explore` over a matrix (every policy x every
built-in workload x the deterministic enumerators, plus every bug switch with
the workload the catalogue names), and compares the verdict counts and the
caught/not-caught result of each switch with ci/crash-baseline.json.

Fails (exit 1) on a new violation in any cell, or on a switch (or the unsafe
policy) that stops being caught; prints every change as a diff a reviewer can
read. `--update` rewrites the baseline instead."""

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile

POLICIES = ["writethrough", "ordered", "lazy", "extent", "journal", "unsafe"]
ENUMERATORS = ["epochs", "prefix", "drop-one", "tear-one", "bounded:2", "data:16", "eio"]
# eio re-runs the workload per failed request: a stride of this many requests per cell.
EIO_CASES_PER_CELL = 40
# data:16 (the suite's data pass, 16 states a point: every data sector durable
# under the latest metadata first) is cheap where the mapping is plain and a
# content check per state where it is not (snapshots, compressed clusters).
DATA_STATES_PER_CELL = 4000


def switches(qcrash):
    """(switch, workload, policy, extra explore options) for each known bug,
    from the engine's own catalogue (engine/bug_catalogue.cc)."""
    out = subprocess.run([qcrash, "explore", "--list-bugs", "--output=json"], capture_output=True, text=True,
                         check=True)
    return [(b["name"], b["workload"], b["policy"], ["--journal", b["journal"]] if b["journal"] else [])
            for b in json.loads(out.stdout)]


# Every journal variant (the draft's open questions: commit point, recovery,
# terminator, checksum) at ring sizes from the smallest --journal accepts up,
# on the workloads that wrap and revoke. Scan-only recovery without checksums
# cannot tell a torn transaction from a whole one: it must be caught.
JOURNAL_WORKLOADS = ["journal-wrap", "2013-journal-revoke"]
JOURNAL_SIZES = ["4k", "8k", "16k", "64k"]
JOURNAL_ENUMERATORS = ["prefix", "drop-one", "tear-one", "bounded:2"]


def journal_variants():
    for commit in ["header", "descriptor"]:
        for recovery in ["header", "scan"]:
            for terminator in ["blank", "escape"]:
                for checksum in ["crc32", "bytesum", "none"]:
                    for size in JOURNAL_SIZES:
                        yield "commit=%s,recovery=%s,terminator=%s,checksum=%s,size=%s" % (
                            commit, recovery, terminator, checksum, size)


# Violations found and not fixed yet, kept in the baseline so that the gate
# still fails on anything new; each is printed on every run.
KNOWN_OPEN = {
    "journal-wrap, recovery=scan, 16k ring": (
        lambda key: key.startswith("journal:journal-wrap/commit=header,recovery=scan,")
        and "size=16k" in key,
        "scan-only recovery loses a flushed write when a torn commit lands after a checkpoint "
        "reused the ring (found once free space holds junk; rerun: qcrash explore --workload "
        "builtin:journal-wrap --policy journal --journal "
        "commit=header,recovery=scan,terminator=blank,checksum=crc32,size=16k --enumerator drop-one)"),
    "QEMU: a growing truncate over a backing file": (
        lambda key: key.startswith("qemu:bytes/writeback/"),
        "QEMU 7.2 makes the new size durable before the L2 entries that zero the grown area, so a "
        "crash inside the truncate shows the backing file's bytes there (docs/qemu-driver.md; rerun: "
        "qcrash explore --engine qemu --workload builtin:bytes --enumerator prefix)"),
}


def expected_unsafe(key):
    """Cells whose violations are the point: the unsafe policy, and scan-only
    recovery without checksums."""
    return "/unsafe/" in key or ("recovery=scan" in key and "checksum=none" in key)


def workloads(qcrash):
    out = subprocess.run([qcrash, "explore", "--workload", "builtin:?"], capture_output=True, text=True)
    line = out.stderr.splitlines()[0]
    return line.split("(built-in:")[-1].rstrip(")").split()


QEMU_CELLS = shutil.which("qemu-io") is not None
# Built-in workloads an engine cannot run yet: snapshots, bitmaps and
# compressed writes under the journal policy (the engine refuses them),
# snapshots and bitmaps through qemu-io (no such commands; `subclusters`
# takes a snapshot too), external data files through qemu-io
# (blklogwrites logs one file), rebases through qemu-io (qemu-img's
# operation, no qemu-io command), and commit through qemu-io (qemu-io has no
# commit command, and blklogwrites would not log the backing file it writes).
UNSUPPORTED = {("snapshots", "journal"), ("snapshots", "qemu"), ("bitmaps", "journal"), ("bitmaps", "qemu"),
               ("compressed", "journal"), ("compressed-zstd", "journal"),
               ("subclusters", "journal"), ("subclusters", "qemu"),
               ("data-file", "qemu"), ("data-file-raw", "qemu"),
               # amend: the engine amends nothing under the journal policy
               # (header rewrites would bypass its transactions), the lazy
               # policy cannot hold the compat=0.10 image the workload
               # downgrades to, and qemu-io has no amend command.
               ("amend", "journal"), ("amend", "lazy"), ("amend", "qemu"),
               ("rebase", "qemu"), ("commit", "qemu")}
QEMU_CACHES = ["writeback", "unsafe"]
STATES_PER_CELL = 20000  # the first states of each enumeration: deterministic, bounded time


def explore(qcrash, workload, policy, enumerator, extra, tmp):
    tmp = tempfile.mkdtemp(dir=tmp)
    report = os.path.join(tmp, "report.json")
    cmd = [qcrash, "explore", "--workload", "builtin:" + workload, "--policy", policy,
           "--enumerator", enumerator, "--no-minimize", "--report", report,
           "--states", str(EIO_CASES_PER_CELL if enumerator == "eio" else
                           DATA_STATES_PER_CELL if enumerator.startswith("data:") else STATES_PER_CELL),
           "--reproducers", os.path.join(tmp, "repro")] + extra
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode == 2:
        return {"error": (run.stderr or run.stdout).strip().splitlines()[-1]}
    with open(report) as f:
        r = json.load(f)
    cell = {"states": r["states_checked"], "verdicts": r["verdicts"],
            "violating_states": r["violating_states"],
            "violations_by_invariant": r["violations_by_invariant"]}
    if r["violations"]:
        cell["first_violation"] = r["violations"][0]["state_id"] + " " + r["violations"][0]["invariant"]
    if r.get("workload_error"):
        # An engine error stopped the workload (a read that returned wrong
        # data included): counted as a violating state of the cell.
        cell["workload_error"] = r["workload_error"]
        cell["violating_states"] += 1
    return cell


def run_matrix(qcrash, jobs, known_bugs):
    cells = {}
    jobs_list = []
    for workload in workloads(qcrash):
        for policy in POLICIES:
            if (workload, policy) in UNSUPPORTED:
                continue
            for enumerator in ENUMERATORS:
                jobs_list.append(("%s/%s/%s" % (workload, policy, enumerator), workload, policy, enumerator, []))
    for workload in JOURNAL_WORKLOADS:
        for variant in journal_variants():
            for enumerator in JOURNAL_ENUMERATORS:
                jobs_list.append(("journal:%s/%s/%s" % (workload, variant, enumerator), workload, "journal",
                                  enumerator, ["--journal", variant]))
    # QEMU's own qcow2 driver (explore --engine qemu): measured, not gated,
    # but for the canary (cache=unsafe drops flushes: it must be caught) and
    # for the harness itself (an error fails). QEMU's logs of the larger
    # workloads vary by a few records from run to run.
    if QEMU_CELLS:
        for workload in workloads(qcrash):
            if (workload, "qemu") in UNSUPPORTED:
                continue
            for cache in QEMU_CACHES:
                for enumerator in [e for e in ENUMERATORS if e != "eio"]:  # eio fails our engine's requests
                    jobs_list.append(("qemu:%s/%s/%s" % (workload, cache, enumerator), workload, "ordered",
                                      enumerator, ["--engine", "qemu", "--qemu-cache", cache]))
    for switch, workload, policy, extra in known_bugs:
        for enumerator in ENUMERATORS:
            key = "fault:%s/%s/%s/%s" % (switch, workload, policy, enumerator)
            jobs_list.append((key, workload, policy, enumerator, ["--bug", switch] + extra))
    with tempfile.TemporaryDirectory() as tmp:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(explore, qcrash, w, p, e, x, tmp): key for key, w, p, e, x in jobs_list}
            for future in concurrent.futures.as_completed(futures):
                cells[futures[future]] = future.result()
    return cells


def caught(cells, prefix):
    return any(c.get("violating_states", 0) > 0 for k, c in cells.items() if k.startswith(prefix))


def compare(baseline, current, known_bugs, by_cell=None):
    """The gate's failures and changes; by_cell (a dict) gets each failing
    cell's (or check's) failure, for the JUnit report."""
    failures, changes = [], []
    by_cell = {} if by_cell is None else by_cell
    for key in sorted(set(baseline) | set(current)):
        old, new = baseline.get(key), current.get(key)
        if old is None:
            changes.append("+ %s: new cell %s" % (key, json.dumps(new, sort_keys=True)))
            if new.get("violating_states", 0) > 0 and not expected_unsafe(key) and not key.startswith("fault:") \
                    and not key.startswith("qemu:"):
                failures.append("NEW VIOLATION %s: %s" % (key, new.get("first_violation")))
                by_cell[key] = failures[-1]
            continue
        if new is None:
            changes.append("- %s: cell gone" % key)
            continue
        if "error" in new and "error" not in old:
            failures.append("ERROR %s: %s" % (key, new["error"]))
            by_cell[key] = failures[-1]
            continue
        if new.get("violating_states", 0) > old.get("violating_states", 0) and not key.startswith("fault:") \
                and not key.startswith("qemu:") and not expected_unsafe(key):
            failures.append("NEW VIOLATION %s: %d violating states (baseline %d), first %s" % (
                key, new["violating_states"], old.get("violating_states", 0), new.get("first_violation")))
            by_cell[key] = failures[-1]
        if new.get("verdicts") != old.get("verdicts"):
            diff = ", ".join("%s %d->%d" % (v, old.get("verdicts", {}).get(v, 0), n)
                             for v, n in sorted(new.get("verdicts", {}).items())
                             if old.get("verdicts", {}).get(v, 0) != n)
            changes.append("~ %s: %s" % (key, diff))
    # Every switch, and the unsafe policy, must still be caught.
    for switch, workload, policy, _ in known_bugs:
        prefix = "fault:%s/" % switch
        if not caught(current, prefix):
            failures.append("NOT CAUGHT: bug switch %s (builtin:%s, %s) is not caught" % (switch, workload, policy))
            by_cell["caught:" + switch] = failures[-1]
    unsafe = lambda cells: any(c.get("violating_states", 0) for k, c in cells.items() if "/unsafe/" in k)
    if unsafe(baseline) and not unsafe(current):
        failures.append("NOT CAUGHT: the unsafe policy passes every cell")
        by_cell["caught:unsafe"] = failures[-1]
    qemu_unsafe = lambda cells: any(c.get("violating_states", 0) for k, c in cells.items()
                                    if k.startswith("qemu:") and "/unsafe/" in k)
    if qemu_unsafe(baseline) and not qemu_unsafe(current):
        failures.append("NOT CAUGHT: QEMU's driver under cache=unsafe passes every cell")
        by_cell["caught:qemu-unsafe"] = failures[-1]
    scan_unsummed = lambda cells: any(c.get("violating_states", 0) for k, c in cells.items()
                                      if k.startswith("journal:") and expected_unsafe(k))
    if scan_unsummed(baseline) and not scan_unsummed(current):
        failures.append("NOT CAUGHT: scan-only recovery without checksums passes every cell")
        by_cell["caught:journal-scan-unsummed"] = failures[-1]
    return failures, changes


def write_junit(path, current, known_bugs, by_cell):
    """JUnit XML: a testcase per cell (classname: the part of its key before
    the first '/', the workload or fault:SWITCH; name: the rest), one per bug
    switch that must be caught, and one per other failed check; a <failure>
    where the gate fails it, with the explore command that reruns the cell."""
    import xml.etree.ElementTree as ET
    cases = []
    for key in sorted(current):
        classname, _, name = key.partition("/")
        cases.append((classname, name, key))
    for switch, _, _, _ in known_bugs:
        cases.append(("caught", switch, "caught:" + switch))
    cases += [("caught", k.split(":", 1)[1], k) for k in sorted(by_cell)
              if k.startswith("caught:") and ("caught", k.split(":", 1)[1], k) not in cases]
    cases += [tuple(k.partition("/")[::2]) + (k,) for k in sorted(by_cell)
              if k not in current and not k.startswith("caught:")]
    failed = sum(1 for _, _, k in cases if k in by_cell)
    root = ET.Element("testsuites", tests=str(len(cases)), failures=str(failed), errors="0")
    suite = ET.SubElement(root, "testsuite", name="crash-gate", tests=str(len(cases)),
                          failures=str(failed), errors="0")
    for classname, name, key in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name)
        if key in by_cell:
            failure = ET.SubElement(case, "failure", message=by_cell[key], type="crash-gate")
            failure.text = by_cell[key] + "\n" + rerun_command(key) + "\n"
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


def rerun_command(key):
    """The qcrash explore command line of a cell's key (as run_matrix builds them)."""
    if key.startswith("caught:"):
        return "qcrash explore --list-bugs (the switch's cells are fault:%s/...)" % key[7:]
    parts = key.split("/")
    extra = ""
    if key.startswith("fault:"):
        switch, workload, policy, enumerator = parts[0][6:], parts[1], parts[2], parts[3]
        extra = " --bug " + switch
    elif key.startswith("journal:"):
        workload, policy, enumerator = parts[0][8:], "journal", parts[2]
        extra = " --journal " + parts[1]
    elif key.startswith("qemu:"):
        workload, policy, enumerator = parts[0][5:], "ordered", parts[2]
        extra = " --engine qemu --qemu-cache " + parts[1]
    else:
        workload, policy, enumerator = parts[0], parts[1], parts[2]
    return "rerun: qcrash explore --workload builtin:%s --policy %s --enumerator %s%s" % (
        workload, policy, enumerator, extra)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qcrash", required=True)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--update", action="store_true")
    parser.add_argument("--out", help="write the current matrix here")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--junit", help="write JUnit XML here: a testcase per cell")
    args = parser.parse_args()
    known_bugs = switches(args.qcrash)
    current = run_matrix(args.qcrash, args.jobs, known_bugs)
    summary = {k: v for k, v in current.items()}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
    if args.update:
        with open(args.baseline, "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
            f.write("\n")
        print("crash-gate: baseline updated (%d cells)" % len(summary))
        return 0
    with open(args.baseline) as f:
        baseline = json.load(f)
    by_cell = {}
    failures, changes = compare(baseline, current, known_bugs, by_cell)
    if args.junit:
        write_junit(args.junit, current, known_bugs, by_cell)
    states = sum(c.get("states", 0) for c in current.values())
    print("crash-gate: %d cells, %d crash states checked" % (len(current), states))
    for line in changes:
        print("  " + line)
    for switch, _, _, _ in known_bugs:
        print("  switch %-24s %s" % (switch, "caught" if caught(current, "fault:%s/" % switch) else "NOT caught"))
    for name, (matches, why) in KNOWN_OPEN.items():
        hit = sorted(k for k, c in current.items() if matches(k) and c.get("violating_states", 0))
        if hit:
            print("  known open finding (%s, %d cells): %s" % (name, len(hit), why))
    for line in failures:
        print("FAIL " + line)
    if failures:
        print("crash-gate: FAILED (%d). If a change is intended, rerun with --update and commit "
              "ci/crash-baseline.json so the diff is reviewed." % len(failures))
        return 1
    print("crash-gate: passed (%d verdict changes)" % len(changes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
