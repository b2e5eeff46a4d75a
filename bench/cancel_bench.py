#!/usr/bin/env python3
"""cancel_bench: tokens decoded for expansions whose problem was already decided, with and
without cancellation.

Two jobs on the first --problems MultiArith problems with the default model, each run with
cancellation (the default) and with --no-cancel (expansions of a problem a budget stopped
decode to the end), side by side:

  best-of-N   --strategy best-of-n --n 16 --solution-tokens 256, a job token budget
              (--job-max-tokens) that runs out while problems are in flight
  beam        --strategy beam --n 8 --beam-width 2, a per-problem --max-seconds

Per run it reports the engine's decoded tokens, the tokens the results keep (their
`tokens`), the difference (decoded and thrown away, or decoded for nothing), the expansions
cancelled and their token cap, and the wall time. Prints a table and writes JSON.

  python3 bench/cancel_bench.py [--problems 8] [--json F]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

JOBS = {
    "best-of-n": ["--strategy", "best-of-n", "--n", "16", "--solution-tokens", "256", "--problems-in-flight", "4"],
    "beam": ["--strategy", "beam", "--n", "8", "--beam-width", "2", "--step-tokens", "48", "--max-depth", "8",
             "--problems-in-flight", "4"],
}


def run(data, out, job, budget, cancel):
    argv = [os.path.join(ROOT, "build/apps/canopy"), "solve", "--dataset", data, "--output", out, "--seed", "5",
            "--kv-cache-mb", "256"] + JOBS[job] + budget + ([] if cancel else ["--no-cancel"])
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("cancel_bench: canopy exited with %d: %s" % (p.returncode, p.stderr[-2000:]))
    s = json.load(open(os.path.join(out, "summary.json")))
    kept = sum(json.loads(l)["tokens"] for l in open(os.path.join(out, "results.jsonl")))
    decoded = s["settings"]["engine"]["decode_tokens"]
    return {"job": job, "cancel": cancel, "decoded": decoded, "kept": kept, "thrown_away": decoded - kept,
            "cancelled": s["settings"]["cancelled"]["expansions"],
            "cancelled_token_cap": s["settings"]["cancelled"]["token_cap"],
            "accuracy": s["summary"]["accuracy"], "wall_s": wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--job-max-tokens", type=int, default=6000)
    ap.add_argument("--max-seconds", type=float, default=4.0)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="canopy_cancel_bench_")
    data = os.path.join(work, "slice.jsonl")
    with open(os.path.join(ROOT, "data/mawps_multiarith.jsonl")) as f, open(data, "w") as o:
        for _, line in zip(range(a.problems), f):
            o.write(line)
    budgets = {"best-of-n": ["--job-max-tokens", str(a.job_max_tokens)],
               "beam": ["--max-seconds", str(a.max_seconds)]}
    rows = []
    for job in JOBS:
        for cancel in (False, True):
            rows.append(run(data, os.path.join(work, "%s-%d" % (job, cancel)), job, budgets[job], cancel))
    print("%-10s %-9s %9s %7s %12s %10s %10s %7s" % ("job", "cancel", "decoded", "kept", "thrown away",
                                                     "cancelled", "token cap", "wall s"))
    for r in rows:
        print("%-10s %-9s %9d %7d %12d %10d %10d %7.1f" % (r["job"], "yes" if r["cancel"] else "no", r["decoded"],
                                                           r["kept"], r["thrown_away"], r["cancelled"],
                                                           r["cancelled_token_cap"], r["wall_s"]))
    saved = {}
    for job in JOBS:
        no, yes = [r for r in rows if r["job"] == job and not r["cancel"]][0], [r for r in rows if r["job"] == job and r["cancel"]][0]
        saved[job] = no["decoded"] - yes["decoded"]
        print("%s: cancelling decoded %d tokens fewer (%.0f%% of the run without it)"
              % (job, saved[job], 100.0 * saved[job] / max(1, no["decoded"])))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bench": "cancel_bench", "saved": saved, "problems": a.problems, "job_max_tokens": a.job_max_tokens,
                       "max_seconds": a.max_seconds, "rows": rows}, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
