"""Performance and quality harnesses (run as `python -m benchmarks.<name>`; see benchmarks/README.md)."""
