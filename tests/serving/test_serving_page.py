"""The drawing page in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against a real server.

A real MNIST test digit is traced on the canvas with mouse strokes (each row of ink one stroke, ten screen pixels
to an MNIST pixel), then a "1" is drawn by hand; the page must show each digit's label. Without a browser the
test skips with its reason. ``IGNITE_LENET_SCREENSHOT=PATH`` also saves a screenshot of the traced digit there
(docs/serve-page.png is made that way).
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
from helpers import ServerProcess

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCALE = 10  # screen pixels per MNIST pixel: the 280x280 canvas holds a 28x28 digit


def ink_runs(image, threshold: int = 128) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Horizontal strokes covering a digit's ink, in canvas pixels: one per run of ink in a row."""
    strokes = []
    for row in range(image.shape[0]):
        inked = image[row] >= threshold
        col = 0
        while col < image.shape[1]:
            if inked[col]:
                start = col
                while col < image.shape[1] and inked[col]:
                    col += 1
                y = row * SCALE + SCALE // 2
                strokes.append(((start * SCALE + SCALE // 2, y), ((col - 1) * SCALE + SCALE // 2, y)))
            col += 1
    return strokes


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no browser: Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def draw(page, strokes) -> None:
    """Mouse strokes on the canvas (canvas pixels); waits for the page to show the answer to the last one."""
    box = page.locator("#canvas").bounding_box()
    before = int(page.evaluate("document.body.dataset.answers"))
    for (x0, y0), (x1, y1) in strokes:
        page.mouse.move(box["x"] + x0, box["y"] + y0)
        page.mouse.down()
        page.mouse.move(box["x"] + x1, box["y"] + y1, steps=max(2, abs(x1 - x0) // 10 + abs(y1 - y0) // 10))
        page.mouse.up()
    # polled with evaluate (CDP): wait_for_function would eval a string, which the page's CSP rightly forbids
    deadline = time.monotonic() + 30
    while int(page.evaluate("document.body.dataset.answers")) < before + len(strokes):
        assert time.monotonic() < deadline, "the page showed no answer to the last stroke within 30 s"
        page.wait_for_timeout(20)


def test_drawing_on_the_page_shows_the_digit(browser, serving_model, sure_digits):
    digit = next((d for d in sure_digits if d.label == 7), sure_digits[0])  # MNIST test image 0 is a 7
    with ServerProcess(serving_model, "--no-access-log") as server:
        page = browser.new_page(viewport={"width": 720, "height": 540})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(server.url + "/")
        assert page.locator("#canvas").count() == 1 and page.locator("#prediction").count() == 1

        draw(page, ink_runs(digit.image))
        assert page.locator("#prediction").inner_text().strip() == str(digit.label)
        bars = page.locator("#probabilities li")
        assert bars.count() == 10 and "top" in (bars.nth(digit.label).get_attribute("class") or "")
        if os.environ.get("IGNITE_LENET_SCREENSHOT"):
            page.screenshot(path=os.environ["IGNITE_LENET_SCREENSHOT"])

        page.click("#clear")
        assert page.locator("#prediction").inner_text().strip() == ""
        draw(page, [((140, 40), (136, 240))])  # a "1", one stroke top to bottom
        assert page.locator("#prediction").inner_text().strip() == "1"
        assert not errors, errors
        page.close()
