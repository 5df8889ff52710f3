#!/usr/bin/env python3
"""The CI manifests of docs/sharding.md, checked with what runs here: every
YAML file parses, and the commands they hold run locally against the qcrash
binary built here -- the Kubernetes Indexed Job's pods (one per index, with
JOB_COMPLETION_INDEX set as Kubernetes sets it) and its merge Job, and the
GitHub workflow's shard matrix and merge job -- and the merged report of
each equals the unsharded run's counts.

  manifests_test.py QCRASH_BINARY"""

import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
COUNTS = ["states_total", "states_checked", "violating_states", "verdicts", "violations_by_invariant",
          "crash_points", "workload", "policy", "enumerator"]


def load(path):
    with open(os.path.join(ROOT, path)) as f:
        return list(yaml.safe_load_all(f))


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def run(command, env, shell=False):
    full = dict(os.environ)
    for name in ["JOB_COMPLETION_INDEX", "QCRASH_SHARD_COUNT", "JOB_COMPLETIONS", "SLURM_ARRAY_TASK_ID",
                 "QCRASH_SHARD"]:
        full.pop(name, None)
    full.update(env)
    done = subprocess.run(command, cwd=ROOT, env=full, shell=shell, executable="/bin/bash" if shell else None,
                          capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def compare_with_unsharded(qcrash, options, merged_dir, tmp):
    unsharded = os.path.join(tmp, "unsharded.json")
    rc, out = run([qcrash, "explore"] + options + ["--report", unsharded,
                                                   "--reproducers", os.path.join(tmp, "unsharded.repro")], {})
    check(rc in (0, 1), "the unsharded run failed: " + out)
    with open(unsharded) as f:
        want = json.load(f)
    with open(os.path.join(merged_dir, "merged.json")) as f:
        got = json.load(f)
    for key in COUNTS:
        check(got.get(key) == want.get(key), "merged %s %r, unsharded %r" % (key, got.get(key), want.get(key)))
    junit = ET.parse(os.path.join(merged_dir, "merged.xml")).getroot()
    check(junit.get("tests") == "1", "merged.xml: tests=%s" % junit.get("tests"))
    check(junit.get("failures") == ("1" if want["violating_states"] else "0"), "merged.xml failures")
    return want["states_checked"]


def test_kubernetes(qcrash):
    (job,) = load("ci/k8s/explore-indexed-job.yaml")
    (merge_job,) = load("ci/k8s/explore-merge-job.yaml")
    spec = job["spec"]
    check(job["kind"] == "Job" and spec["completionMode"] == "Indexed", "not an Indexed Job")
    pod = spec["template"]["spec"]
    check(pod["restartPolicy"] == "Never", "restartPolicy")
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    check(env.get("QCRASH_SHARD_COUNT") == str(spec["completions"]),
          "QCRASH_SHARD_COUNT %s is not completions %s" % (env.get("QCRASH_SHARD_COUNT"), spec["completions"]))
    check(spec["parallelism"] <= spec["completions"], "parallelism")
    mount = container["volumeMounts"][0]["mountPath"]
    command = container["command"]
    check(command[:3] == ["bash", "ci/explore-shard.sh", mount], "pod command %r" % command)
    (merger,) = merge_job["spec"]["template"]["spec"]["containers"]
    check(merger["command"] == ["bash", "ci/explore-merge.sh", mount], "merge command %r" % merger["command"])
    check(merger["volumeMounts"][0]["mountPath"] == mount, "the merge Job mounts another volume")
    check(merge_job["spec"]["template"]["spec"]["volumes"] == pod["volumes"], "the Jobs share no volume")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        for index in range(spec["completions"]):
            pod_env = dict(env, JOB_COMPLETION_INDEX=str(index), QCRASH=qcrash)
            rc, text = run([c.replace(mount, out) for c in command], pod_env)
            check(rc == 0, "pod %d: %s" % (index, text))
        rc, text = run([c.replace(mount, out) for c in merger["command"]], {"QCRASH": qcrash})
        check(rc in (0, 1), "merge: " + text)
        states = compare_with_unsharded(qcrash, command[3:], out, tmp)
    print("manifests_test: Kubernetes Indexed Job: %d pods merged into %d states, as unsharded" %
          (spec["completions"], states))


def expand(text, variables):
    return re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: str(variables[m.group(1)]), text)


def test_github(qcrash):
    (workflow,) = load(".github/workflows/explore-shards.yml")
    jobs = workflow["jobs"]
    explore, merge = jobs["explore"], jobs["merge"]
    check(merge["needs"] == "explore", "the merge job does not wait for the shards")
    shards = explore["strategy"]["matrix"]["shard"]
    check(shards == list(range(len(shards))), "matrix shards %r are not 0..N-1" % shards)
    shard_step = [s for s in explore["steps"] if "explore-shard.sh" in s.get("run", "")]
    merge_step = [s for s in merge["steps"] if "explore-merge.sh" in s.get("run", "")]
    check(len(shard_step) == 1 and len(merge_step) == 1, "no explore-shard.sh / explore-merge.sh step")
    uploads = [s for s in explore["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    downloads = [s for s in merge["steps"] if s.get("uses", "").startswith("actions/download-artifact")]
    check(len(uploads) == 1 and len(downloads) == 1, "shard upload / merge download")
    out_dir = workflow["env"]["QCRASH_OUT"]
    check(uploads[0]["with"]["path"].rstrip("/") == out_dir, "the shards upload another directory")
    check(downloads[0]["with"]["path"].rstrip("/") == out_dir, "the merge downloads elsewhere")
    pattern = downloads[0]["with"]["pattern"].replace("*", "")
    check(uploads[0]["with"]["name"].startswith(pattern), "artifact names do not match the pattern")
    merged_upload = [s for s in merge["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    check(len(merged_upload) == 1 and "merged.xml" in merged_upload[0]["with"]["path"] and
          "merged.json" in merged_upload[0]["with"]["path"], "the merge does not upload its JSON and JUnit")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        env = dict(workflow["env"], QCRASH=qcrash, QCRASH_OUT=out)
        for shard in shards:
            job_env = {k: expand(str(v), {"matrix.shard": shard}) for k, v in explore["env"].items()}
            rc, text = run(shard_step[0]["run"], dict(env, **job_env), shell=True)
            check(rc == 0, "shard %d: %s" % (shard, text))
        rc, text = run(merge_step[0]["run"], env, shell=True)
        check(rc in (0, 1), "merge: " + text)
        states = compare_with_unsharded(qcrash, workflow["env"]["EXPLORE_OPTIONS"].split(), out, tmp)
    print("manifests_test: GitHub workflow: %d shards merged into %d states, as unsharded" % (len(shards), states))


def test_cflite():
    (workflow,) = load(".github/workflows/cflite.yml")
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    check("pull_request" in on, "cflite.yml does not run on pull requests")
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    uses = [s.get("uses", "") for s in steps]
    check(any(u.startswith("google/clusterfuzzlite/actions/build_fuzzers@") for u in uses), "no build_fuzzers")
    check(any(u.startswith("google/clusterfuzzlite/actions/run_fuzzers@") for u in uses), "no run_fuzzers")
    check(all(s["with"]["language"] == "c++" for s in steps if "build_fuzzers" in s.get("uses", "")),
          "build_fuzzers language")
    (project,) = load(".clusterfuzzlite/project.yaml")
    check(project["language"] == "c++", "project.yaml language")
    print("manifests_test: cflite.yml and .clusterfuzzlite/project.yaml parse")


def main():
    qcrash = os.path.abspath(sys.argv[1])
    test_kubernetes(qcrash)
    test_github(qcrash)
    test_cflite()
    return 0


if __name__ == "__main__":
    sys.exit(main())
