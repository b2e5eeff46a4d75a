#!/usr/bin/env python3
"""Pointwise against pairwise heads (canopy train-prm --objective) over repeated splits.

  bench/head_objective_bench.py --labels DIR [DIR ...] --features CACHE.json \
      [--seeds 1-10] [--heads logistic,mlp] [--objectives pointwise,pairwise] \
      [--canopy build/apps/canopy] [--work DIR] [--output JSON] [-- EXTRA train-prm flags]

For every (head, objective, seed) it runs train-prm on the same labels and features cache
(the features are extracted once, by the first run) with the seed's split of problems
(--validation-fraction of them held out), and reads the card: the held-out steps' pooled AUC
and their AUC within problems (pairs of one problem's steps only: what search uses), the
training ones beside them. Prints a table of the means over seeds (with the smallest and
largest) and writes every run's numbers as JSON."""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys


def seeds_of(text):
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", nargs="+", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--seeds", default="1-10")
    ap.add_argument("--heads", default="logistic")
    ap.add_argument("--objectives", default="pointwise,pairwise")
    ap.add_argument("--canopy", default="build/apps/canopy")
    ap.add_argument("--work", default="runs/head_objective_bench")
    ap.add_argument("--output", default="bench/results/head_objective_bench.json")
    a = ap.parse_args(argv)
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for head in a.heads.split(","):
        for objective in a.objectives.split(","):
            for seed in seeds_of(a.seeds):
                out = work / f"{head}-{objective}-{seed}.safetensors"
                cmd = [a.canopy, "train-prm", "--labels", *a.labels, "--features", a.features, "--head", head,
                       "--objective", objective, "--seed", str(seed), "--output", str(out), *extra]
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")
                card = json.loads(out.with_suffix(".json").read_text())
                m = card["metrics"]
                runs.append({"head": head, "objective": objective, "seed": seed,
                             "validation_problems": m["validation"]["problems"],
                             "validation_positives": m["validation"]["positives"],
                             "validation_auc": m["validation"]["auc"],
                             "validation_within_problem_auc": m["validation"]["within_problem_auc"],
                             "train_auc": m["train"]["auc"],
                             "train_within_problem_auc": m["train"]["within_problem_auc"],
                             "best_epoch": card["training"]["best_epoch"]})
                print(f"  {head} {objective} seed {seed}: validation auc {runs[-1]['validation_auc']}, "
                      f"within problems {runs[-1]['validation_within_problem_auc']}", file=sys.stderr)

    def stat(values):
        v = [x for x in values if x is not None]
        if not v:
            return None
        return {"mean": statistics.fmean(v), "min": min(v), "max": max(v), "n": len(v)}

    summary = []
    print(f"{'head':<9} {'objective':<10} {'splits':>6}  {'val auc':>21}  {'val auc/problem':>21}  "
          f"{'train auc':>9} {'train auc/problem':>17}")
    fmt = lambda s: "n/a" if s is None else f"{s['mean']:.3f} ({s['min']:.2f}-{s['max']:.2f})"
    for head in a.heads.split(","):
        for objective in a.objectives.split(","):
            rs = [r for r in runs if r["head"] == head and r["objective"] == objective]
            row = {"head": head, "objective": objective, "splits": len(rs)}
            for k in ("validation_auc", "validation_within_problem_auc", "train_auc", "train_within_problem_auc"):
                row[k] = stat([r[k] for r in rs])
            summary.append(row)
            print(f"{head:<9} {objective:<10} {len(rs):>6}  {fmt(row['validation_auc']):>21}  "
                  f"{fmt(row['validation_within_problem_auc']):>21}  {row['train_auc']['mean']:>9.3f} "
                  f"{row['train_within_problem_auc']['mean']:>17.3f}")
    pathlib.Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.output).write_text(json.dumps({"labels": a.labels, "extra_flags": extra, "summary": summary,
                                                  "runs": runs}, indent=1) + "\n")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
