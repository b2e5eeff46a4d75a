#!/usr/bin/env python3
"""early_stop_bench: samples saved by --early-stop against self-consistency@N, and what it
costs in accuracy, per confidence.

`canopy solve --early-stop` draws a problem's samples in batches as continuations of one
draw: its samples are the first samples of the full N-sample run, in order
(tests/search/early_stop_test.cc, tests/apps/solve_early_stop_test.cc). So one full run
tells what every setting of the stopping rule would do: this script replays the rule
(search/early_stop.h: stop once P(Beta(v1+1, v2+1) > 1/2) >= confidence, never before
--min samples, checked every --batch samples; with --hopeless K also once K samples hold no
answer twice) over each problem's recorded candidates and
takes the majority of the samples drawn by then, as self-consistency does (ties: the larger
score sum, then the first seen).

Either give a finished run (--results RUN/results.jsonl of best-of-n or self-consistency
with candidates), or let it run one:

  python3 bench/early_stop_bench.py --dataset data/mawps_multiarith.jsonl --limit 100 --n 16
  python3 bench/early_stop_bench.py --results runs/x/results.jsonl [--json F]

Prints a table (confidence, samples drawn and saved, accuracy, change against the full
majority) and writes JSON.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def leader_stays_ahead(v1, v2):
    n = v1 + v2 + 1
    return min(1.0, sum(math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) - n * math.log(2))
                        for j in range(v1 + 1)))


def majority(cands):
    groups = {}
    order = []
    for answer, score, correct in (c[:3] for c in cands):
        if not answer:
            continue
        if answer not in groups:
            groups[answer] = [0, 0.0, correct]
            order.append(answer)
        groups[answer][0] += 1
        groups[answer][1] += score
    if not order:
        return None
    best = order[0]
    for a in order[1:]:
        if (groups[a][0], groups[a][1]) > (groups[best][0], groups[best][1]):
            best = a
    return groups[best][2]


def stop_at(cands, confidence, min_samples, batch, hopeless=0):
    n = len(cands)
    m = 0
    while m < n:
        m = min(n, m + batch)
        votes = {}
        for answer, _, _ in (c[:3] for c in cands[:m]):
            if answer:
                votes[answer] = votes.get(answer, 0) + 1
        top = sorted(votes.values(), reverse=True) + [0, 0]
        if m >= min_samples and top[0] > 0 and leader_stays_ahead(top[0], top[1]) >= confidence:
            return m
        if hopeless > 0 and m >= hopeless and top[0] <= 1:  # no two samples alike (search/early_stop.h)
            return m
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="")
    ap.add_argument("--dataset", default="")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--min", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--confidences", default="0.8,0.9,0.95,0.99")
    ap.add_argument("--hopeless", type=int, default=0, help="--early-stop-hopeless (0: off)")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    path = a.results
    if not path:
        if not a.dataset:
            sys.exit("early_stop_bench: give --results or --dataset")
        out = tempfile.mkdtemp(prefix="canopy_early_stop_bench_")
        subprocess.run([os.path.join(ROOT, "build/apps/canopy"), "solve", "--dataset", a.dataset, "--limit",
                        str(a.limit), "--output", out, "--strategy", "self-consistency", "--n", str(a.n),
                        "--seed", "1", "--kv-cache-mb", "512"], check=True)
        path = os.path.join(out, "results.jsonl")
    problems = [json.loads(l) for l in open(path) if l.strip()]
    problems = [p for p in problems if p.get("candidates")]
    n = max(len(p["candidates"]) for p in problems)
    full_correct = sum(bool(majority(p["candidates"])) for p in problems)
    rows = []
    for conf in [float(c) for c in a.confidences.split(",")]:
        drawn = correct = 0
        for p in problems:
            m = stop_at(p["candidates"], conf, a.min, a.batch, a.hopeless)
            drawn += m
            correct += bool(majority(p["candidates"][:m]))
        total = n * len(problems)
        rows.append({"confidence": conf, "samples": drawn, "samples_full": total,
                     "saved_fraction": (total - drawn) / total, "accuracy": correct / len(problems),
                     "accuracy_full": full_correct / len(problems),
                     "accuracy_change_points": 100.0 * (correct - full_correct) / len(problems)})
    print("%d problems, self-consistency@%d (majority of all samples): accuracy %.3f; rule checked every %d samples"
          " from %d on%s" % (len(problems), n, full_correct / len(problems), a.batch, a.min,
                             "; hopeless after %d" % a.hopeless if a.hopeless else ""))
    print("%10s %9s %7s %9s %14s" % ("confidence", "samples", "saved", "accuracy", "change (pts)"))
    for r in rows:
        print("%10.2f %9d %6.1f%% %9.3f %+14.1f" % (r["confidence"], r["samples"], 100 * r["saved_fraction"],
                                                   r["accuracy"], r["accuracy_change_points"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"bench": "early_stop_bench", "results": path, "problems": len(problems), "n": n,
                       "min": a.min, "batch": a.batch, "hopeless": a.hopeless, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
