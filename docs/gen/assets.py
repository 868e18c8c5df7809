"""Images the code already makes, added to the site where they are: no copies in docs/.

- the benchmark's plots (reports/bench/*.png, written by `make bench`) and the soak's
  memory curve (reports/soak/*.svg, `make soak-long`);
- the shipped model's report figures (models/imdb-lstm/<newest>/report/*.png, `make eval`);
- the demo page's screenshots (tests/artifacts/browser-*.png, written by
  tests/test_browser.py, which `make test` runs); when they are missing and Chromium is
  installed, that test is run to make them.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from docs.gen.model_ref import shipped

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / "artifacts"
SCREENSHOT_NAMES = ("browser-desktop.png", "browser-explain.png", "browser-phone.png")
CHROMIUM = Path("/usr/bin/chromium")
log = logging.getLogger("mkdocs.hooks.gen")
_tried_screenshots = False


def _make_screenshots() -> None:
    """Runs the browser test once per process, only when a screenshot is missing."""
    global _tried_screenshots
    if _tried_screenshots or all((SCREENSHOTS / n).is_file() for n in SCREENSHOT_NAMES):
        return
    _tried_screenshots = True
    if not CHROMIUM.exists():
        log.info("no %s: the demo page's screenshots are left out", CHROMIUM)
        return
    log.info("making the demo page's screenshots: pytest tests/test_browser.py (about a minute)")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_browser.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        log.info("tests/test_browser.py failed, so no screenshots:\n%s", done.stdout[-2000:])


def images() -> dict[str, Path]:
    """Site path (under img/) -> the file the code wrote."""
    _make_screenshots()
    found: dict[str, Path] = {}
    for folder, pattern in (("bench", "reports/bench/*.png"), ("soak", "reports/soak/*.svg")):
        for path in sorted(ROOT.glob(pattern)):
            found[f"img/{folder}/{path.name}"] = path
    for path in sorted((shipped().version_dir / "report").glob("*.png")):
        found[f"img/model/{path.name}"] = path
    for name in SCREENSHOT_NAMES:
        if (SCREENSHOTS / name).is_file():
            found[f"img/demo/{name}"] = SCREENSHOTS / name
    return found


def image_markdown(argument: str) -> str:
    """`folder/name.png Alt text` -> the image, or a note saying how to make it."""
    src, _, alt = argument.partition(" ")
    if f"img/{src}" in images():
        return f"![{alt}](img/{src})"
    how = (
        "`make test` (tests/test_browser.py, with Chromium)"
        if src.startswith("demo/")
        else "the command that writes it"
    )
    return (
        f'!!! note "Image not made on this machine"\n\n    *{alt}*: run {how}, then build again.\n'
    )
