"""The container tier: `tests/container/run.sh` (from `make test`) prepares Docker, then runs these with
`-m container`. Outside it they skip with one line when no Docker daemon is reachable."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.container import support, wheel_index


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "container: builds and runs the Docker image (tests/container/run.sh)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run only when asked for by marker (`-m container`, as run.sh does): `pytest tests` and the fast and slow
    tiers of `make test` must not build images."""
    if "container" in (config.getoption("markexpr") or ""):
        return
    chosen = [item for item in items if item.get_closest_marker("container") is None]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
        items[:] = chosen


@pytest.fixture(scope="session")
def docker_ready() -> None:
    why = support.docker_usable()
    if why is not None:
        pytest.skip(f"container tier skipped: Docker cannot run here ({why})")
    if not support.docker("image", "inspect", "-f", "{{.Id}}", support.BASE_IMAGE, check=False):
        pytest.skip(f"container tier skipped: no {support.BASE_IMAGE} image (tests/container/base_image.sh makes one)")


@pytest.fixture(scope="session")
def torch_version() -> str:
    import torch

    return str(torch.__version__).split("+")[0]


@pytest.fixture(scope="session")
def index_url(docker_ready: None, torch_version: str) -> Iterator[str]:
    """The loopback index the build installs from: the local CPU torch wheel, PyPI for everything else."""
    if not any(support.WHEELS.glob(f"torch-{torch_version}*.whl")):
        pytest.fail(f"no torch {torch_version} wheel in {support.WHEELS} (tests/container/run.sh downloads it)")
    server, url = wheel_index.serve(support.WHEELS)
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def image(index_url: str, torch_version: str) -> str:
    """The CPU image built from this checkout, as the README builds it (build args only)."""
    before = support.docker("image", "inspect", "-f", "{{.Id}}", support.IMAGE, check=False)
    seconds = support.build(support.REPO, support.IMAGE, index_url, torch_version)
    after = support.docker("image", "inspect", "-f", "{{.Id}}", support.IMAGE)
    if before and before != after:
        support.docker("rmi", before, check=False)  # the previous build of this tag; kept if still in use
    size = int(support.docker("image", "inspect", "-f", "{{.Size}}", support.IMAGE))
    print(f"\nimage {support.IMAGE}: built in {seconds:.0f}s, {size / 1e9:.2f} GB")
    return support.IMAGE


@pytest.fixture(scope="session")
def volume(docker_ready: None) -> Iterator[str]:
    """HUGLLAMA_HOME's named volume, shared by the first run, the restart and the rebuilt image's run."""
    name = f"hugllama-test-home-{int(time.time())}"
    support.docker("volume", "create", name)
    yield name
    support.docker("volume", "rm", "-f", name, check=False)
