#!/usr/bin/env python3
"""Right answers, and whether the text derives them: how much of an oracle is luck.

  bench/derivation_check.py RUN [RUN ...] [--json OUT.json] [--show K]
  bench/derivation_check.py --self-test

A RUN is a `canopy solve --dump-trees` folder (best-of-N or self-consistency: every
candidate is a root-to-leaf path of its problem's tree), a `canopy solve` folder of one
candidate a problem (greedy: its result's path), or a `canopy label` folder (its
labels.jsonl: every sample with its steps). The questions come from the dataset named in
the folder's run.json.

A process reward model can only rank a right answer first if something in the text makes it
right. For arithmetic word problems that is checkable: a candidate *derives* the gold when
its text holds a chain of equations `a op b [op c ...] = d` that are arithmetically true,
whose operands are the question's numbers or results of earlier true equations of the
chain, and one of which yields the gold. A right answer without such a chain is a lucky
one (a number of the question echoed, a small number guessed, a false equation that
happens to land on the gold). The check is strict the other way too: a derivation in words
("twice as many") or an equation with units between the numbers is not recognized, so it
undercounts; the examples it prints let a reader judge. Prints a table and, with --json,
writes one object per RUN: candidates, right, right and derived, wrong and derived,
problems with a right candidate and problems with a derived right candidate."""
import argparse
import json
import pathlib
import re
import sys

NUMBER = r"\d[\d,]*(?:\.\d+)?"
OPERATOR = r"[-+*/x×÷]"
# An expression: numbers joined by operators, with optional parentheses, then "=" and a number.
# Each stretch of spaces has one way to match (closing parentheses as "(?:\s*\))*"): a long
# "20 * 20 * ..." with no "=" must fail in linear time, not by trying every split.
EQUATION = re.compile(
    r"((?:\(\s*)*" + NUMBER + r"(?:(?:\s*\))*\s*" + OPERATOR + r"\s*(?:\(\s*)*" + NUMBER + r")+(?:\s*\))*)\s*=\s*\$?\s*(" +
    NUMBER + r")")


def number(text):
    return float(text.replace(",", ""))


def close(a, b):
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def evaluate(expression):
    """The value of `expression` (numbers, + - * x × / ÷, parentheses), or None."""
    python = re.sub(NUMBER, lambda m: repr(number(m.group(0))), expression)
    python = python.replace("×", "*").replace("÷", "/").replace("x", "*")
    if not re.fullmatch(r"[\d.\s()+\-*/e]+", python):
        return None
    try:
        return float(eval(python, {"__builtins__": {}}, {}))  # noqa: S307: digits and operators only
    except (SyntaxError, ZeroDivisionError, TypeError):
        return None


def question_numbers(question):
    return {number(n) for n in re.findall(NUMBER, question)}


def derives(text, question, gold):
    """Whether `text` holds a chain of true equations over the question's numbers that yields `gold`."""
    known = question_numbers(question)
    for m in EQUATION.finditer(text):
        operands = [number(n) for n in re.findall(NUMBER, m.group(1))]
        value = evaluate(m.group(1))
        stated = number(m.group(2))
        if value is None or not close(value, stated):
            continue  # a false equation proves nothing
        if not all(any(close(o, k) for k in known) for o in operands):
            continue  # operands from nowhere
        known.add(stated)
        if close(stated, gold):
            return True
    return False


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def questions_of(run):
    settings = json.loads((run / "run.json").read_text())
    dataset = pathlib.Path(settings["dataset"])
    if not dataset.is_absolute() and not dataset.exists():
        dataset = run / dataset
    by_id = {}
    with open(dataset) as f:
        for line_number, line in enumerate(f, 1):  # ids as coordinator/dataset.cc reads them
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                continue
            field = next((k for k in ("id", "idx", "name", "problem_id") if row.get(k) is not None), None)
            pid = str(line_number) if field is None else (
                row[field] if isinstance(row[field], str) else json.dumps(row[field]))
            by_id[pid] = row.get("input") or row.get("question") or row.get("problem") or ""
    return by_id


def candidates(run):
    """(problem id, question, gold, text, right) for every candidate of a run."""
    if (run / "labels.jsonl").exists():
        for r in read_jsonl(run / "labels.jsonl"):
            for s in r["samples"]:
                if s.get("final"):
                    text = "\n\n".join(step["text"] for step in s["steps"])
                    yield r["id"], r["prompt"]["user"], number(r["gold"]), text, bool(s["correct"])
        return
    if not (run / "results.jsonl").exists() or not (run / "run.json").exists():
        sys.exit(f"{run}: not a canopy run folder (no labels.jsonl, or no results.jsonl and run.json)")
    questions = questions_of(run)
    for r in read_jsonl(run / "results.jsonl"):
        if "error" in r:
            continue
        if not (run / "trees").is_dir():
            if r.get("num_candidates", 1) != 1:
                sys.exit(f"{run}: problem {r['id']} has {r['num_candidates']} candidates and the run has no"
                         " trees/ (solve again with --dump-trees)")
            yield r["id"], questions[r["id"]], number(r["gold"]), "".join(r["path"]), bool(r["correct"])
            continue
        tree = json.loads((run / "trees" / (r["id"] + ".json")).read_text())
        nodes = {n["id"]: n for n in tree["nodes"]}
        leaves = [n for n in tree["nodes"] if not n["children"] and n["id"] != 0]
        if len(leaves) != len(r["candidates"]):
            sys.exit(f"{run}: problem {r['id']}: {len(leaves)} leaves for {len(r['candidates'])} candidates")
        for leaf, c in zip(leaves, r["candidates"]):
            parts, n = [], leaf
            while n["id"] != 0:
                parts.append(n["text"])
                n = nodes[n["parent"]]
            yield r["id"], questions[r["id"]], number(r["gold"]), "".join(reversed(parts)), bool(c[2])


def check(run, show):
    row = {"run": str(run), "candidates": 0, "right": 0, "right_derived": 0, "wrong_derived": 0}
    problems_right, problems_derived, examples = set(), set(), []
    for pid, question, gold, text, right in candidates(run):
        d = derives(text, question, gold)
        row["candidates"] += 1
        row["right"] += right
        row["right_derived"] += right and d
        row["wrong_derived"] += (not right) and d
        if right:
            problems_right.add(pid)
            if d:
                problems_derived.add(pid)
            if len(examples) < show:
                examples.append((pid, gold, d, " ".join(text.split())[:300]))
    row["problems_with_right"] = len(problems_right)
    row["problems_with_derived_right"] = len(problems_derived)
    return row, examples


def self_test():
    q = "Debby had 32 pieces of candy while her sister had 42. If they ate 35 pieces, how many are left?"
    assert derives("32 + 42 = 74 pieces. Then 74 - 35 = 39.", q, 39)
    assert derives("(32 + 42) - 35 = 39", q, 39)
    assert derives("They had 1,032 - 1,000 = 32? No: 32 x 1 = 32, 32+42=74 and 74 − 35... 74-35 = 39", q, 39)
    assert not derives("32 + 42 = 39", q, 39), "a false equation"
    assert not derives("The answer is 39.", q, 39), "no equation"
    assert not derives("40 - 1 = 39", q, 39), "operands not from the question"
    assert not derives("74 - 35 = 39", q, 39), "74 was never derived"
    assert not derives("32 + 42 = 74", q, 39), "true, but not the gold"
    assert derives("9*14 = 126 and 126/3 = 42", "9 boys and 14 girls in 3 rows", 42)
    chain = "20 * " * 300 + "20 is a lot"  # no "=": must fail fast, not backtrack exponentially
    assert not derives(chain, "20 customers", 20)
    assert evaluate("2 x 3 ÷ 4") == 1.5 and evaluate("1 / 0") is None
    print("derivation_check self-test: ok")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=pathlib.Path, metavar="RUN")
    parser.add_argument("--json", metavar="OUT.json", help="write one object per RUN")
    parser.add_argument("--show", type=int, default=0, metavar="K", help="print the first K right candidates of a RUN")
    parser.add_argument("--self-test", action="store_true", help="check the equation reader and exit")
    opts = parser.parse_args(argv[1:])
    if opts.self_test:
        return self_test()
    if not opts.runs:
        parser.error("name at least one RUN")
    rows = []
    print(f"{'run':<44} {'candidates':>10} {'right':>6} {'derived':>8} {'wrong, derived':>15} {'problems right':>15}"
          f" {'derived':>8}")
    for run in opts.runs:
        row, examples = check(run, opts.show)
        rows.append(row)
        print(f"{str(run)[-44:]:<44} {row['candidates']:>10} {row['right']:>6} {row['right_derived']:>8}"
              f" {row['wrong_derived']:>15} {row['problems_with_right']:>15} {row['problems_with_derived_right']:>8}")
        for pid, gold, d, text in examples:
            print(f"  {pid} (gold {gold:g}, {'derived' if d else 'not derived'}): {text}")
    if opts.json:
        pathlib.Path(opts.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv)
