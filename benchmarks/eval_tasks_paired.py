"""Paired differences of two ``benchmarks/eval_tasks.py --json`` runs (e.g. fine-tuned vs trained model).

For every case and method, the rows of both runs are matched on (clip, seed) and the mean difference
``B - A`` of each score is printed with its standard error over the pairs (the same clips, masks and
sampler seeds in both runs, so clip difficulty cancels out)::

    .venv/bin/python benchmarks/eval_tasks_paired.py outputs/bench/trained.json outputs/bench/finetuned.json
"""

from __future__ import annotations

import json
import sys

import numpy as np

KEYS = ("psnr", "ssim", "psnr_generated", "temporal")


def paired(a: dict, b: dict) -> list[list[str]]:
    """Rows ``[case, method, pairs, "mean ± se" per key]`` of ``b - a``."""
    index = {(r["case"], r["method"], r["clip"], r["seed"]): r for r in a["rows"]}
    out = []
    for case, method in dict.fromkeys((r["case"], r["method"]) for r in b["rows"]):
        pairs = [(index[(case, method, r["clip"], r["seed"])], r) for r in b["rows"]
                 if (r["case"], r["method"]) == (case, method) and (case, method, r["clip"], r["seed"]) in index]
        cells = []
        for k in KEYS:
            d = np.array([rb.get(k, np.nan) - ra.get(k, np.nan) for ra, rb in pairs], float)
            d = d[np.isfinite(d)]
            cells.append(f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f}" if len(d) > 1 else "–")
        out.append([case, method, str(len(pairs)), *cells])
    return out


def main(argv: list[str]) -> int:
    a, b = (json.load(open(p)) for p in argv[:2])
    print("| case | method | pairs | " + " | ".join(f"Δ {k}" for k in KEYS) + " |")
    print("|---|---|---:|" + "---:|" * len(KEYS))
    for row in paired(a, b):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
