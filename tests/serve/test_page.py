"""The web page of ``polymodal serve``, driven in headless Chromium against a real server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from polymodal.serve.process import ServiceProcess

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
K = 8  # the page's default number of search results

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs chromium and chromedriver on PATH (Debian: apt-get install chromium "
    "chromium-driver)",
)


def artifacts_dir() -> Path:
    """Where screenshots are kept: $POLYMODAL_TEST_ARTIFACTS, else test-artifacts/."""
    folder = Path(os.environ.get("POLYMODAL_TEST_ARTIFACTS") or ARTIFACTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(served_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("page") / "serve.log"
    index = ("--index", str(served_model.index_dir))  # thumbnails: from the manifest's folder
    with ServiceProcess.start(served_model.model_dir, log, *index) as live:
        yield live


@pytest.fixture
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def loaded_thumbnails(driver) -> list[int] | bool:
    """Each thumbnail's naturalWidth once all K have loaded, else False (for WebDriverWait)."""
    widths = driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-testid=thumbnail]'),"
        " i => i.complete ? i.naturalWidth : 0)"
    )
    return widths if len(widths) == K and all(widths) else False


def test_page_captions_answers_and_searches_an_uploaded_image(served_model, server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(f"{server.url}/")
    wait.until(ready.element_to_be_clickable((By.ID, "run")))
    browser.find_element(By.CSS_SELECTOR, "input[type=file][name=image]").send_keys(
        str(served_model.image)
    )
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".preview img")))
    browser.find_element(By.ID, "field-question").send_keys("what colour is the circle?")
    browser.find_element(By.ID, "run").click()

    caption = wait.until(
        ready.visibility_of_element_located((By.CSS_SELECTOR, "[data-testid=caption]"))
    )
    answer = browser.find_element(By.CSS_SELECTOR, "[data-testid=answer]")
    alternatives = browser.find_elements(By.CSS_SELECTOR, "[data-testid=answer-top] li")
    widths = wait.until(loaded_thumbnails)
    assert caption.text.strip() and answer.text.strip() and alternatives
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-testid=search-result]")) == K
    assert all(width > 0 for width in widths)
    assert not browser.find_element(By.CSS_SELECTOR, "[data-testid=error]").is_displayed()
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 150, 4000))  # the whole page
    screenshot = artifacts_dir() / "serve_page.png"
    assert browser.save_screenshot(str(screenshot))
    with Image.open(screenshot) as shot:
        assert shot.format == "PNG" and shot.width >= 1000 and shot.height >= 800
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # text, bars and thumbnails, not a blank page


def test_page_shows_the_services_error_detail(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(f"{server.url}/")
    wait.until(ready.element_to_be_clickable((By.ID, "run")))
    broken = server.log.with_name("broken.png")
    broken.write_bytes(b"\x89PNG not really")
    browser.find_element(By.CSS_SELECTOR, "input[type=file][name=image]").send_keys(str(broken))
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".preview img")))
    browser.find_element(By.ID, "run").click()
    error = wait.until(
        ready.visibility_of_element_located((By.CSS_SELECTOR, "[data-testid=error]"))
    )
    assert error.text.startswith("422: ") and "image" in error.text


def test_the_api_docs_render_from_the_services_own_files(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server.url}/docs")
    predict = (By.CSS_SELECTOR, ".opblock-post [data-path='/v1/predict']")
    WebDriverWait(browser, 10).until(ready.visibility_of_element_located(predict))
    assert browser.find_element(By.CSS_SELECTOR, ".info .title").text.startswith("polymodal serve")
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)"
    )
    assert f"{server.url}/openapi.json" in fetched
    assert all(url.startswith(f"{server.url}/") for url in fetched), fetched
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
