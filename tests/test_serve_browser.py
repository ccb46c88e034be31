"""The service's page in a real headless Chromium (Debian's chromium and chromedriver, via Selenium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from conftest import DEMO_QUERY as QUERY

pytestmark = pytest.mark.slow  # a real Chromium

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1100,1400")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("SPLADE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing and SPLADE_REQUIRE_BROWSER=1")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_page_searches_and_highlights_why_documents_match(browser, service, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    for _ in range(3):  # warm, so that the timings the page shows (and the README's picture) are warm ones
        httpx.get(service + "/v1/demo/search", params={"query": QUERY, "explain": "true"}, timeout=60)
    browser.get(service + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda driver: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    Select(browser.find_element(By.ID, "index")).select_by_value("demo")
    box = browser.find_element(By.ID, "query")
    box.send_keys(QUERY, Keys.ENTER)
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#results li.hit")))

    hits = browser.find_elements(By.CSS_SELECTOR, "#results li.hit")
    assert len(hits) == 10 and hits[0].get_attribute("data-docid") == "history-01"
    top = hits[0]
    marked = [mark.text.lower() for mark in top.find_elements(By.CSS_SELECTOR, "mark.match")]
    assert "printing" in marked and "books" in marked
    chips = [chip.find_element(By.CSS_SELECTOR, ".term").text for chip in top.find_elements(By.CSS_SELECTOR, ".chip")]
    assert "books" in chips and "print +q+d" in chips  # a literal term and an expansion term
    expansion = top.find_elements(By.CSS_SELECTOR, ".chip.expansion")
    assert expansion and all("+" in chip.text for chip in expansion)
    bars = browser.find_elements(By.CSS_SELECTOR, "#query-chart g.bar")
    labels = [bar.find_element(By.CSS_SELECTOR, "text.label").text for bar in bars]
    assert len(bars) >= 10 and "books" in labels
    assert browser.find_elements(By.CSS_SELECTOR, "#query-chart g.bar.expansion")
    assert not browser.find_element(By.ID, "error").is_displayed()

    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("SPLADE_SCREENSHOT"):  # refresh the README's picture: SPLADE_SCREENSHOT=docs/serve.png
        shutil.copyfile(shot, os.environ["SPLADE_SCREENSHOT"])


def test_page_shows_errors_from_the_api(browser, service):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(service + "/?index=bare&q=" + "x%20" * 3000)  # longer than the service accepts
    wait = WebDriverWait(browser, 60)
    wait.until(lambda driver: driver.find_element(By.ID, "error").is_displayed())
    assert "query:" in browser.find_element(By.ID, "error").text
