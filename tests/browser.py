"""Open a report in Debian's headless Chromium (driven by Playwright, no downloaded browser) and check it.

Also a command for the README's screenshot: ``python -m tests.browser runs/demo/report.html docs/report.png``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# Flags that keep Chromium off the (closed) network and working as root in a container.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_path() -> str | None:
    """Debian's chromium, or None. With PERSONA_INTERP_REQUIRE_BROWSER=1 (CI) a missing browser is an error."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("PERSONA_INTERP_REQUIRE_BROWSER") == "1":
        raise RuntimeError("PERSONA_INTERP_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install chromium)")
    return found


@dataclass
class PageCheck:
    errors: list[str]  # console errors and uncaught page errors
    plots: int  # Plotly figure containers
    rendered: int  # of those, how many drew their SVG
    pwned: object  # window.__pwned: set only if injected text ran
    generation_rows: int
    filtered_rows: int  # rows still shown after choosing the second filter option (-1: no filter)


def open_report(report: Path, screenshot: Path, width: int = 1280, height: int = 1000) -> PageCheck:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(Path(report).absolute().as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
            plots = page.locator(".js-plotly-plot").count()
            rendered = page.evaluate(
                "Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".filter(p => p.querySelector('.main-svg')).length"
            )
            rows = page.locator("#generations tbody tr").count()
            filtered = -1
            if page.locator("#generation-filter option").count() > 1:
                page.select_option("#generation-filter", index=1)
                filtered = page.locator("#generations tbody tr:visible").count()
                page.select_option("#generation-filter", index=0)
            page.screenshot(path=str(screenshot))
            pwned = page.evaluate("window.__pwned")
            return PageCheck(errors, plots, rendered, pwned, rows, filtered)
        finally:
            browser.close()


if __name__ == "__main__":
    check = open_report(Path(sys.argv[1]), Path(sys.argv[2]))
    print(check)
    sys.exit(1 if check.errors or check.rendered < check.plots else 0)
