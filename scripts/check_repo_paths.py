#!/usr/bin/env python3
"""Fails when code, scripts, tests or build files refer to a path outside the repository.

A fresh clone has nothing beside it, so nothing a user runs (the README's commands, the
tests, the benchmarks, CI) may read `../something` above the repository root or an absolute
path of this workplace. Checked: every tracked source, script and build file (docs/ is prose
and may say where data came from). A `../` chain is resolved from the file's own folder and
from the repository root (scripts `cd` there first); leaving the repository from either is
an error; a `"..", "name"` join is resolved from the file's folder and must name something
in the repository (or a folder setup makes there: models, build, runs). A line that means
it on purpose (a path-traversal test's input) says so with the marker `repo-paths: ok`.
Prints each finding as file:line and exits 1; exits 0 when there is none.

  scripts/check_repo_paths.py [ROOT]
"""
import os
import re
import subprocess
import sys

CODE_SUFFIXES = (".cc", ".h", ".cu", ".cuh", ".c", ".cpp", ".hpp", ".sh", ".py", ".cmake",
                 ".txt", ".in", ".capnp", ".sbatch", ".json", ".toml", ".yaml", ".yml")
CODE_NAMES = ("CMakeLists.txt", "run", "Makefile")
SKIP_DIRS = ("docs/", "build/", "models/", ".git/")
# `../` chains as they appear in strings and commands: "../x", '../../x', ${DIR}/../x.
UP_CHAIN = re.compile(r"(?<![\w.])((?:\.\./)+)([\w.-]*)")
# Python-style joins: os.path.join(root, "..", "shared").
JOINED_UP = re.compile(r"""["']\.\.["']\s*,\s*["']([\w.-]+)["']""")
GENERATED = ("models", "build", "runs")
# Absolute paths of this workplace, which no user has.
ABSOLUTE = re.compile(r"(?<![\w.])/work/[\w.-]+")


def tracked_files(root):
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z"], check=True,
                             capture_output=True).stdout.decode()
        return [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, _, names in os.walk(root):
            files += [os.path.relpath(os.path.join(d, n), root) for n in names]
        return files


def is_code(rel):
    if rel.startswith(SKIP_DIRS) or rel == "scripts/check_repo_paths.py":
        return False
    name = os.path.basename(rel)
    return name.endswith(CODE_SUFFIXES) or name in CODE_NAMES


def escapes(root, base, ups):
    target = os.path.normpath(os.path.join(root, base, ups))
    return os.path.relpath(target, root).startswith("..")


def findings(root, rel):
    try:
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (UnicodeDecodeError, OSError):
        return
    base = os.path.dirname(rel)
    for n, line in enumerate(lines, 1):
        if "repo-paths: ok" in line:
            continue
        for m in UP_CHAIN.finditer(line):
            ups = m.group(1)
            if escapes(root, base, ups) or escapes(root, "", ups):
                yield n, f"'{m.group(0)}' leaves the repository"
        for m in JOINED_UP.finditer(line):
            target = os.path.normpath(os.path.join(base, "..", m.group(1)))
            inside = not target.startswith("..") and (
                os.path.exists(os.path.join(root, target)) or target in GENERATED)
            if not inside:
                yield n, f"'..' joined with '{m.group(1)}' leaves the repository"
        for m in ABSOLUTE.finditer(line):
            yield n, f"absolute path '{m.group(0)}' exists only on this workplace's machines"


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    bad = 0
    for rel in tracked_files(root):
        if not is_code(rel):
            continue
        for n, why in findings(root, rel):
            print(f"{rel}:{n}: {why}")
            bad += 1
    if bad:
        print(f"{bad} reference(s) outside the repository: copy what is needed into it "
              "(data/ for datasets) and refer to it from the repository root")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
