"""Speed benchmarks: every figure is measured against a baseline timed in the same run.

Run `python -m bench --help`. The figures, their baselines and goals are described in
docs/benchmarks.md.
"""
