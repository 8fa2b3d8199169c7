"""`python -m factorize_client`: the `factorize` command."""

import sys

from factorize_client.cli import main

sys.exit(main(prog="python -m factorize_client"))
