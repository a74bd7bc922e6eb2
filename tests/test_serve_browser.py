"""`fpdm serve` driven by a real headless Chromium (Debian's `chromium` and `chromium-driver`, which
.ci/run installs): change the budget and k, see the grid change and the counted blocks equal the budget,
ask for an infeasible budget and see the message. Skipped without Chromium, except under CI.

FPDM_SERVE_SCREENSHOT=docs/serve.png also saves a screenshot of the page there (for the README)."""

import os
import shutil
import threading
from pathlib import Path

import pytest

CI = os.environ.get("CI") == "true"


def _need(thing, why):
    if thing is None:
        if CI:
            pytest.fail(f"{why} is missing: .ci/run installs it")
        pytest.skip(f"{why} is not installed")
    return thing


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
    webdriver = _need(webdriver, "selenium (the dev extra)")
    chromium = _need(shutil.which("chromium") or shutil.which("chromium-browser"), "chromium")
    driver_bin = _need(shutil.which("chromedriver"), "chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1150"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page():
    from fpdm.serve.server import make_server

    server = make_server(port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_the_dial_in_a_browser(browser, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 180)
    browser.get(page)

    def shown(budget, steps, old_grid=None):
        def ready(d):
            stats = d.find_element(By.ID, "stats").text
            grid = d.find_element(By.ID, "grid").get_attribute("src")
            return (f"blocks     {budget} counted per sample (budget {budget})" in stats
                    and f"steps      {steps}" in stats and grid.startswith("data:image/png")
                    and grid != old_grid and "done" in d.find_element(By.ID, "message").text)
        wait.until(ready)
        return browser.find_element(By.ID, "grid").get_attribute("src")

    first = shown(120, 40)  # the page samples at once: budget 120, the first feasible k (1, 40 steps)
    budget = browser.find_element(By.ID, "budget")
    budget.clear()
    budget.send_keys("60", Keys.TAB)  # a change event: feasible k refreshed, then sampled
    second = shown(60, 20, first)  # k = 1 again: 60 / (1 + 1 + 1) = 20 steps
    Select(browser.find_element(By.ID, "iters")).select_by_value("4")
    third = shown(60, 10, second)  # 60 / (1 + 4 + 1)
    assert len({first, second, third}) == 3
    assert "DiT" in browser.find_element(By.ID, "dit-title").text
    assert "blocks     60 counted" in browser.find_element(By.ID, "dit-stats").text  # DiT-6: 10 steps
    if os.environ.get("FPDM_SERVE_SCREENSHOT"):
        Path(os.environ["FPDM_SERVE_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(os.environ["FPDM_SERVE_SCREENSHOT"])
    budget.clear()
    budget.send_keys("1", Keys.TAB)
    wait.until(lambda d: "cannot be spent exactly" in d.find_element(By.ID, "message").text)
    assert browser.find_element(By.ID, "grid").get_attribute("src") == third  # nothing was sampled
