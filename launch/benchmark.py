"""Benchmarks: `python -m launch.benchmark --suite=NAME [--json]` (see SUITES).

Every suite measures our implementation and its peer side by side in one command and reports
the ratio. The table goes to stdout; `--json` adds one JSON line with the figures.
"""

from __future__ import annotations

import importlib
import json

from absl import flags

from launch import common

SUITES = ("mining", "pipeline", "scaling", "recipe", "streaming", "faults")

flags.DEFINE_enum("suite", None, SUITES, "Which benchmark suite to run.")
flags.DEFINE_bool("json", False, "Also print one JSON line with the results.")
flags.DEFINE_list("sizes", None, "Override the suite's sizes (e.g. batch sizes for mining).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.suite is None:
        common.fail(f"--suite is required: one of {', '.join(SUITES)}")
    suite = importlib.import_module(f"launch.benchmarks.{FLAGS.suite}")
    kwargs = {}
    if FLAGS.sizes:
        try:
            kwargs["sizes"] = tuple(int(s) for s in FLAGS.sizes)
        except ValueError:
            common.fail(f"--sizes must be integers, got {FLAGS.sizes}")
    result = suite.run(**kwargs)
    print(suite.format_table(result))
    if FLAGS.json:
        print(json.dumps(result, sort_keys=True, default=str))


if __name__ == "__main__":
    common.run(main)
