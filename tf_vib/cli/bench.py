"""``tf-vib bench``: the command line of the benchmark harness, ``tf_vib.bench``."""

__all__ = ["add_command"]


def add_command(commands):
    from tf_vib.bench import runner

    parser = commands.add_parser(
        "bench", help="compare tf-vib with ISS, tfmot pruning, low rank, width search (writes docs/)",
        description=runner.__doc__,
    )
    parser.add_argument("--datasets", nargs="+", default=list(runner.DATASETS), help="data sets to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="seeds (default 0 1 2; with --quick, 0)")
    parser.add_argument("--methods", nargs="+", default=list(runner.METHODS), help="methods to run")
    parser.add_argument("--results", default="benchmarks/results", help="folder of per-seed JSON and the cache")
    parser.add_argument("--docs", default="docs", help="where benchmarks.md and its plots go")
    parser.add_argument("--paper-size", action="store_true",
                        help="also the paper's setting: LSTM(2048) on 2048-d CNN features of 8 frames")
    parser.add_argument("--quick", action="store_true", help="every sweep on a tiny budget: a smoke test of the pipeline")
    parser.add_argument("--keep-stale", action="store_true",
                        help="reuse cached results of older code when their settings are the same")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the JSON")
    parser.set_defaults(run=runner.run)
    return parser
