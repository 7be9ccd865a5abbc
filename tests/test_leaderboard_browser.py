"""The generated leaderboard page in a real headless Chromium (selenium + system chromedriver).

Run with ``pytest -m browser``; needs the Debian packages ``chromium`` and
``chromium-driver`` (``.ci/install_browser.sh``). Set ``FEDNLP_SCREENSHOT``
to keep the screenshot somewhere else than the test's tmp dir.
"""
from __future__ import annotations

import base64
import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
from test_leaderboard import make_record, standard_records, write_record

from fednlp_bench.leaderboard import build

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs /usr/bin/chromium and /usr/bin/chromedriver (run .ci/install_browser.sh)",
    ),
]

XSS_ALERT = "<script>alert(1)</script>"
XSS_FLAG = "<script>window.__xss = 1</script>"
XSS_DATASET = '"><img src=x onerror="window.__xss=2">'


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass


@pytest.fixture
def site(tmp_path):
    """Build a leaderboard in tmp and serve it on 127.0.0.1 (random free port)."""
    out = tmp_path / "site"
    results = out / "results"
    for rec in standard_records():
        write_record(results, rec)
    for seed, v in enumerate([0.84, 0.86]):
        write_record(results, make_record(algorithm="scaffold", seed=seed, value=v))
    flagged = make_record(dataset="agnews", algorithm="fedavg", value=0.6)
    flagged["metrics"]["failed_clients"] = [{"round": 2, "client": c, "reason": "RuntimeError: boom"} for c in (1, 3)]
    flagged["algorithm"]["deviations"] = ["clients use adamw; the paper's analysis assumes sgd"]
    write_record(results, flagged)
    write_record(results, make_record(dataset="agnews", algorithm="centralized", value=0.7))
    write_record(results, make_record(algorithm=XSS_ALERT, dataset=XSS_DATASET, value=0.5), "xss1.json")
    write_record(results, make_record(algorithm=XSS_FLAG, dataset=XSS_DATASET, value=0.4), "xss2.json")
    report = build([results], out)
    assert report.ok and report.n_tables == 3

    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def driver(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs the selenium package")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1440,900", "--hide-scrollbars",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _board(drv, dataset: str):
    """The table section of ``dataset`` (compared as an attribute value, not a selector)."""
    (board,) = [s for s in drv.find_elements("css selector", "section.board")
                if s.get_attribute("data-dataset") == dataset]
    return board


def _algorithms(board) -> list[str]:
    return [th.text for th in board.find_elements("css selector", "tbody tr th.algorithm .name")]


def _header(board, text: str):
    for th in board.find_elements("css selector", "thead tr:last-child th"):
        if th.text.startswith(text):
            return th
    raise AssertionError(f"no header {text!r}")


def _wait_loaded(driver) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _full_page(driver, path: Path) -> None:
    driver.execute_script("document.querySelectorAll('img').forEach(function (i) { i.loading = 'eager'; })")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "return Array.prototype.every.call(document.images, function (i) { return i.complete; })"))
    full = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "format": "png"})
    path.write_bytes(base64.b64decode(full["data"]))


def test_page_in_headless_chromium(site, driver, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(site)
    _wait_loaded(driver)

    # Nothing from a record executed: no alert, no flag, the names render as text.
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - raises when no alert is open
    assert driver.execute_script("return window.__xss === undefined")
    assert len(driver.find_elements("css selector", "script")) == 1
    xss_names = _algorithms(_board(driver, XSS_DATASET))
    assert sorted(xss_names) == sorted([XSS_ALERT, XSS_FLAG])
    assert XSS_DATASET in driver.find_element("css selector", "select#f-dataset").text

    # The overview renders first, on the first screen: the tc matrix with the reference and FedAvg.
    overview = driver.find_element("css selector", "section.task-ov")
    first_board = driver.find_element("css selector", "section.board")
    assert overview.get_attribute("data-task") == "tc" and overview.is_displayed()
    assert overview.location["y"] < first_board.location["y"]
    assert overview.location["y"] < 900
    matrix = overview.find_element("css selector", "table.matrix")
    assert "centralized" in matrix.text and "fedavg" in matrix.text and "Mean rank" in matrix.text

    # The table renders with the reference first and rows ranked (tie-aware: scaffold and fedavg share 1).
    board = _board(driver, "20news")
    assert board.is_displayed()
    assert _algorithms(board) == ["centralized", "scaffold", "fedavg", "fedprox"]
    ranks = [td.text for td in board.find_elements("css selector", "tbody tr td.rank")]
    # fedprox is significantly below scaffold (paired over seeds 0, 1: d = 0.09, 0.08), not below fedavg
    assert ranks == ["ref", "1=", "1=", "2"]
    first = board.find_element("css selector", "tbody tr")
    assert "ref" in first.get_attribute("class")

    # Sorting: clicking headers reorders rows (reference row stays on top); costs sort cheapest first.
    _header(board, "Algorithm").find_element("tag name", "button").click()
    assert _algorithms(board) == ["centralized", "fedavg", "fedprox", "scaffold"]
    assert _header(board, "Algorithm").get_attribute("aria-sort") == "ascending"
    primary = _header(board, "accuracy").find_element("tag name", "button")
    primary.click()
    assert _algorithms(board) == ["centralized", "scaffold", "fedavg", "fedprox"]
    primary.click()
    assert _algorithms(board) == ["centralized", "fedprox", "fedavg", "scaffold"]
    assert _header(board, "accuracy").get_attribute("aria-sort") == "ascending"
    wall = _header(board, "Wall")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", wall)
    wall.find_element("tag name", "button").click()
    assert wall.get_attribute("aria-sort") == "ascending"  # wall = 10 + seed: fedavg/fedprox 11, scaffold 10.5
    assert _algorithms(board)[1] == "scaffold"

    # The rank and algorithm columns stay put when the table scrolls sideways.
    scroller = board.find_element("css selector", "div.scroll")
    name_cell = board.find_element("css selector", "tbody tr th.algorithm")
    driver.execute_script("arguments[0].scrollLeft = 0", scroller)
    left = driver.execute_script("return arguments[0].getBoundingClientRect().left", name_cell)
    driver.execute_script("arguments[0].scrollLeft = 400", scroller)
    assert driver.execute_script("return arguments[0].scrollLeft", scroller) > 0
    moved = driver.execute_script("return arguments[0].getBoundingClientRect().left", name_cell)
    assert moved == pytest.approx(left, abs=1)
    driver.execute_script("arguments[0].scrollLeft = 0", scroller)

    # Client failures and paper deviations: visible markers inside the algorithm cell, listed under the table.
    agnews = _board(driver, "agnews")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", agnews)
    cell = agnews.find_element("css selector", "tbody tr:not(.ref) th.algorithm")
    flags = cell.find_elements("css selector", "span.flag")
    assert [f.text for f in flags] == ["⚠ 2 failed", "≠ paper setup"]
    box = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", cell)
    for f in flags:
        r = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", f)
        assert f.is_displayed() and r["width"] > 0 and box["left"] - 1 <= r["left"] and r["right"] <= box["right"] + 1
    notes = agnews.find_element("css selector", "ul.row-notes")
    assert notes.is_displayed() and "2 failed client updates (1 of 1 seed)" in notes.text
    assert "seed 0 round 2 client 3: RuntimeError: boom" in notes.text and "assumes sgd" in notes.text

    # Filtering by dataset hides the other tables and their rows.
    Select(driver.find_element("css selector", "select#f-dataset")).select_by_value("agnews")
    assert not board.is_displayed()
    assert not any(r.is_displayed() for r in board.find_elements("css selector", "tbody tr"))
    assert _board(driver, "agnews").is_displayed()
    assert driver.find_element("id", "f-count").text == "1 of 3 tables shown"
    driver.find_element("id", "f-reset").click()
    assert board.is_displayed() and driver.find_element("id", "f-count").text == "3 of 3 tables shown"
    Select(driver.find_element("css selector", "select#f-task")).select_by_value("tc")
    assert overview.is_displayed()
    driver.find_element("id", "f-reset").click()

    # Every image loads (scrolled into view: they are lazy).
    images = driver.find_elements("css selector", "img")
    assert len(images) >= 6  # a convergence curve and a partition heatmap per table
    for img in images:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
        WebDriverWait(driver, 10).until(lambda d, img=img: d.execute_script("return arguments[0].complete", img))
        assert driver.execute_script("return arguments[0].naturalWidth", img) > 0, img.get_attribute("src")

    # No console errors (a CSP violation or a broken resource would show here).
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    assert driver.execute_script("return window.__xss === undefined")

    # Screenshots: the first screen of a 1440x900 laptop, and the whole page.
    driver.execute_script("window.scrollTo(0, 0)")
    _header(board, "accuracy").find_element("tag name", "button").click()  # back to best-first
    driver.execute_script("window.scrollTo(0, 0)")
    shot = Path(os.environ.get("FEDNLP_SCREENSHOT") or tmp_path / "leaderboard.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    _full_page(driver, shot.with_name(shot.stem + "-full.png"))

    # Phone width: the page itself never scrolls sideways (wide tables scroll inside their box).
    driver.set_window_size(390, 844)
    driver.get(site)
    _wait_loaded(driver)
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert driver.find_element("css selector", "section.task-ov").location["y"] < 844
    _full_page(driver, shot.with_name(shot.stem + "-phone-full.png"))
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
