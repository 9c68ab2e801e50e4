"""Benchmark losskit's linear_cross_entropy against torch side by side (see losskit.cli.bench_cases for the grid).

Usage: python benchmarks/bench_linear_cross_entropy.py [--quick] [--out docs]
"""

import sys

from losskit.cli.harness import script_main

if __name__ == "__main__":
    sys.exit(script_main("linear_cross_entropy"))
