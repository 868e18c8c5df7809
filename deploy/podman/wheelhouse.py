"""The wheelhouse the image installs from, built on the host so the image build needs no network.

    build/wheelhouse/
      local/            this repository's own distributions, built with --no-deps
      requirements.txt  their third-party requirements, tensorflow swapped for tensorflow-cpu
      deps/             wheels of those requirements and everything they need

tensorflow-cpu is the same TensorFlow release as the `tensorflow` wheel, with the same Python
package and the same requirements, built without the CUDA kernels: about a third of the size
installed. Nothing in pip's metadata can say "tensorflow or tensorflow-cpu", so the image
installs requirements.txt, then the local wheels with --no-deps, and its build checks that
`tensorflow` is the one requirement pip reports unmet. The versions are pinned to the ones in
the host's .venv, which the test suite ran against. deps/ is cached under a key made of
requirements.txt and those pins, so it is downloaded again only when they change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# The stand-in and the distribution it stands in for (same version, same `import tensorflow`).
SWAPPED = {"tensorflow": "tensorflow-cpu"}
# Wheels say when they were built; a fixed date makes an unchanged tree give the same bytes,
# so the image's layer of local wheels stays cached until the code changes.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip file can hold


def local_projects(repository: Path) -> list[Path]:
    """The repository's own distributions: the client (once it is its own) before the server."""
    client = repository / "client"
    return [p for p in (client, repository) if (p / "pyproject.toml").is_file()]


def build(repository: Path, out: Path, cache: Path, python: str = sys.executable) -> Path:
    """Fills `out` (emptied first) with local/, requirements.txt and deps/; returns `out`."""
    if out.exists():
        shutil.rmtree(out)
    (out / "local").mkdir(parents=True)
    local_wheels = build_local_wheels(repository, out / "local", python)
    requirements = third_party_requirements(local_wheels)
    (out / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    constraints = pinned_versions(python)
    deps = cached_dependency_wheels(requirements, constraints, cache, python)
    link_tree(deps, out / "deps")
    return out


def build_local_wheels(repository: Path, out: Path, python: str) -> list[Path]:
    """Wheels of the working tree as git would commit it: a clean copy of the tracked and
    untracked-but-not-ignored files, so no stale setuptools build/ directory leaks in."""
    with tempfile.TemporaryDirectory(prefix="wheelhouse-src-") as scratch:
        source = Path(scratch)
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repository,
            check=True,
            capture_output=True,
        ).stdout.split(b"\0")
        for name in filter(None, listed):
            path = repository / os.fsdecode(name)
            if path.is_file():  # a file deleted but not yet committed is listed too
                (source / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, source / os.fsdecode(name))
        projects = [source / p.relative_to(repository) for p in local_projects(repository)]
        environment = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        subprocess.run(
            [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out)]
            + [str(p) for p in projects],
            check=True,
            env=environment,
        )
    return sorted(out.glob("*.whl"))


def third_party_requirements(wheels: list[Path]) -> list[str]:
    """Every requirement of the local wheels for this Python, less the local distributions
    themselves, with tensorflow swapped for tensorflow-cpu (same version specifier)."""
    metadata = [_metadata(wheel) for wheel in wheels]
    local_names = {canonicalize_name(m["Name"]) for m in metadata}
    environment = default_environment()  # the host's; the image's Python is the same 3.11
    requirements: dict[str, Requirement] = {}
    for entry in metadata:
        for text in entry.get_all("Requires-Dist") or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({**environment, "extra": ""}):
                continue  # an optional extra, or another platform's
            name = canonicalize_name(requirement.name)
            if name in local_names:
                continue
            requirement.name = SWAPPED.get(name, requirement.name)
            requirement.marker = None
            key = canonicalize_name(requirement.name)
            if key in requirements and str(requirements[key]) != str(requirement):
                raise ValueError(f"conflicting requirements: {requirements[key]} and {requirement}")
            requirements[key] = requirement
    return sorted(str(r) for r in requirements.values())


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def pinned_versions(python: str) -> list[str]:
    """`name==version` for every distribution in the host's environment (the tested versions),
    plus the stand-in pinned to the version of what it stands in for."""
    frozen = subprocess.run(
        [python, "-m", "pip", "freeze", "--exclude-editable", "--all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    pins = [line for line in frozen if "==" in line and not line.startswith("-e")]
    versions = {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in pins}
    for original, stand_in in SWAPPED.items():
        if original in versions:
            pins.append(f"{stand_in}=={versions[original]}")
    return sorted(pins)


def cached_dependency_wheels(
    requirements: list[str], constraints: list[str], cache: Path, python: str
) -> Path:
    """A directory of wheels satisfying `requirements` under `constraints`, made once per key."""
    key_text = "\n".join(["requirements:", *requirements, "constraints:", *constraints])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    wheels = cache / f"deps-{key}"
    if wheels.is_dir():
        print(f"wheelhouse: dependency wheels cached in {wheels}", flush=True)
        return wheels
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".deps-{key}-", dir=cache))
    try:
        print(f"wheelhouse: downloading and building dependency wheels into {wheels}", flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints_file:
            constraints_file.write("".join(f"{c}\n" for c in constraints))
            constraints_file.flush()
            subprocess.run(
                [python, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial)]
                + ["--constraint", constraints_file.name, *requirements],
                check=True,
            )
        partial.rename(wheels)  # whole or not at all: a failed run leaves only a hidden partial
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return wheels


def link_tree(source: Path, target: Path) -> None:
    """Hard links (a copy across file systems): the build context gets the wheels for free."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)
