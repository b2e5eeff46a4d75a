#!/usr/bin/env python3
"""The selections of bench/prm_report.py on head_eval_bench's rescored results.

  bench/head_eval_report.py N[,N...] DIR [DIR ...]

Each DIR holds a results.jsonl (a best-of-N run's, or head_eval_bench's rescoring of it with
one head). For every N: majority vote, weighted best-of-N (scores summed per answer),
best-of-N (the highest score) and the oracle, over the first N candidates of each problem;
then the candidate AUC of the scores over all pairs and within problems. Prints a table and
one JSON line per DIR."""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from prm_report import candidate_auc, read_jsonl, select  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    ns = [int(n) for n in sys.argv[1].split(",")]
    print(f"{'results':<48} {'N':>3} {'majority':>9} {'weighted':>9} {'best':>9} {'oracle':>9}  auc all / within")
    for d in sys.argv[2:]:
        records = read_jsonl(pathlib.Path(d) / "results.jsonl")
        auc = candidate_auc(records)
        row = {"results": d, "problems": len(records), "auc": auc, "at": {}}
        for n in ns:
            acc = {how: sum(select(r.get("candidates", [])[:n], how) for r in records) / max(len(records), 1)
                   for how in ("majority", "weighted", "best", "oracle")}
            row["at"][n] = acc
            fmt = lambda v: "-" if v is None else f"{v:.3f}"
            print(f"{d[-48:]:<48} {n:>3} {acc['majority']:>9.3f} {acc['weighted']:>9.3f} {acc['best']:>9.3f} "
                  f"{acc['oracle']:>9.3f}  {fmt(auc['all_pairs'])} / {fmt(auc['within_problem'])}")
        print(json.dumps(row))


if __name__ == "__main__":
    main()
