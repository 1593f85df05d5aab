"""Analysis of finished sweeps: collect -> aggregate -> figures -> findings -> report.

Reads Ray Tune experiment folders from disk (no running cluster needed). Submodules are imported
lazily by callers: ``analysis.collect`` needs only pandas/pyarrow; figures need matplotlib.
"""

__all__ = ["collect", "aggregate", "units", "stats", "figures", "findings", "simulate", "report"]
