"""Benchmark results into ``REPORT.md`` and charts: ``results`` reads and checks pytest-benchmark JSON,
``tables`` writes the Markdown, ``charts`` draws the figures, ``render`` puts them together."""
