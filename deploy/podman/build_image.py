"""Builds the server's container image with podman, downloading nothing during the build.

    make image
    .venv/bin/python deploy/podman/build_image.py [--tag NAME] [--base IMAGE] [--cache-dir DIR]

Three steps, each cached under a key of its inputs: a Debian base image (base_image.py, unless
--base names one), the wheelhouse (wheelhouse.py; the project's own wheels are rebuilt every
time, in seconds), and `podman build` of the Containerfile with no network, whose layers podman
keeps. The last line printed is the image's name.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import base_image
import wheelhouse

REPOSITORY = Path(__file__).resolve().parents[2]
PODMAN = [str(REPOSITORY / "deploy" / "podman" / "podman")]
IMAGE_NAME = "localhost/imdb-sentiment"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imdb-sentiment"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tag", help=f"image name (default {IMAGE_NAME}:<project version>)")
    parser.add_argument("--base", help="an existing base image instead of the Debian one made here")
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}"
    )
    arguments = parser.parse_args(argv)
    started_s = time.monotonic()

    base = arguments.base or base_image.ensure(PODMAN, arguments.cache_dir)
    house = wheelhouse.build(REPOSITORY, REPOSITORY / "build" / "wheelhouse", arguments.cache_dir)
    version = project_version(house)
    tag = arguments.tag or f"{IMAGE_NAME}:{version}"
    print(f"podman build: {tag} on {base}", flush=True)
    # Our own base is local; one named with --base may come from a registry.
    pull = "--pull=missing" if arguments.base else "--pull=never"
    subprocess.run(
        [*PODMAN, "build", pull, "--network=none", "--layers"]
        + ["--file", str(REPOSITORY / "Containerfile"), "--tag", tag]
        + ["--build-arg", f"BASE={base}", "--build-arg", f"VERSION={version}"]
        + ["--build-arg", f"REVISION={revision()}", str(REPOSITORY)],
        check=True,
    )
    size_bytes = int(
        subprocess.run(
            [*PODMAN, "image", "inspect", "--format", "{{.Size}}", tag],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    elapsed_s = time.monotonic() - started_s
    print(f"built {tag}: {size_bytes / 1e6:.0f} MB in {elapsed_s:.0f} s", flush=True)
    print(tag)
    return 0


def project_version(house: Path) -> str:
    """The server distribution's version, from its wheel's name."""
    (wheel,) = (house / "local").glob("imdb_sentiment_service-*.whl")
    return wheel.name.split("-")[1]


def revision() -> str:
    """The commit, marked -dirty when the tree has changes git would commit."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=normal"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head or 'unknown'}{'-dirty' if dirty else ''}"


if __name__ == "__main__":
    sys.exit(main())
