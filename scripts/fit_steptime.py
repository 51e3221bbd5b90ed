#!/usr/bin/env python3
"""How the step-time model (llmcalc/steptime.py) does on the published training runs, and the fit of
its three compute constants (kernels.MAMF_SHARE, steptime.ELEMENTWISE_TRAFFIC, kernels.ATTENTION_EFFICIENCY; every
GPU of the survey has a measured MAMF, so kernels.MATMUL_EFFICIENCY, for those without, does not enter).

For every published run with an MFU (tests/plan_cases.py, asked as tests/plan_questions.py asks it):
the predicted MFU of the published layout, its error, and the published degrees' rank among the
planner's answers. --grid refits the constants over a small grid and prints the best settings by
the number of runs within 15%.

Usage (from the repository root): python scripts/fit_steptime.py [--groups a,b] [--misses] [--grid]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmcalc import kernels, steptime  # noqa: E402
from tests.plan_cases import cases  # noqa: E402
from tests.plan_questions import answer, question  # noqa: E402


def checked(groups: set[str] | None):
    from tests.test_plan_published import NOT_CHECKED

    return [question(c) for c in cases() if c.mfu is not None and c.id not in NOT_CHECKED
            and (groups is None or c.group in groups)]


def survey(questions, show_misses: bool) -> tuple[int, int]:
    by_group = collections.defaultdict(list)
    for q in questions:
        a = answer(q)
        err = a.mfu / q.case.mfu - 1 if a.mfu else None
        by_group[q.case.group].append((a, err))
        if show_misses and (err is None or abs(err) > 0.15 or not a.rank or a.rank > 3):
            print(f"  {q.case.id:52s} rank {a.rank} fits {a.fits} mfu {q.case.mfu:.3f} -> "
                  f"{a.mfu and round(a.mfu, 3)} top {list(a.top)}")
    within = top3 = 0
    for group, rows in by_group.items():
        errs = [abs(e) for _, e in rows if e is not None]
        w = sum(e <= 0.15 for e in errs)
        t = sum(1 for a, _ in rows if a.rank and a.rank <= 3)
        within, top3 = within + w, top3 + t
        print(f"{group:24s} runs {len(rows):3d}  MFU within 15%: {w:3d}  median |error| "
              f"{statistics.median(errs) if errs else float('nan'):.3f}  published in top 3: {t:3d}")
    return within, top3


def grid(questions) -> None:
    results = []
    for e, k, a in itertools.product((0.8, 0.85, 0.9), (4.0, 5.0, 6.0), (0.35, 0.41, 0.5)):
        kernels.MAMF_SHARE, steptime.ELEMENTWISE_TRAFFIC, kernels.ATTENTION_EFFICIENCY = e, k, a
        errs = [abs(x.mfu / q.case.mfu - 1) for q in questions if (x := answer(q, depth=1)).mfu]
        results.append((sum(x <= 0.15 for x in errs), -statistics.median(errs), e, k, a))
    for within, med, e, k, a in sorted(results)[-8:]:
        print(f"MAMF share {e:.2f}  elementwise {k:.1f}  attention {a:.2f}: {within} within 15%, median {-med:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", help="comma list of plan_cases groups")
    ap.add_argument("--misses", action="store_true", help="list each run off by more than 15%% or outside the top 3")
    ap.add_argument("--grid", action="store_true", help="refit the three compute constants")
    args = ap.parse_args()
    questions = checked(set(args.groups.split(",")) if args.groups else None)
    if args.grid:  # fitted on the 16-bit runs; fp8 ones take the same share of the GPU's fp8 MAMF
        grid([q for q in questions if q.case.dtype == "bf16"])
    else:
        survey(questions, args.misses)


if __name__ == "__main__":
    main()
