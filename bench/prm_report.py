#!/usr/bin/env python3
"""The table and JSON of bench/prm_pipeline.sh: reads OUT/eval/*/summary.json, the head's
card (OUT/head/*.json) and the labels (OUT/labels/*/labels.jsonl); prints a table and
writes OUT/prm_pipeline.json. Reports only what the files hold."""
import json
import pathlib
import sys


def summary(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    return s.get("summary", s), s.get("settings", {})


def labels_cost(labels_dir):
    problems = steps = rollouts = rollout_tokens = sample_tokens = 0
    positives = 0
    for f in sorted(labels_dir.glob("*/labels.jsonl")):
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if "error" in r:
                continue
            problems += 1
            t = r.get("totals", {})
            rollouts += t.get("rollouts", 0)
            rollout_tokens += t.get("rollout_tokens", 0)
            sample_tokens += t.get("sample_tokens", 0)
            for s in r.get("samples", []):
                for st in s.get("steps", []):
                    if st.get("source") != "incomplete":
                        steps += 1
                        positives += bool(st.get("hard"))
    return {
        "problems": problems,
        "labelled_steps": steps,
        "positive_steps": positives,
        "rollouts": rollouts,
        "rollout_tokens": rollout_tokens,
        "sample_tokens": sample_tokens,
        "tokens_per_labelled_step": (rollout_tokens + sample_tokens) / steps if steps else None,
    }


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "runs/prm")
    rows = []
    for run in sorted((out / "eval").glob("*")):
        if not (run / "summary.json").exists():
            continue
        s, settings = summary(run)
        rows.append({
            "run": run.name,
            "strategy": settings.get("strategy"),
            "scorer": settings.get("scorer"),
            "n": settings.get("n"),
            "problems": s.get("num_problems", s.get("problems")),
            "accuracy": s.get("accuracy"),
            "oracle_accuracy": s.get("oracle_accuracy"),
            "mean_tokens": s.get("mean_tokens"),
        })
    card = None
    cards = sorted((out / "head").glob("*.json"))
    if cards:
        card = json.loads(cards[0].read_text())
    result = {"eval": rows, "head_card": card, "labelling": labels_cost(out / "labels")}
    (out / "prm_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")

    def fmt(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    print(f"{'run':<24} {'N':>4} {'problems':>8} {'accuracy':>9} {'oracle':>7} {'tokens/problem':>15}")
    for r in rows:
        print(f"{r['run']:<24} {fmt(r['n'], '>4')} {fmt(r['problems'], '>8')} "
              f"{fmt(r['accuracy'], '>9.3f')} {fmt(r['oracle_accuracy'], '>7.3f')} "
              f"{fmt(r['mean_tokens'], '>15.0f')}")
    lc = result["labelling"]
    print(f"labels: {lc['problems']} problems, {lc['labelled_steps']} steps "
          f"({lc['positive_steps']} positive), {lc['rollouts']} rollouts, "
          f"{fmt(lc['tokens_per_labelled_step'], '.0f')} tokens per labelled step")
    if card:
        print("head card:", json.dumps({k: card[k] for k in card if k in ("validation", "train", "kind")}))
    print(f"wrote {out / 'prm_pipeline.json'}")


if __name__ == "__main__":
    main()
