"""Regenerate docs/benchmarks.md: every data set (tuning and held-out), every method's sweep, seeds 0 1 2.

    python benchmarks/run_benchmarks.py            # resumes from benchmarks/results/
    python benchmarks/run_benchmarks.py --fresh    # deletes the cached results first

The same as ``tf-vib bench``; one result per (data set, seed, method, sweep point) is cached
in ``benchmarks/results/cache/`` with its commit and settings (``tf_vib.bench.cache``), so that
an interrupted run resumes, a rerun trains only what a change touches, and the report can be
rewritten (``tf-vib bench --report-only``) without training again.
"""

import pathlib
import shutil
import sys

from tf_vib.cli import main

HERE = pathlib.Path(__file__).resolve().parent


def run(argv):
    fresh = "--fresh" in argv
    argv = [a for a in argv if a != "--fresh"]
    results = HERE / "results"
    if fresh and results.exists():
        shutil.rmtree(results)
    return main(["bench", "--results", str(results), "--docs", str(HERE.parent / "docs"), *argv])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
