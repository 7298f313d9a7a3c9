"""The playground page in Debian's headless chromium, driven by Selenium: type, Generate, watch
the text stream in, Stop, and the screenplay view of Fountain-shaped text."""

import os
import re
import time
from pathlib import Path

import pytest
from servers import Server, ascii_run

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCENE = "INT. LIGHTHOUSE - NIGHT\n\nANNA climbs the stairs.\n\nANNA\n(quietly)\nthe lamp is dark.\n\n"


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and DRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1300,1000",
        "--disable-gpu",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(DRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(condition, timeout=20.0, shows=lambda: ""):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out; the page shows: {shows()}"
        time.sleep(0.05)


def test_generate_stream_stop_and_screenplay(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with Server(ascii_run(tmp_path / "ascii"), "--max-tokens", "1000000", "--quiet") as server:
        browser.get(server.url + "/")
        find = lambda i: browser.find_element(By.ID, i)  # noqa: E731
        wait_for(lambda: Select(find("model")).options)
        assert Select(find("model")).first_selected_option.text == server.models[0]
        find("prompt").send_keys("ANNA")
        find("length").clear()
        find("length").send_keys("1000000")
        find("generate").click()
        output = find("output")
        wait_for(lambda: len(output.text) > 40)
        first = len(output.text)
        wait_for(lambda: len(output.text) > first + 200)  # still streaming in
        find("stop-button").click()
        wait_for(lambda: find("status").text == "stopped", shows=lambda: find("status").text)
        stopped = len(output.text)
        time.sleep(0.5)
        assert len(output.text) == stopped < 1_000_000 and output.text.startswith("ANNA")
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert fetched and all(url.startswith(server.url) for url in fetched)  # nothing from the network
        assert int(re.match(r"(\d+) chars/s", find("rate").text).group(1)) > 0
        wait_for(lambda: _idle(server))  # the aborted stream freed its row
        shot = Path(os.environ.get("CHARRNN_SCREENSHOTS", tmp_path))
        shot.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(shot / "playground-text.png"))

        for field, value in (("prompt", SCENE), ("length", "120"), ("seed", "3")):
            browser.execute_script("arguments[0].value = arguments[1]", find(field), value)
        find("show-screenplay").click()
        find("generate").click()
        wait_for(lambda: find("status").text.startswith("done"), shows=lambda: find("status").text)
        page = find("screenplay")
        assert page.find_element(By.CSS_SELECTOR, ".scene").text == "INT. LIGHTHOUSE - NIGHT"
        cue = page.find_element(By.CSS_SELECTOR, ".cue")
        assert cue.text == "ANNA" and cue.value_of_css_property("text-align") == "center"
        assert page.find_element(By.CSS_SELECTOR, ".paren").text == "(quietly)"
        dialogue = page.find_element(By.CSS_SELECTOR, ".dialogue")
        assert dialogue.text == "the lamp is dark." and dialogue.location["x"] > cue.location["x"] - 1
        assert dialogue.size["width"] < page.size["width"] * 0.6
        browser.save_screenshot(str(shot / "playground-screenplay.png"))


def _idle(server) -> bool:
    import httpx

    health = httpx.get(f"{server.url}/health").json()
    return health["active_requests"] == 0 and health["active_rows"] == 0


def test_page_fetches_nothing_from_the_network(trained_run):
    import httpx

    with Server(trained_run, "--quiet") as server:
        page = httpx.get(server.url + "/").text
    assert "<html" in page and not re.search(r"(src|href)=\"(https?:)?//", page) and "@import" not in page
