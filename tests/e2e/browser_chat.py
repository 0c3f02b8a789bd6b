"""Drives Open WebUI in Debian's chromium with playwright (run by the Open WebUI venv's python, not .venv):
open the UI, pick the model, ask, wait for the streamed answer, screenshot. Prints one JSON line.

usage: browser_chat.py URL MODEL QUESTION EXPECTED SCREENSHOT CHROMIUM
"""

from __future__ import annotations

import json
import sys
import time

from playwright.sync_api import sync_playwright


def main() -> int:
    url, model, question, expected, screenshot, chromium = sys.argv[1:7]
    result: dict[str, object] = {"answer": "", "screenshot": screenshot}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(120_000)
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#chat-input").wait_for()
            # The first visit shows the release notes over the chat.
            notes = page.get_by_text("Okay, Let's Go!")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not notes.count():
                time.sleep(0.25)
            if notes.count():
                notes.click()
            page.locator("#model-selector-model-button").click()
            page.keyboard.type(model)
            page.get_by_role("option").filter(has_text=model).first.click()
            page.locator("#chat-input").click()
            page.keyboard.type(question)
            started = time.monotonic()
            page.keyboard.press("Enter")
            # Streamed: the answer grows in place under the question until Open WebUI announces the end
            # ("Response complete", its screen-reader status line).
            container = page.locator("#chat-container")
            answer, seen = "", []
            while time.monotonic() - started < 240:
                text = container.inner_text()
                answer = text.split(question, 1)[-1] if question in text else ""
                if answer.strip() and (not seen or seen[-1] != answer):
                    seen.append(answer)
                if "Response complete" in text:
                    break
                time.sleep(0.3)
            # More than one distinct partial answer seen: it arrived streamed, not in one piece.
            result["partials"] = len(seen)
            result["expected_seen"] = expected in answer
            result["seconds"] = round(time.monotonic() - started, 1)
            result["answer"] = " ".join(answer.split())
            page.screenshot(path=screenshot)
        finally:
            browser.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
