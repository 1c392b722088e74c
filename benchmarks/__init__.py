"""icr-async benchmarks: side-by-side comparisons in one run, never part of the test suite.

Run all of them with ``python -m benchmarks`` (or ``tox -e bench``); see ``--help``.
"""
