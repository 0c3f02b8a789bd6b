"""Helpers for the deployment tests: repo paths, env-name rules, a tiny kustomize, Dockerfile and env-file parsing.

The kustomize here implements only what deploy/ uses (resources, strategic-merge `patches` by path, `images`)
and refuses anything else, so a new kustomize feature in deploy/ fails loudly instead of being ignored.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("gpu", "cpu")

# Variables that are not Settings fields but that the deployment files may set on purpose.
EXTRA_ENV = frozenset(
    {
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_HUB_DISABLE_TELEMETRY",
        "HF_TOKEN",
        "CUDA_VISIBLE_DEVICES",
        "PYTORCH_CUDA_ALLOC_CONF",
        "OMP_WAIT_POLICY",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "XDG_CACHE_HOME",
        "TRITON_CACHE_DIR",
        "PATH",
    }
)
# Build-stage-only variables of the Dockerfile.
BUILD_ENV = frozenset({"PIP_DISABLE_PIP_VERSION_CHECK", "PIP_NO_CACHE_DIR"})


def tool(name: str) -> str | None:
    """A binary from the venv (dev extras install hadolint, shellcheck, kubectl there) or from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def required_tool(name: str, package: str, why: str = "") -> str:
    """tool(name), or skip the test with one line when the dev extras did not install it."""
    path = tool(name)
    if path is None:
        pytest.skip(f"{name} not installed (pip install {package}{', in the dev extras' if not why else ''}){why}")
    return path


# ---- Settings env names ----


def field_env_names() -> dict[str, list[str]]:
    """Field name -> the env names that set it, canonical (HUGLLAMA_...) first."""
    out: dict[str, list[str]] = {}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            out[name] = [c for c in alias.choices if isinstance(c, str)]
        elif isinstance(alias, str):
            out[name] = [alias]
        else:
            out[name] = [f"HUGLLAMA_{name.upper()}"]
    return out


def settings_env_names() -> set[str]:
    return {n for names in field_env_names().values() for n in names}


def env_to_field() -> dict[str, str]:
    return {env: field for field, names in field_env_names().items() for env in names}


# ---- env files ----


@dataclass(frozen=True)
class EnvLine:
    key: str
    value: str
    active: bool
    lineno: int


_ACTIVE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_COMMENTED = re.compile(r"^#\s*([A-Z_][A-Z0-9_]*)=(.*)$")


def parse_env_file(path: Path) -> list[EnvLine]:
    """KEY=value lines, and `# KEY=value` lines (documented, not set). Other lines must be comments or blank."""
    out: list[EnvLine] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if m := _ACTIVE.match(line):
            out.append(EnvLine(m.group(1), m.group(2), True, lineno))
        elif m := _COMMENTED.match(line):
            out.append(EnvLine(m.group(1), m.group(2), False, lineno))
        elif not line.startswith("#"):
            raise ValueError(f"{path}:{lineno}: not KEY=value or a comment: {raw!r}")
    return out


# ---- YAML / kustomize ----


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# patchMergeKey of the lists the overlays touch; every other list is replaced, as in Kubernetes.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "envFrom": None,
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


def strategic_merge(base: Any, patch: Any, field: str | None = None) -> Any:
    """Strategic-merge `patch` into `base` for the cases deploy/ uses (maps merge, keyed lists merge by key)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    merge_key = _MERGE_KEYS.get(field or "")
    if isinstance(base, list) and isinstance(patch, list) and merge_key:
        merged = list(base)
        for item in patch:
            at = next((i for i, b in enumerate(merged) if b.get(merge_key) == item.get(merge_key)), None)
            if at is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[at] = strategic_merge(merged[at], item)
        return merged
    return copy.deepcopy(patch)


def resource_id(doc: dict[str, Any]) -> tuple[str, str]:
    return str(doc["kind"]), str(doc["metadata"]["name"])


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [doc["spec"]["template"]["spec"]]
    return []


def _set_image(image: str, rule: dict[str, Any]) -> str:
    name, _, tag = image.partition(":")
    if name != rule["name"]:
        return image
    name = rule.get("newName", name)
    tag = str(rule.get("newTag", tag))
    return f"{name}:{tag}" if tag else name


def build_kustomization(directory: Path, extra_patches: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """`kustomize build` for the subset deploy/ uses; `extra_patches` apply like more `patches:` entries."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(spec) - {"apiVersion", "kind", "resources", "patches", "images"}
    if unsupported:
        raise ValueError(f"{directory}: tests/deploy/support.py does not implement {sorted(unsupported)}")
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        docs += build_kustomization(path) if path.is_dir() else load_docs(path)
    patch_paths = []
    for patch in spec.get("patches") or []:
        if set(patch) != {"path"}:
            raise ValueError(f"{directory}: only `patches: - path: <strategic merge file>` is implemented")
        patch_paths.append(directory / patch["path"])
    for path in [*patch_paths, *extra_patches]:
        for patch_doc in load_docs(path):
            rid = resource_id(patch_doc)
            at = [i for i, d in enumerate(docs) if resource_id(d) == rid]
            if len(at) != 1:
                raise ValueError(f"{path}: patch target {rid} matches {len(at)} resources")
            docs[at[0]] = strategic_merge(docs[at[0]], patch_doc)
    for rule in spec.get("images") or []:
        for doc in docs:
            for pod in pod_specs(doc):
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    container["image"] = _set_image(container["image"], rule)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```ya?ml\n(.*?)```", markdown, flags=re.S)


# ---- Dockerfile ----


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case
    args: str
    stage: int  # index of the FROM it belongs to


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    stage = -1
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        text = (buffer + line).strip()
        buffer = ""
        name, _, args = text.partition(" ")
        if name.upper() == "FROM":
            stage += 1
        out.append(Instruction(name.upper(), args.strip(), stage))
    return out


def exec_form(args: str) -> list[str]:
    """JSON exec form, or the shell form split like a shell would."""
    text = args.strip()
    if text.startswith("["):
        return list(yaml.safe_load(text))
    return shlex.split(text)


def env_pairs(args: str) -> dict[str, str]:
    """ENV key=value pairs (the modern form)."""
    out = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        if not sep:
            raise ValueError(f"ENV without '=': {args!r}")
        out[key] = value
    return out


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `*` and `?` stay within one path part, `**` spans any number of parts."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(rel_path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore `patterns` exclude `rel_path` (last match wins; a match on a parent counts)."""
    parts = rel_path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _ignore_regex((pattern[1:] if negate else pattern).strip("/"))
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def image_files(instructions: list[Instruction]) -> dict[str, str]:
    """Build-context file -> its path in the final image, from the last stage's COPY lines (not COPY --from)."""
    last = max(i.stage for i in instructions)
    workdir = "/"
    out: dict[str, str] = {}
    for ins in instructions:
        if ins.stage != last:
            continue
        if ins.name == "WORKDIR":
            workdir = ins.args if ins.args.startswith("/") else f"{workdir.rstrip('/')}/{ins.args}"
        if ins.name != "COPY":
            continue
        tokens = shlex.split(ins.args)
        if any(t.startswith("--from") for t in tokens):
            continue
        paths = [t for t in tokens if not t.startswith("--")]
        *sources, dest = paths
        if not dest.startswith("/"):
            dest = f"{workdir.rstrip('/')}/{dest.removeprefix('./')}"
        for source in sources:
            target = f"{dest.rstrip('/')}/{Path(source).name}" if dest.endswith("/") or len(sources) > 1 else dest
            out[source] = target
    return out


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Every build-context path any COPY/ADD reads (all stages)."""
    out = []
    for ins in instructions:
        if ins.name not in ("COPY", "ADD"):
            continue
        tokens = shlex.split(ins.args)
        if any(t.startswith("--from") for t in tokens):
            continue
        out += [t for t in tokens if not t.startswith("--")][:-1]
    return out
