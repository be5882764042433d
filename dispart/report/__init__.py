"""Self-contained HTML reports of trained runs (``dispart report RUN_DIR``)."""

from dispart.report.html import build_report

__all__ = ["build_report"]
