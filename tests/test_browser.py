"""The demo page end to end in real headless Chromium (Debian's), driven by Playwright.

Playwright's own browser download cannot run here, so it launches
/usr/bin/chromium (`apt-get install chromium`; .ci/run does). Screenshots go
to tests/artifacts/ (git-ignored): browser-desktop.png and browser-phone.png.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.test_http import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
# Headless and quiet: no GPU, no sandbox (CI runs as root), no calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not installed at /usr/bin/chromium "
    "(apt-get install chromium; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def base_url(start_server) -> str:
    with start_server(http_port=free_port()) as running:
        yield f"http://127.0.0.1:{running.server.http_api.port}"


@pytest.fixture
def page(base_url):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1024, "height": 800})
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def server_answer(base_url: str, review: str) -> dict:
    """What POST /predict says of `review`: what the page must show."""
    request = urllib.request.Request(
        f"{base_url}/predict",
        data=json.dumps({"review": review}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def expect_result_for(page: Page, base_url: str) -> None:
    """Checks the shown label, score and bar against the server's answer for the box's text."""
    answer = server_answer(base_url, page.get_by_label("Movie review").input_value())
    label = "Positive Review" if answer["sentiment"] == "Positive" else "Negative Review"
    expect(page.locator("#result-label")).to_have_text(label)
    expect(page.locator("#result-score")).to_contain_text(f"{answer['score']:.3f}")
    width = page.locator("#result-bar").evaluate("bar => bar.style.width")
    assert float(width.rstrip("%")) == pytest.approx(100 * answer["score"], abs=0.06)
    expect(page.locator("#error")).to_be_hidden()


def test_the_page_analyzes_reviews_and_shows_errors(page, base_url):
    requested: list[str] = []
    console_errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base_url}/")
    expect(page).to_have_title("IMDB Sentiment Analyzer")
    review_box = page.get_by_label("Movie review")

    # Type a review and click Analyze.
    review_box.press_sequentially("A wonderful, moving film. I loved it!")
    page.get_by_role("button", name="Analyze").click()
    expect(page.locator("#result")).to_be_visible()
    expect_result_for(page, base_url)

    # The example buttons fill the box and analyze it.
    page.get_by_role("button", name="Try Positive Example").click()
    expect(review_box).not_to_have_value("A wonderful, moving film. I loved it!")
    expect_result_for(page, base_url)
    positive_text = review_box.input_value()
    page.get_by_role("button", name="Try Negative Example").click()
    expect(review_box).not_to_have_value(positive_text)
    expect_result_for(page, base_url)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "browser-desktop.png", full_page=True)

    # A review the server refuses: its error message is shown, the result is not.
    review_box.fill("!!! ???")
    page.get_by_role("button", name="Analyze").click()
    error = page.get_by_role("alert")
    expect(error).to_be_visible()
    expect(error).to_contain_text("review 0 has no words")
    expect(error).to_contain_text("HTTP 400")
    expect(page.locator("#result")).to_be_hidden()
    page.screenshot(path=ARTIFACTS / "browser-error.png", full_page=True)

    # Clear empties the box and hides the result and the error.
    page.get_by_role("button", name="Clear").click()
    expect(review_box).to_have_value("")
    expect(page.locator("#result")).to_be_hidden()
    expect(error).to_be_hidden()

    # Nothing but this server was asked for anything (no CDN), and the page logged no error.
    assert all(url.startswith(base_url) for url in requested), requested
    assert not [m for m in console_errors if "400" not in m], console_errors


def test_the_page_works_from_the_keyboard(page, base_url):
    page.goto(f"{base_url}/")
    page.keyboard.press("Tab")  # the text box comes first
    assert page.evaluate("document.activeElement.id") == "review"
    page.keyboard.type("A dull, boring waste of time.")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#result")).to_be_visible()
    expect_result_for(page, base_url)

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Analyze"
    # A keyboard-focused button shows a focus ring.
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    for _ in range(3):  # Analyze -> Try Positive -> Try Negative -> Clear
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Clear"
    page.keyboard.press("Enter")
    expect(page.get_by_label("Movie review")).to_have_value("")
    expect(page.locator("#result")).to_be_hidden()


def test_the_page_fits_a_phone_width_screen(page, base_url):
    page.set_viewport_size({"width": 375, "height": 812})
    page.goto(f"{base_url}/")
    page.get_by_role("button", name="Try Positive Example").click()
    expect(page.locator("#result")).to_be_visible()
    expect_result_for(page, base_url)
    # No sideways scrolling, and every button is on screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    for name in ("Analyze", "Try Positive Example", "Try Negative Example", "Clear"):
        box = page.get_by_role("button", name=name).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "browser-phone.png", full_page=True)


def explain_answer(base_url: str, review: str) -> dict:
    """What POST /explain says of `review`: the shading the page must show."""
    request = urllib.request.Request(
        f"{base_url}/explain",
        data=json.dumps({"review": review}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_the_page_shades_each_word_by_its_attribution(page, base_url):
    review = "Loved it!<br /><br />Brilliant, moving… but the plot? Awful — zzqx 😀 (really)."
    page.goto(f"{base_url}/")
    page.get_by_label("Movie review").fill(review)
    page.get_by_role("button", name="Analyze").click()
    explanation = page.locator("#explanation")
    expect(explanation).to_be_visible()
    expect(explanation.get_by_role("heading")).to_have_text("Why this score")
    text = page.locator("#explanation-text")
    # The review is shown as typed: markup, punctuation and emoji included, in order.
    expect(text).to_have_text(review)
    answer = explain_answer(base_url, review)
    words = text.locator(".word")
    expect(words).to_have_count(len(answer["words"]))
    shown = words.evaluate_all(
        "spans => spans.map(s => [s.textContent, s.dataset.status, s.className,"
        " s.style.backgroundColor])"
    )
    for (word_text, status, classes, colour), word in zip(shown, answer["words"], strict=True):
        assert word_text == "".join(list(review)[word["start"] : word["end"]])
        assert status == word["status"]
        if word["attribution"] is None:
            assert "unseen" in classes and colour == ""
        else:
            side = "toward-positive" if word["attribution"] >= 0 else "toward-negative"
            assert side in classes and colour.startswith("rgba(")
    assert [s for _, s, _, _ in shown].count("removed") == 2  # "—" and "😀"
    assert "out_of_vocabulary" in [s for _, s, _, _ in shown]  # "zzqx"
    strongest = text.locator(".word.strongest")
    expect(strongest).to_have_count(3)
    expect(page.locator(".legend")).to_contain_text("pushed towards Positive")
    expect(page.locator(".legend")).to_contain_text("never reached the model")
    expect(page.locator("#explanation-method")).to_contain_text("Integrated gradients")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "browser-explain.png", full_page=True)

    # A refused review hides the explanation with the result; Clear hides it too.
    page.get_by_label("Movie review").fill("!!!")
    page.get_by_role("button", name="Analyze").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(explanation).to_be_hidden()
    page.get_by_label("Movie review").fill("A fine film")
    page.get_by_role("button", name="Analyze").click()
    expect(explanation).to_be_visible()
    page.get_by_role("button", name="Clear").click()
    expect(explanation).to_be_hidden()
