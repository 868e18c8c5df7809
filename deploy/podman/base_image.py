"""The image's base, made here from Debian's packages since no container registry is reachable.

mmdebstrap writes a minimal Debian root file system (Python 3.11, as on the host, so the host's
wheels fit) and `podman import` turns it into an image. Both are kept under a key made of the
mmdebstrap arguments: the tarball in the cache directory, the image in podman's store.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Documentation and translations are of no use in a server image; copyright files stay.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
# Merged /usr set up by symlinks, as debootstrap does, with the usr-is-merged package: otherwise
# bookworm's init-system-helpers pulls in the usrmerge converter, and Perl with it (47 MB).
MERGED_USR_HOOK = "/usr/share/mmdebstrap/hooks/merged-usr"
# `podman import` sets no environment at all.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPOSITORY = "localhost/imdb-sentiment-base"


def mmdebstrap_arguments(tarball: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        f"--hook-dir={MERGED_USR_HOOK}",
        SUITE,
        str(tarball),
    ]


def key() -> str:
    """Changes whenever the root file system would: its mmdebstrap arguments and the PATH."""
    text = "\n".join(mmdebstrap_arguments(Path("rootfs.tar")) + [PATH])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure(podman: list[str], cache: Path) -> str:
    """The base image's name, importing (and first making) its root file system if needed."""
    name = f"{REPOSITORY}:{SUITE}-{key()}"
    if subprocess.run([*podman, "image", "exists", name]).returncode == 0:
        print(f"base image: {name} (cached)", flush=True)
        return name
    tarball = cache / f"rootfs-{SUITE}-{key()}.tar"
    if not tarball.is_file():
        if shutil.which("mmdebstrap") is None:
            raise SystemExit("base image: mmdebstrap is missing (apt-get install mmdebstrap)")
        cache.mkdir(parents=True, exist_ok=True)
        print(f"base image: mmdebstrap {SUITE} into {tarball}", flush=True)
        with tempfile.TemporaryDirectory(prefix=".rootfs-", dir=cache) as scratch:
            partial = Path(scratch) / tarball.name
            subprocess.run(mmdebstrap_arguments(partial), check=True)
            partial.rename(tarball)
    print(f"base image: importing {tarball} as {name}", flush=True)
    subprocess.run(
        [*podman, "import", "--quiet", "--change", f"ENV PATH={PATH}", str(tarball), name],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return name
