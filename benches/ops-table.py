#!/usr/bin/env python3
"""The ratios of `cargo bench -p tern-benches --bench ops`: for each op and shape, the time
of each variant and the ratios wide/avx2 and scalar/wide, as a Markdown table. Reads
target/criterion/ops/ (or the directory given).

The time is the fastest of criterion's samples (per iteration), not its mean or median: on a
machine shared with other work, preemption inflates most samples several-fold, and the
fastest sample is the one closest to the kernel's own cost."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion/ops")
rows = {}
for path in sorted(root.glob("*/*/new/sample.json")):
    case, variant = path.parts[-4], path.parts[-3]
    sample = json.loads(path.read_text())
    fastest = min(t / n for t, n in zip(sample["times"], sample["iters"]))
    rows.setdefault(case, {})[variant] = fastest


def fmt(t):
    return f"{t:.0f}" if t is not None else "–"


def ratio(x, y):
    return f"{x / y:.2f}" if x and y else "–"


print("| op / shape | scalar ns | wide ns | avx2 ns | wide / avx2 | scalar / wide |")
print("|---|---|---|---|---|---|")
for case, v in rows.items():
    s, w, a = v.get("scalar"), v.get("wide"), v.get("avx2")
    print(f"| {case} | {fmt(s)} | {fmt(w)} | {fmt(a)} | {ratio(w, a)} | {ratio(s, w)} |")
