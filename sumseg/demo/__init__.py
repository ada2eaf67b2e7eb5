"""``sumseg demo``: the whole SUM pipeline on the built-in synthetic world, with a report (docs/demo.md).

:func:`~sumseg.demo.pipeline.run_demo` runs it; :mod:`~sumseg.demo.settings` holds the full and
quick presets; :mod:`~sumseg.demo.report` writes ``report.md`` and ``report.json``.
"""
