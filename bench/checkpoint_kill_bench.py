#!/usr/bin/env python3
"""checkpoint_kill_bench: how much work a kill -9 of the coordinator costs, with and without
periodic checkpoints.

An MCTS job (64 expansions of 3 children per problem, 4 problems in flight, the default
model, batch-invariant) on the first --problems MultiArith problems runs once uninterrupted
(wall time W). Then, for each checkpoint period (0 = none periodic: a kill -9 leaves no
checkpoint) and each of --kills random moments t in [0.2 W, 0.8 W] (seeded), the job is
started, killed with SIGKILL at t, and the same command run again to the end (wall W2).
Per kill it reports

  lost seconds  = t + W2 - W       (work done again, plus the restart's model load)
  restored      problems that went on from a checkpoint, and the tokens they kept
  equal         whether results.jsonl equals the uninterrupted run's (timings aside)

and the time of a rerun of the finished job (the restart's fixed cost). Prints a table and
writes JSON.

  python3 bench/checkpoint_kill_bench.py [--problems 4] [--kills 3] [--periods 0,5] [--json F]
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def args_for(data, out, period):
    return [os.path.join(ROOT, "build/apps/canopy"), "solve", "--dataset", data, "--output", out,
            "--strategy", "mcts", "--n", "64", "--mcts-children", "3", "--mcts-parallel", "4",
            "--step-tokens", "32", "--max-depth", "6", "--seed", "11", "--batch-invariant",
            "--kv-cache-mb", "256", "--problems-in-flight", "4", "--checkpoint-seconds", str(period)]


def run_to_end(argv):
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    if p.returncode != 0:
        sys.exit("checkpoint_kill_bench: canopy exited with %d" % p.returncode)
    return time.monotonic() - t0


def results(out):
    rs = {}
    with open(os.path.join(out, "results.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            r.pop("seconds", None)
            rs[r["id"]] = r
    return rs


def journal(out):
    with open(os.path.join(out, "journal.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--periods", default="0,5")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="canopy_checkpoint_kill_")
    data = os.path.join(work, "slice.jsonl")
    with open(os.path.join(ROOT, "data/mawps_multiarith.jsonl")) as f, open(data, "w") as o:
        for _, line in zip(range(a.problems), f):
            o.write(line)
    ref_out = os.path.join(work, "reference")
    wall = run_to_end(args_for(data, ref_out, 0))
    reference = results(ref_out)
    rerun = run_to_end(args_for(data, ref_out, 0))  # nothing left: the restart's fixed cost
    rng = random.Random(a.seed)
    rows = []
    for period in [float(p) for p in a.periods.split(",")]:
        for k in range(a.kills):
            out = os.path.join(work, "p%g-k%d" % (period, k))
            t = rng.uniform(0.2, 0.8) * wall
            p = subprocess.Popen(args_for(data, out, period), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
            time.sleep(t)
            p.send_signal(signal.SIGKILL)
            p.wait()
            done_at_kill = len(results(out)) if os.path.exists(os.path.join(out, "results.jsonl")) else 0
            w2 = run_to_end(args_for(data, out, period))
            events = journal(out)
            restored = [e for e in events if e.get("event") == "restored"]
            rows.append({"period_s": period, "kill_at_s": t, "answered_at_kill": done_at_kill,
                         "rerun_s": w2, "lost_s": t + w2 - wall, "restored": len(restored),
                         "tokens_kept": sum(e["tokens"] for e in restored),
                         "expansions_kept": sum(e["expansions"] for e in restored),
                         "equal": results(out) == reference})
    print("uninterrupted: %.1f s for %d problems; rerun of the finished job (fixed restart cost): %.1f s"
          % (wall, a.problems, rerun))
    print("%8s %8s %9s %8s %8s %9s %11s %11s %6s" % ("period", "kill at", "answered", "rerun s", "lost s",
                                                    "restored", "exp. kept", "tokens kept", "equal"))
    for r in rows:
        print("%8s %8.1f %9d %8.1f %8.1f %9d %11d %11d %6s" % (
            "none" if r["period_s"] == 0 else "%gs" % r["period_s"], r["kill_at_s"], r["answered_at_kill"],
            r["rerun_s"], r["lost_s"], r["restored"], r["expansions_kept"], r["tokens_kept"], r["equal"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bench": "checkpoint_kill_bench", "problems": a.problems, "uninterrupted_s": wall,
                       "rerun_finished_s": rerun, "rows": rows}, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
