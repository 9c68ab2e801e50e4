"""Benchmark losskit's elementwise against torch side by side (see losskit.cli.bench_cases for the grid).

Usage: python benchmarks/bench_elementwise.py [--quick] [--out docs]
"""

import sys

from losskit.cli.harness import script_main

if __name__ == "__main__":
    sys.exit(script_main("elementwise"))
