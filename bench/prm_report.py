#!/usr/bin/env python3
"""The table, JSON and plot of bench/prm_pipeline.sh.

  bench/prm_report.py OUT N...

Reads OUT/eval/<set>/*/ (results.jsonl, summary.json), the head's card (OUT/head/*.json) and
the labels (OUT/labels/*/labels.jsonl). From the best-of-N run at the largest N it computes,
for every N asked for, what each selection picks among the first N samples of each problem
(the results list every candidate with its answer, head score and correctness): majority
vote, weighted best-of-N (head scores summed per answer), best-of-N (the highest score) and
the oracle (any sample right). Their tokens are the run's tokens scaled by N / N_max (an
estimate: samples differ in length). Beam and DVTS rows are read from their own runs. Writes
OUT/prm_pipeline.json and OUT/accuracy_vs_tokens.svg; reports only what the files hold."""
import argparse
import json
import math
import pathlib


def read_jsonl(path):
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if "error" not in r:
                out.append(r)
    return out


def select(cands, how):
    """The chosen candidate's correctness among `cands` ([answer, score, correct(, tokens)], in order)."""
    if not cands:
        return False
    if how == "oracle":
        return any(c[2] for c in cands)
    if how == "best":  # the highest-scored candidate with an answer, earlier on ties
        answered = [i for i in range(len(cands)) if cands[i][0]]
        return bool(answered) and cands[max(answered, key=lambda i: (cands[i][1], -i))][2]
    groups = {}  # answer -> [count, score sum, first index, correct]
    for i, (answer, score, correct) in enumerate(c[:3] for c in cands):
        if not answer:
            continue
        g = groups.setdefault(answer, [0, 0.0, i, correct])
        g[0] += 1
        g[1] += score
    if not groups:
        return False
    if how == "majority":
        key = lambda g: (g[0], g[1], -g[2])
    else:  # weighted
        key = lambda g: (g[1], g[0], -g[2])
    return max(groups.values(), key=key)[3]


def candidate_auc(records):
    """How well the scores rank right candidates above wrong ones: over all pairs, and over
    pairs of one problem (what a selection among a problem's samples can use)."""
    def auc(pairs):
        pairs = list(pairs)
        return sum((p > n) + 0.5 * (p == n) for p, n in pairs) / len(pairs) if pairs else None
    cands = [c for r in records for c in r.get("candidates", [])]
    pos = [c[1] for c in cands if c[2]]
    neg = [c[1] for c in cands if not c[2]]
    within = [(p[1], n[1]) for r in records for p in r.get("candidates", []) if p[2]
              for n in r.get("candidates", []) if not n[2]]
    return {"all_pairs": auc((p, n) for p in pos for n in neg), "within_problem": auc(within),
            "right_candidates": len(pos), "wrong_candidates": len(neg)}


def summary(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    return s.get("summary", s), s.get("settings", {})


def bon_rows(run_dir, ns):
    records = read_jsonl(run_dir / "results.jsonl")
    s, settings = summary(run_dir)
    nmax = max(len(r.get("candidates", [])) for r in records) if records else 0
    rows = []
    print(f"{run_dir}: candidate AUC of the scores {json.dumps(candidate_auc(records))}")
    for n in ns:
        if n > nmax:
            continue
        for how, label in (("majority", "majority vote"), ("weighted", "weighted best-of-N (head)"),
                           ("best", "best-of-N (head)"), ("oracle", "oracle (any sample right)")):
            right = sum(select(r.get("candidates", [])[:n], how) for r in records)
            rows.append({"method": label, "n": n, "problems": len(records),
                         "accuracy": right / len(records) if records else None,
                         "mean_tokens": s.get("mean_tokens", 0) * n / nmax if nmax else None,
                         "tokens_estimated": n != nmax, "run": run_dir.name})
    own = s.get("accuracy")
    check = next((r for r in rows if r["method"].startswith("weighted") and r["n"] == nmax), None)
    if check and own is not None and abs(check["accuracy"] - own) > 1e-9:
        print(f"warning: {run_dir}: weighted@{nmax} recomputed {check['accuracy']:.3f}, the run says {own:.3f}")
    return rows


def search_rows(run_dir):
    s, settings = summary(run_dir)
    name = run_dir.name.rsplit("-n", 1)[0]
    label = {"beam-head": "beam (head)", "beam-logprob": "beam (policy log-prob)",
             "dvts-head": "DVTS (head)"}.get(name, name)
    return [{"method": label, "n": settings.get("n"), "problems": s.get("num_problems"),
             "accuracy": s.get("accuracy"), "oracle_accuracy": s.get("oracle_accuracy"),
             "mean_tokens": s.get("mean_tokens"), "tokens_estimated": False, "run": run_dir.name}]


def labels_cost(labels_dir):
    c = dict(problems=0, labelled_steps=0, positive_steps=0, rollouts=0, rollout_tokens=0, sample_tokens=0,
             correct_samples=0, samples=0, seconds=0.0)
    for f in sorted(labels_dir.glob("*/labels.jsonl")):
        for r in read_jsonl(f):
            c["problems"] += 1
            t = r.get("totals", {})
            for k in ("rollouts", "rollout_tokens", "sample_tokens"):
                c[k] += t.get(k, 0)
            for s in r.get("samples", []):
                c["samples"] += 1
                c["correct_samples"] += bool(s.get("correct"))
                for st in s.get("steps", []):
                    if st.get("source") != "incomplete":
                        c["labelled_steps"] += 1
                        c["positive_steps"] += bool(st.get("hard"))
        wall = f.parent / "wall_seconds"
        if wall.exists():
            c["seconds"] += float(wall.read_text())
        elif (f.parent / "status.json").exists():
            c["seconds"] += json.loads((f.parent / "status.json").read_text()).get("elapsed_seconds", 0)
    steps = c["labelled_steps"]
    c["tokens_per_labelled_step"] = (c["rollout_tokens"] + c["sample_tokens"]) / steps if steps else None
    c["seconds_per_labelled_step"] = c["seconds"] / steps if steps else None
    return c


def svg_plot(series, title, path):
    """Accuracy against tokens per problem (log scale), one polyline per method."""
    pts = [(x, y) for ps in series.values() for x, y in ps if x and y is not None]
    if not pts:
        return
    W, H, L, R, T, B = 720, 440, 70, 250, 40, 50
    xs = [math.log10(x) for x, _ in pts]
    x0, x1 = min(xs) - 0.05, max(xs) + 0.05
    y1 = max(0.05, max(y for _, y in pts) * 1.15)
    X = lambda x: L + (math.log10(x) - x0) / (x1 - x0) * (W - L - R)
    Y = lambda y: H - B - y / y1 * (H - T - B)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#7f7f7f", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L}" y="22" font-size="14">{title}</text>',
         f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
         f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
         f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">generated tokens per problem (log)</text>',
         f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" text-anchor="middle">accuracy</text>']
    for i in range(5):
        y = y1 * i / 4
        o.append(f'<text x="{L - 6}" y="{Y(y) + 4}" text-anchor="end">{y:.2f}</text>')
        o.append(f'<line x1="{L}" y1="{Y(y)}" x2="{W - R}" y2="{Y(y)}" stroke="#eee"/>')
    for e in range(math.floor(x0), math.ceil(x1) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if x0 <= math.log10(v) <= x1:
                o.append(f'<text x="{X(v)}" y="{H - B + 16}" text-anchor="middle">{v:g}</text>')
    for k, (name, ps) in enumerate(series.items()):
        ps = sorted((x, y) for x, y in ps if x and y is not None)
        if not ps:
            continue
        c = colors[k % len(colors)]
        dash = ' stroke-dasharray="5,4"' if name.startswith("oracle") else ""
        o.append(f'<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="' +
                 " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in ps) + '"/>')
        for x, y in ps:
            o.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{c}"/>')
        ly = T + 10 + 18 * k
        o.append(f'<line x1="{W - R + 12}" y1="{ly}" x2="{W - R + 36}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/>')
        o.append(f'<text x="{W - R + 42}" y="{ly + 4}">{name}</text>')
    o.append("</svg>")
    path.write_text("\n".join(o) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="runs/prm", type=pathlib.Path, metavar="OUT")
    parser.add_argument("ns", nargs="*", type=int, metavar="N", help="sample counts to report (default 4 16)")
    opts = parser.parse_args()
    out = opts.out
    ns = sorted(opts.ns) or [4, 16]
    if not (out / "eval").is_dir():
        parser.error(f"{out}: no eval/ folder (the output of bench/prm_pipeline.sh)")
    result = {"eval": {}, "head_card": None, "labelling": labels_cost(out / "labels")}
    cards = sorted(p for p in (out / "head").glob("*.json") if p.name != "features.json")
    if cards:
        result["head_card"] = json.loads(cards[0].read_text())
    for set_dir in sorted(p for p in (out / "eval").glob("*") if p.is_dir()):
        rows = []
        for run in sorted(set_dir.glob("*")):
            if not (run / "summary.json").exists():
                continue
            rows += bon_rows(run, ns) if run.name.startswith("bon-") else search_rows(run)
            if run.name.startswith("bon-"):
                result.setdefault("candidate_auc", {})[f"{set_dir.name}/{run.name}"] = candidate_auc(
                    read_jsonl(run / "results.jsonl"))
        result["eval"][set_dir.name] = rows
        series = {}
        for r in rows:
            series.setdefault(r["method"], []).append((r["mean_tokens"], r["accuracy"]))
        svg_plot(series, f"{set_dir.name}: accuracy against tokens (default model)",
                 out / f"accuracy_vs_tokens_{set_dir.name}.svg")
    (out / "prm_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")

    fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else "-"
    for name, rows in result["eval"].items():
        print(f"\n{name}")
        print(f"{'method':<30} {'N':>4} {'problems':>8} {'accuracy':>9} {'tokens/problem':>15}")
        for r in sorted(rows, key=lambda r: (r["n"] or 0, r["method"])):
            est = "~" if r["tokens_estimated"] else " "
            print(f"{r['method']:<30} {fmt(r['n'], '>4')} {fmt(r['problems'], '>8')} {fmt(r['accuracy'], '>9.3f')} "
                  f"{est}{fmt(r['mean_tokens'], '>14.0f')}")
    lc = result["labelling"]
    print(f"\nlabels: {lc['problems']} problems, {lc['samples']} samples ({lc['correct_samples']} right), "
          f"{lc['labelled_steps']} steps ({lc['positive_steps']} with a right rollout), {lc['rollouts']} rollouts, "
          f"{fmt(lc['tokens_per_labelled_step'], '.0f')} tokens and {fmt(lc['seconds_per_labelled_step'], '.2f')} s "
          f"per labelled step")
    card = result["head_card"]
    if card:
        m = card.get("metrics", {})
        print("head: " + ", ".join(f"{split} AUC {fmt(m.get(split, {}).get('auc'), '.3f')} loss "
                                   f"{fmt(m.get(split, {}).get('loss'), '.3f')}" for split in ("train", "validation")))
    print(f"wrote {out / 'prm_pipeline.json'}")


if __name__ == "__main__":
    main()
