"""Every YAML file of the deployment parses, and every Kubernetes document names its kind and object."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.support import DEPLOY, REPO, load_docs, yaml_blocks

YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def test_found_the_manifests() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {"base/kustomization.yaml", "overlays/gpu/kustomization.yaml", "overlays/cpu/kustomization.yaml"} <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_manifest_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs, "empty file"
    for doc in docs:
        assert isinstance(doc, dict)
        assert doc.get("apiVersion") and doc.get("kind"), "apiVersion and kind"
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]
            assert "namespace" not in doc["metadata"], "the namespace comes from kubectl -n or an overlay"


def test_compose_file_parses() -> None:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert set(data["services"]) == {"hugllama", "hugllama-cpu"}


def test_readme_yaml_blocks_parse() -> None:
    blocks = yaml_blocks((DEPLOY / "README.md").read_text())
    assert blocks
    for block in blocks:
        assert list(yaml.safe_load_all(block))
