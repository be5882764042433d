"""Self-contained HTML reports of trained runs (``dispart report RUN_DIR``).

:func:`dispart.report.html.build_report` writes the page; :mod:`dispart.report.cli` parses.
"""
