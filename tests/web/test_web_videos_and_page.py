"""Videos through the web tier into the daemon's path, and the page for people in a real browser
(Debian's headless Chromium driven by Selenium): a photo and a course clip uploaded through the
page, their people seen on it, and a screenshot of it."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from bench.web_harness import REPO, post_file, request, web_tier, write_configs
from localcloud.cloud import LocalCloud

CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def configs(web_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_configs(web_cloud, tmp_path_factory.mktemp("web-videos"))


@contextlib.contextmanager
def daemon(cloud: LocalCloud, web_config: Path) -> Iterator[Path]:
    """The real daemon on the web tier's daemon config; yields its log file."""
    log_path = web_config.parent / "daemon.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "openstack_handler", "run", "--config",
             str(web_config.parent / "daemon.toml"), "--log-format", "json"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ,
                                                                 **cloud.client_env()})
        try:
            yield log_path
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]


def _wait_for_result(url: str, key: str, timeout_s: float = 90.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = request(url, "GET", f"/videos/{key}", headers={"Accept": "application/json"})
        if answer.status == 200:
            return answer.json()
        assert answer.status == 404, answer.text
        time.sleep(0.5)
    raise AssertionError(f"no result for {key} within {timeout_s} s")


def test_a_video_is_queued_for_the_daemon_and_its_result_read_back(
        web_cloud: LocalCloud, configs: Path, course_data: Path,
        frames: list[tuple[str, bytes, str]]) -> None:
    video = (course_data / "videos" / "test_4.mp4").read_bytes()
    with web_tier(web_cloud, configs) as web:
        # GIVEN a photo (answered by the web tier) and a video (left for the daemon)
        assert post_file(web.url, frames[0][0], frames[0][1]).status == 200
        posted = post_file(web.url, "class clip.mp4", video, path="/videos",
                           accept="application/json")
        assert posted.status == 202
        key = posted.json()["key"]
        assert key == "class_clip.mp4" and posted.headers["location"] == f"/videos/{key}"
        # THEN before the daemon has it: 404 with why, and 404 for a video never uploaded
        before = request(web.url, "GET", f"/videos/{key}", headers={"Accept": "application/json"})
        assert before.status == 404 and before.json()["error"]["type"] == "NotYetRecognised"
        never = request(web.url, "GET", "/videos/nothing.mp4")
        assert never.status == 404 and never.json()["error"]["type"] == "NoSuchVideo"
        # an image on /videos is refused
        assert post_file(web.url, "a.jpg", frames[0][1], path="/videos").status == 400
        # WHEN the daemon runs
        with daemon(web_cloud, configs) as log:
            result = _wait_for_result(web.url, key)
        assert result["people"][0]["name"] == "johnny_dep"
        assert result["csv"].startswith("johnny_dep,computer_science,senior")
        csv = request(web.url, "GET", f"/videos/{key}", headers={"Accept": "text/csv"})
        assert csv.status == 200 and csv.text.startswith("johnny_dep,")
    # AND the photos' events reached the daemon, which left them to the web tier
    assert '"input.image_dropped"' in log.read_text()
    results = configs.parent / "results"
    assert sorted(p.name for p in results.iterdir()) == ["class_clip.csv"]


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1100,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _answered_row(driver, file_name: str, timeout_s: float = 90.0) -> list[str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    row = WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(
        lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, "#results tr.answered")
                        if r.get_attribute("data-file") == file_name), None))
    return [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]


def test_the_page_in_a_real_browser_shows_who_is_in_a_photo_and_a_clip(
        web_cloud: LocalCloud, configs: Path, course_data: Path, tmp_path: Path,
        frames: list[tuple[str, bytes, str]]) -> None:
    from selenium.webdriver.common.by import By

    photo = tmp_path / "obama.jpg"
    photo.write_bytes(frames[7][1])  # test_8: president_obama
    clip = course_data / "videos" / "test_7.mp4"  # morgan_freeman
    with web_tier(web_cloud, configs) as web, daemon(web_cloud, configs):
        driver = _browser()
        try:
            driver.get(web.url)
            assert driver.title == "Face recognition"
            driver.find_element(By.ID, "file").send_keys(str(photo))
            driver.find_element(By.ID, "send").click()
            cells = _answered_row(driver, "obama.jpg")
            assert cells[1:5] == ["recognised", "president_obama", "electrical_engineering",
                                  "senior"]
            driver.find_element(By.ID, "file").send_keys(str(clip))
            driver.find_element(By.ID, "send").click()
            cells = _answered_row(driver, "test_7.mp4")
            assert cells[1:5] == ["recognised", "morgan_freeman", "math", "senior"]
            # the state and the last results are filled in by the page's refresh
            time.sleep(3.5)
            assert "lambda" in driver.find_element(By.ID, "share").text
            recent = driver.find_element(By.ID, "recent").text
            assert "obama.jpg" in recent
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    colours = shot.getcolors(maxcolors=1 << 20) or []
    assert shot.size[0] >= 800 and len(colours) > 50, "the screenshot is blank"
    non_white = sum(n for n, rgb in colours if rgb != (255, 255, 255))
    assert non_white > shot.size[0] * shot.size[1] * 0.02
    (tmp_path / "page.png").write_bytes(png)
    if os.environ.get("WEB_SCREENSHOT"):  # docs/web.png is made this way
        Path(os.environ["WEB_SCREENSHOT"]).write_bytes(png)
