"""`python -m bench` (what `make bench` runs): see bench/runner.py."""

from bench.runner import main

main()
