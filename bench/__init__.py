"""The benchmark harness: `make bench` or `.venv/bin/python -m bench` (see BENCHMARKS.md)."""
