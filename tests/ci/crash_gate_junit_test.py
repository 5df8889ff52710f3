#!/usr/bin/env python3
"""ci/crash_gate.py --junit: the JUnit file of a gate run that fails one cell
with a new violation, one with an error, and one bug switch that is no
longer caught has a testcase per cell and per switch, and exactly those
three failures, each with its rerun command. Runs the gate's own compare()
and write_junit() on a made-up matrix (the real matrix takes many minutes)."""

import os
import sys
import tempfile
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "ci"))
import crash_gate  # noqa: E402


def cell(violating, **extra):
    c = {"states": 10, "verdicts": {"clean": 10 - violating, "data-loss": violating},
         "violating_states": violating, "violations_by_invariant": {}}
    c.update(extra)
    return c


def main():
    bugs = [("skip-flush", "default", "ordered", []), ("late-l2", "default", "lazy", [])]
    baseline = {"default/ordered/prefix": cell(0), "default/lazy/prefix": cell(0),
                "default/unsafe/prefix": cell(3), "fault:skip-flush/default/ordered/prefix": cell(2),
                "fault:late-l2/default/lazy/prefix": cell(1)}
    current = dict(baseline)
    current["default/ordered/prefix"] = cell(1, first_violation="p3 I1")
    current["default/lazy/prefix"] = {"error": "qcrash: boom"}
    current["fault:late-l2/default/lazy/prefix"] = cell(0)
    by_cell = {}
    failures, _ = crash_gate.compare(baseline, current, bugs, by_cell)
    assert len(failures) == 3, failures
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gate.xml")
        crash_gate.write_junit(path, current, bugs, by_cell)
        root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert root.get("tests") == str(len(current) + len(bugs)) == str(len(cases)), root.attrib
    assert root.get("failures") == "3", root.attrib
    failed = {(c.get("classname"), c.get("name")): c.find("failure") for c in cases
              if c.find("failure") is not None}
    assert set(failed) == {("default", "ordered/prefix"), ("default", "lazy/prefix"),
                           ("caught", "late-l2")}, failed
    text = failed[("default", "ordered/prefix")].text
    assert "NEW VIOLATION default/ordered/prefix" in text, text
    assert "rerun: qcrash explore --workload builtin:default --policy ordered --enumerator prefix" \
        in text, text
    assert "ERROR" in failed[("default", "lazy/prefix")].get("message")
    assert crash_gate.rerun_command("fault:late-l2/default/lazy/drop-one").endswith(
        "--policy lazy --enumerator drop-one --bug late-l2")
    print("crash_gate_junit_test: %d testcases, 3 failures as expected" % len(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
