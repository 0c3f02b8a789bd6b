"""docker-compose.yml: valid against the Compose Specification schema, and wired to the image and settings.

compose-spec.json is the Compose Specification JSON schema as shipped in the docker-compose 1.29.2 wheel on
PyPI (compose/config/compose_spec.json, Apache-2.0), vendored because the tests run offline. It predates a few
newer keys (top-level `name`, healthcheck `start_interval`), which the compose file therefore does not use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.support import REPO, image_files, parse_dockerfile

SCHEMA = Path(__file__).with_name("compose-spec.json")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def _seconds(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    errors = sorted(_validator().iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_schema_rejects_unknown_service_keys(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["hugllama"]["stop_grace"] = "60s"
    assert list(_validator().iter_errors(broken))


def test_gpu_service(compose: dict[str, Any]) -> None:
    service = compose["services"]["hugllama"]
    assert "profiles" not in service, "the GPU service is the default"
    assert service["build"]["context"] == "."
    assert "args" not in service["build"], "the Dockerfile's defaults are the GPU build"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_cpu_service(compose: dict[str, Any]) -> None:
    service = compose["services"]["hugllama-cpu"]
    assert service["profiles"] == ["cpu"]
    assert service["build"]["args"] == {
        "BASE_IMAGE": "python:3.11-slim",
        "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
    }
    assert "deploy" not in service
    assert service["environment"]["HUGLLAMA_DEVICE"] == "cpu"
    assert service["image"] != compose["services"]["hugllama"]["image"]


@pytest.mark.parametrize("name", ["hugllama", "hugllama-cpu"])
def test_common_service_settings(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["env_file"] == ["config/example.env"]
    assert (REPO / "config" / "example.env").is_file()
    assert service["restart"] == "unless-stopped"
    volumes = dict(v.split(":", 1)[::-1] for v in service["volumes"])
    assert set(volumes.values()) <= set(compose["volumes"]), "named volumes"
    dockerfile = parse_dockerfile(REPO / "Dockerfile")
    declared = json.loads(next(i.args for i in dockerfile if i.name == "VOLUME"))
    assert set(volumes) == set(declared)
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and "/readyz" in test
    assert _seconds(service["healthcheck"]["start_period"]) >= 300


@pytest.mark.parametrize("name", ["hugllama", "hugllama-cpu"])
def test_published_on_loopback_unless_overridden(compose: dict[str, Any], name: str) -> None:
    """No keys are set by default, so the port is published on 127.0.0.1; HUGLLAMA_PUBLISH widens it."""
    (port,) = compose["services"][name]["ports"]
    assert port == "${HUGLLAMA_PUBLISH:-127.0.0.1:11434}:11434"
    header = (REPO / "docker-compose.yml").read_text().split("x-hugllama")[0]
    assert "HUGLLAMA_PUBLISH=0.0.0.0:11434" in header, "the override is documented where it is used"


@pytest.mark.parametrize("name", ["hugllama", "hugllama-cpu"])
def test_hardened(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["read_only"] is True
    assert service["tmpfs"] == ["/tmp"], "the image's caches (XDG_CACHE_HOME, TRITON_CACHE_DIR) live in /tmp"
    assert service["cap_drop"] == ["ALL"] and "cap_add" not in service
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert "privileged" not in service and "user" not in service, "the image's uid 10001"


def test_stop_grace_outlasts_the_drain(compose: dict[str, Any], clean_env: pytest.MonkeyPatch) -> None:
    import runpy

    from tests.deploy.support import parse_env_file

    for line in parse_env_file(REPO / "config" / "example.env"):
        if line.active:
            clean_env.setenv(line.key, line.value)
    gunicorn = runpy.run_path(str(REPO / "config" / "gunicorn.conf.py"))
    for service in compose["services"].values():
        assert _seconds(service["stop_grace_period"]) > gunicorn["graceful_timeout"]


def test_healthcheck_script_is_in_the_image(compose: dict[str, Any]) -> None:
    in_image = image_files(parse_dockerfile(REPO / "Dockerfile"))
    for service in compose["services"].values():
        script = next(arg for arg in service["healthcheck"]["test"] if arg.endswith(".py"))
        assert script == in_image["docker/healthcheck.py"]
