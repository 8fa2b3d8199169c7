"""`python -m factorize_app.client`: the command-line client, which now lives in its own package.

The client is `client/` at the repository's root, installable on any machine with
`pip install ./client` (it needs only `requests`), which gives the `factorize` command and the
`factorize_client` Python API (docs/client.md). This module only runs that command: the installed
package when there is one, else the copy in this checkout's `client/`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

CHECKOUT_COPY = Path(__file__).resolve().parent.parent / "client"
MOVED = "the client moved to the factorize-client package: `pip install ./client`, then run `factorize`"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from factorize_client.cli import main as client_main
    except ImportError:
        if not (CHECKOUT_COPY / "factorize_client").is_dir():
            print(f"python -m factorize_app.client: {MOVED}", file=sys.stderr)
            return 2
        sys.path.insert(0, str(CHECKOUT_COPY))
        from factorize_client.cli import main as client_main
    return client_main(argv, prog="python -m factorize_app.client")


if __name__ == "__main__":
    sys.exit(main())
