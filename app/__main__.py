"""`python -m app` is `hugllama serve` (same flags: --host, --port)."""

from __future__ import annotations

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
