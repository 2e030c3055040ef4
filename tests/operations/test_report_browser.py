"""The HTML report in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``).

The browser is installed by ``scripts/setup-browser`` when missing. Selenium drives it through
``/usr/bin/chromedriver`` given explicitly, so Selenium Manager never downloads anything. Every
page is checked for console errors and for network requests (none but the file itself, ``data:``
and ``blob:``); then: every unit shown with the transcript's own text, clicks seek, the highlight
follows playback, keys step, the table lists all units, a one-hour report is interactive within
seconds. ``test_screenshot`` makes the README's picture (``scripts/report-screenshot``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from client_samples import LONG_ENGLISH, make_alignment
from qwen3_aligner_client import Alignment
from qwen3_aligner_client.report import html_report
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SETUP_BROWSER = ROOT / "scripts" / "setup-browser"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1200,850",
)
LOCAL_SCHEMES = ("data:", "blob:")
HOUR_UNITS = 40_000
INTERACTIVE_LIMIT = 15.0  # seconds for a one-hour report to open and answer a click
SCREENSHOT_ENV = "QWEN3_ALIGNER_SCREENSHOT"  # where test_screenshot also saves its picture
SCREENSHOT_MAX_BYTES = 200_000
RATE = 16000  # Hz


def ensure_browser() -> None:
    """Install chromium and chromedriver with scripts/setup-browser unless they are there."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    done = subprocess.run(
        [str(SETUP_BROWSER)], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"scripts/setup-browser failed:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[WebDriver]:
    """Headless Chromium with console and network logging, on a fresh profile."""
    ensure_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    driver.get("about:blank")  # leave the new-tab page, whose chrome:// loads would be logged
    try:
        yield driver
    finally:
        driver.quit()


def speech_like(alignment: Alignment, rate: int = RATE) -> np.ndarray:
    """A burst of voiced noise during every unit and silence between, so the waveform shows
    where the units are."""
    rng = np.random.default_rng(7)
    wave = np.zeros(int(alignment.duration * rate) + 1, dtype=np.float32)
    for k, word in enumerate(alignment.words):
        a, b = int(word.start * rate), min(int(word.end * rate), len(wave))
        if b <= a:
            continue
        t = np.arange(b - a) / rate
        envelope = np.sin(np.pi * np.arange(b - a) / (b - a))
        voice = np.sin(2 * np.pi * (140 + 15 * (k % 5)) * t) + 0.3 * rng.standard_normal(b - a)
        wave[a:b] = 0.3 * envelope * voice
    return wave


def write_report(path: Path, alignment: Alignment, wave: np.ndarray, rate: int = RATE) -> Path:
    path.write_text(html_report(alignment, wave, rate, title=path.stem), encoding="utf-8")
    return path


def open_report(driver: WebDriver, path: Path, timeout: float = 30.0) -> float:
    """Load the report, wait until its script is done and the audio's length is known.

    Returns the seconds from the navigation to that point. Logs from before are discarded; from
    then on, the time of every seek is recorded for :func:`last_seek`.
    """
    driver.get_log("browser")
    driver.get_log("performance")
    started = time.perf_counter()
    driver.get(path.as_uri())
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script(
            "return document.documentElement.dataset.ready === 'true'"
            " && document.getElementById('audio').readyState >= 1"
        )
    )
    elapsed = time.perf_counter() - started
    driver.execute_script(
        """
        const audio = document.getElementById('audio');
        window.seekTargets = [];
        audio.addEventListener('seeking', () => window.seekTargets.push(audio.currentTime));
        """
    )
    return elapsed


def last_seek(driver: WebDriver) -> float:
    """Where the audio was last sent (playback may have moved on since)."""
    return driver.execute_script("return window.seekTargets.at(-1)")


def seeked_to(driver: WebDriver, seconds: float) -> bool:
    """Whether the last seek went to ``seconds`` (within a millisecond)."""
    last = last_seek(driver)
    return last is not None and abs(last - seconds) < 0.001


def console_problems(driver: WebDriver) -> list[dict[str, Any]]:
    """Console errors and warnings (CSP violations and uncaught exceptions among them)."""
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def requested_urls(driver: WebDriver) -> list[str]:
    """Every URL the page asked for since it was opened (DevTools network events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            params = message["params"]
            urls.append(params.get("request", {}).get("url") or params.get("url", ""))
    return urls


def state(driver: WebDriver) -> dict[str, Any]:
    """The player's time and the highlighted unit(s)."""
    return driver.execute_script(
        """
        const audio = document.getElementById('audio');
        return {
          time: audio.currentTime,
          paused: audio.paused,
          current: Number(document.body.dataset.current),
          highlighted: [...document.querySelectorAll('.u.cur')].map((e) => Number(e.dataset.i)),
        };
        """
    )


def pause_and_settle(driver: WebDriver) -> dict[str, Any]:
    """Pause, let the page handle it, and return :func:`state`."""
    driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const audio = document.getElementById('audio');
        audio.pause();
        requestAnimationFrame(() => requestAnimationFrame(() => done()));
        """
    )
    return state(driver)


def seek(driver: WebDriver, seconds: float) -> dict[str, Any]:
    """Set the audio's time from outside the page's controls, as a media key or scrub would."""
    driver.execute_async_script(
        """
        const [seconds, done] = arguments;
        const audio = document.getElementById('audio');
        audio.addEventListener('seeked', () => requestAnimationFrame(() => done()), {once: true});
        audio.currentTime = seconds;
        """,
        seconds,
    )
    return state(driver)


def expected_unit(alignment: Alignment, seconds: float) -> int:
    """The unit the page should highlight at ``seconds``: the last one started by then."""
    starts = np.maximum.accumulate([w.start for w in alignment.words])
    return int(np.searchsorted(starts, seconds + 0.001, side="right")) - 1


def click_unit(driver: WebDriver, index: int) -> None:
    """Click unit ``index`` in the transcript, scrolled to the bottom of the window so that the
    sticky header does not cover it."""
    unit = driver.find_element(By.CSS_SELECTOR, f'.u[data-i="{index}"]')
    driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", unit)
    unit.click()


@pytest.fixture(scope="module")
def english(tmp_path_factory) -> tuple[Alignment, Path]:
    alignment = make_alignment(LONG_ENGLISH)
    path = tmp_path_factory.mktemp("report") / "english.html"
    return alignment, write_report(path, alignment, speech_like(alignment))


def test_report_loads_offline_without_console_errors(browser, english):
    alignment, path = english
    seconds = open_report(browser, path)
    print(f"\nreport of {len(alignment.words)} units interactive after {seconds:.2f} s")
    playable = "return document.getElementById('audio').canPlayType('audio/mpeg')"
    assert browser.execute_script(playable) in ("probably", "maybe")
    duration = browser.execute_script("return document.getElementById('audio').duration")
    assert abs(duration - alignment.duration) < 0.1
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    assert all(url.startswith(LOCAL_SCHEMES) for url in resources), resources
    urls = requested_urls(browser)
    assert path.as_uri() in urls and any(u.startswith("blob:") for u in urls)
    assert [u for u in urls if u != path.as_uri() and not u.startswith(LOCAL_SCHEMES)] == []
    assert console_problems(browser) == []
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None


def test_every_unit_is_shown_in_the_transcript_with_its_punctuation(browser, english):
    alignment, path = english
    open_report(browser, path)
    units = browser.execute_script(
        "return [...document.querySelectorAll('.u')].map((e) => [e.textContent, e.title])"
    )
    assert [text for text, _ in units] == [w.display for w in alignment.words]
    transcript = browser.execute_script("return document.getElementById('transcript').textContent")
    assert transcript == alignment.text
    first_title = units[0][1]
    assert "0:00.00 \u2013 0:00.30 (0.30 s)" in first_title and "Hello" in first_title
    assert console_problems(browser) == []


def test_clicking_a_unit_plays_from_its_start(browser, english):
    alignment, path = english
    open_report(browser, path)
    for index in (7, 30, 2):
        click_unit(browser, index)
        start = alignment.words[index].start
        # The media element fires 'seeking' from a task of its own, after the click returns.
        WebDriverWait(browser, 5, poll_frequency=0.02).until(
            lambda d, start=start: seeked_to(d, start),
            message=f"no seek to {start} s after clicking unit {index}",
        )
        now = state(browser)
        assert now["highlighted"] == [index]
        assert not now["paused"]
    # It really plays: time moves on and the highlight goes with it.
    WebDriverWait(browser, 10).until(lambda d: state(d)["time"] > alignment.words[3].end)
    settled = pause_and_settle(browser)
    assert settled["highlighted"] == [expected_unit(alignment, settled["time"])]
    assert settled["current"] > 2
    assert console_problems(browser) == []


def test_highlight_follows_the_playback_time(browser, english):
    alignment, path = english
    open_report(browser, path)
    assert state(browser)["highlighted"] == [0]  # the first unit starts at 0
    for index in (5, 6, 20, 42, 11):
        word = alignment.words[index]
        now = seek(browser, (word.start + word.end) / 2)
        assert now["highlighted"] == [index], (index, now)
    gap = alignment.words[9].end + 0.05  # in the silence after unit 9: still unit 9
    assert seek(browser, gap)["highlighted"] == [9]
    browser.execute_script("document.getElementById('audio').play()")
    WebDriverWait(browser, 10).until(lambda d: state(d)["time"] > gap + 0.5)
    settled = pause_and_settle(browser)
    assert settled["highlighted"] == [expected_unit(alignment, settled["time"])]
    assert settled["highlighted"][0] > 9


def test_keys_step_through_units_and_toggle_playback(browser, english):
    alignment, path = english
    open_report(browser, path)
    keys = ActionChains(browser)
    keys.send_keys(Keys.ARROW_RIGHT).send_keys(Keys.ARROW_RIGHT).send_keys(Keys.ARROW_RIGHT)
    keys.perform()
    now = state(browser)
    assert now["highlighted"] == [3] and abs(now["time"] - alignment.words[3].start) < 0.01
    ActionChains(browser).send_keys(Keys.ARROW_LEFT).perform()
    now = state(browser)
    assert now["highlighted"] == [2] and abs(now["time"] - alignment.words[2].start) < 0.01
    assert now["paused"]  # stepping does not start playback
    ActionChains(browser).send_keys(Keys.SPACE).perform()
    WebDriverWait(browser, 5).until(lambda d: not state(d)["paused"])
    ActionChains(browser).send_keys(Keys.SPACE).perform()
    WebDriverWait(browser, 5).until(lambda d: state(d)["paused"])
    scrolled = browser.execute_script("return window.scrollY")
    assert scrolled == 0  # space was play/pause, not page down
    for _ in range(60):  # past the last unit: stays on it
        ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    assert state(browser)["highlighted"] == [len(alignment.words) - 1]
    assert console_problems(browser) == []


def table_rows(driver: WebDriver) -> list[list[str]]:
    """The cells of every row of the (virtualised) table, scrolling it from top to bottom."""
    rows = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const body = document.getElementById('tbody');
        const rows = new Map();
        const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
        (async () => {
          for (let top = 0; ; top += body.clientHeight / 2) {
            body.scrollTop = top;
            await frame();
            for (const row of document.querySelectorAll('#trows .row')) {
              rows.set(Number(row.dataset.i), [...row.children].map((c) => c.textContent));
            }
            if (top >= body.scrollHeight) break;
          }
          body.scrollTop = 0;
          await frame();
          done([...rows.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]));
        })();
        """
    )
    return rows


def test_table_lists_units_and_seeks(browser, english):
    alignment, path = english
    open_report(browser, path)
    browser.find_element(By.ID, "view").click()
    assert browser.find_element(By.ID, "transcript").get_attribute("hidden") is not None
    rows = table_rows(browser)
    assert len(rows) == len(alignment.words)
    assert [row[0] for row in rows] == [str(k + 1) for k in range(len(alignment.words))]
    assert [row[5] for row in rows] == [w.display for w in alignment.words]
    assert rows[1] == ["2", "0:00.40", "0:00.70", "0.30", "world", "world!", ""]  # no scores
    browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        document.getElementById('tbody').scrollTop = 10 * 26;  // row 12 near the top
        requestAnimationFrame(() => requestAnimationFrame(() => done()));
        """
    )
    browser.find_element(By.CSS_SELECTOR, '#trows .row[data-i="12"]').click()
    now = pause_and_settle(browser)
    assert now["current"] == 12 and abs(last_seek(browser) - alignment.words[12].start) < 0.001
    current_rows = browser.execute_script(
        "return [...document.querySelectorAll('#trows .row.cur')].map((r) => r.dataset.i)"
    )
    assert current_rows == ["12"]
    assert console_problems(browser) == []


def test_low_score_and_repaired_units_are_marked_and_listed(browser, tmp_path):
    alignment = make_alignment(LONG_ENGLISH, scored=True)
    path = write_report(tmp_path / "scored.html", alignment, speech_like(alignment))
    open_report(browser, path)
    marks = browser.execute_script(
        "return [...document.querySelectorAll('#transcript .u')].map("
        "(e) => [e.classList.contains('low'), e.classList.contains('rep'), e.title])"
    )
    assert [(low, rep) for low, rep, _ in marks] == [
        (w.score < 0.5, bool(w.repaired)) for w in alignment.words
    ]
    assert any(low for low, _, _ in marks) and any(rep for _, rep, _ in marks)
    assert f"score {alignment.words[3].score:.2f} \u00b7 times repaired" in marks[3][2]
    checks = browser.execute_script(
        "return [...document.querySelectorAll('#check-list li')].map((e) => Number(e.dataset.i))"
    )
    assert checks == alignment.low_confidence(0.5) and checks
    summary = browser.find_element(By.ID, "checks-summary").text
    assert summary.startswith(f"{len(checks)} units to check")
    meta = browser.find_element(By.ID, "meta").text
    assert f"mean score {alignment.mean_score:.2f}" in meta
    assert f"{100 * alignment.repaired_share:.1f}% repaired" in meta
    # Clicking a listed unit plays from its start.
    browser.find_element(By.ID, "checks-summary").click()
    target = checks[len(checks) // 2]
    item = browser.find_element(By.CSS_SELECTOR, f'#check-list li[data-i="{target}"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", item)
    item.click()
    now = pause_and_settle(browser)
    assert now["current"] == target
    assert abs(last_seek(browser) - alignment.words[target].start) < 0.001
    # The table's score column.
    browser.find_element(By.ID, "view").click()
    rows = table_rows(browser)
    assert [row[6] for row in rows] == [
        f"{w.score:.2f}" + (" repaired" if w.repaired else "") for w in alignment.words
    ]
    assert console_problems(browser) == []


def test_hostile_transcript_is_shown_as_text(browser, tmp_path):
    text = (
        'Look: </script><script>window.pwned=1</script> <img src=x onerror="window.pwned=2"> '
        "<!-- & --> \u2028 <b>bold</b> done."
    )
    alignment = make_alignment(text)
    path = write_report(tmp_path / "hostile.html", alignment, speech_like(alignment))
    open_report(browser, path)
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.find_elements(By.TAG_NAME, "b") == []
    labels = browser.execute_script(
        "return [...document.querySelectorAll('.u')].map((e) => e.textContent)"
    )
    assert labels == [w.display for w in alignment.words]
    transcript = browser.execute_script("return document.getElementById('transcript').textContent")
    assert transcript == text
    assert console_problems(browser) == []
    assert [u for u in requested_urls(browser) if u.startswith(("http", "file"))] == [path.as_uri()]


def test_collapsed_units_can_each_be_picked(browser, tmp_path):
    """Like the tiny test checkpoint: every unit at one instant, all of zero length."""
    alignment = make_alignment("Hello, world! This is the fox.", [(1.2, 1.2)] * 6, duration=3.0)
    path = write_report(tmp_path / "collapsed.html", alignment, speech_like(alignment))
    open_report(browser, path)
    assert state(browser)["highlighted"] == []  # before 1.2 s nothing is current
    click_unit(browser, 2)
    now = pause_and_settle(browser)
    assert now["highlighted"] == [2] and abs(last_seek(browser) - 1.2) < 0.001
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    assert state(browser)["highlighted"] == [3]
    ActionChains(browser).send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT).perform()
    assert state(browser)["highlighted"] == [1]
    zero = browser.execute_script("return document.querySelectorAll('.u.zero').length")
    assert zero == 6  # zero-length units are marked
    assert console_problems(browser) == []


def test_units_timed_after_the_end_of_the_audio_sit_at_its_end(browser, tmp_path):
    """The tiny random checkpoint times units long after the audio ends; the page copes."""
    times = [(0.5, 1.0), (1.0, 1.5), (151.2, 151.2), (151.2, 203.2), (251.6, 251.6)]
    alignment = make_alignment("One, two: three four five.", times, duration=3.0)
    path = write_report(tmp_path / "beyond.html", alignment, speech_like(alignment))
    open_report(browser, path)
    notice = browser.find_element(By.ID, "error")
    assert notice.is_displayed() and "3 units are timed after the end" in notice.text
    click_unit(browser, 3)
    now = pause_and_settle(browser)
    assert now["highlighted"] == [3] and abs(now["time"] - 3.0) < 0.1  # at the end, not restarted
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    assert state(browser)["highlighted"] == [4]
    title = browser.find_element(By.CSS_SELECTOR, '.u[data-i="4"]').get_attribute("title")
    assert title is not None and title.startswith("4:11.60")  # the real time, as aligned
    assert console_problems(browser) == []


def test_browser_decodes_the_embedded_audio_without_a_shift(browser, tmp_path):
    """Chromium honours the MP3's encoder-delay header: a click stays at 1.000 s."""
    wave = np.zeros(3 * RATE, dtype=np.float32)
    wave[RATE] = 0.9
    alignment = make_alignment("click", [(1.0, 1.08)], duration=3.0)
    page = html_report(alignment, wave, RATE)
    encoded = re.search(r'id="report-audio"[^>]*>([^<]+)<', page)
    assert encoded is not None
    path = tmp_path / "click.html"
    path.write_text(page, encoding="utf-8")
    open_report(browser, path)
    peak = browser.execute_async_script(
        """
        const [b64, done] = arguments;
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const context = new OfflineAudioContext(1, 16000, 16000);
        context.decodeAudioData(bytes.buffer).then((audio) => {
          const samples = audio.getChannelData(0);
          let best = 0;
          for (let i = 1; i < samples.length; i++) {
            if (Math.abs(samples[i]) > Math.abs(samples[best])) best = i;
          }
          done(best / audio.sampleRate);
        }, (e) => done(String(e)));
        """,
        encoded.group(1),
    )
    assert isinstance(peak, (int, float)) and abs(peak - 1.0) < 0.005, peak


def one_hour_alignment() -> tuple[Alignment, np.ndarray, int]:
    """40,000 units over an hour of quiet 8 kHz audio, in paragraphs of sentences."""
    vocabulary = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    words = []
    for k in range(HOUR_UNITS):
        word = vocabulary[k % len(vocabulary)] + str(k)
        if k % 12 == 11:
            word += "."
        elif k % 5 == 4:
            word += ","
        words.append(word)
    paragraphs = [" ".join(words[i : i + 400]) for i in range(0, HOUR_UNITS, 400)]
    step = 3600.0 / HOUR_UNITS
    times = [(k * step, k * step + 0.06) for k in range(HOUR_UNITS)]
    alignment = make_alignment("\n".join(paragraphs), times, duration=3600.0)
    rate = 8000
    t = np.arange(3600 * rate, dtype=np.float32) / rate
    wave = (0.01 * np.sin(2 * np.pi * 0.2 * t) * np.sin(2 * np.pi * 150.0 * t)).astype(np.float32)
    return alignment, wave, rate


def test_one_hour_report_is_interactive_within_seconds(browser, tmp_path):
    alignment, wave, rate = one_hour_alignment()
    started = time.perf_counter()
    path = write_report(tmp_path / "hour.html", alignment, wave, rate)
    built = time.perf_counter() - started
    size = path.stat().st_size
    del wave

    opened = open_report(browser, path, timeout=60)
    click_unit(browser, 100)
    WebDriverWait(browser, 30, poll_frequency=0.05).until(
        lambda d: state(d)["highlighted"] == [100]
    )
    interactive = time.perf_counter() - started - built
    print(
        f"\none-hour report, {HOUR_UNITS} units, {size / 1e6:.1f} MB, built in {built:.1f} s: "
        f"loaded in {opened:.2f} s, interactive (a click answered) after {interactive:.2f} s"
    )
    assert interactive < INTERACTIVE_LIMIT
    assert abs(last_seek(browser) - alignment.words[100].start) < 0.001
    pause_and_settle(browser)

    rendered = browser.execute_script("return document.querySelectorAll('.u').length")
    assert rendered < HOUR_UNITS / 4  # the transcript is rendered lazily

    # Jump near the end on the overview: the unit there is rendered and highlighted on demand.
    overview = browser.find_element(By.ID, "overview")
    width = overview.size["width"]
    ActionChains(browser).move_to_element_with_offset(overview, width // 2 - 3, 0).click().perform()
    now = pause_and_settle(browser)
    assert now["current"] == expected_unit(alignment, now["time"]) > HOUR_UNITS * 0.95
    assert now["highlighted"] == [now["current"]]

    steps = 20
    stepped = time.perf_counter()
    for _ in range(steps):
        ActionChains(browser).send_keys(Keys.ARROW_LEFT).perform()
    per_step = (time.perf_counter() - stepped) / steps
    assert state(browser)["highlighted"] == [now["current"] - steps]
    print(f"one-hour report: {per_step * 1000:.0f} ms per arrow key (WebDriver round trip too)")
    assert per_step < 1.0

    browser.find_element(By.ID, "view").click()
    browser.execute_script("document.getElementById('tbody').scrollTop = 1e9")  # to the end
    WebDriverWait(browser, 5).until(
        lambda d: (
            d.execute_script(
                "const rows = document.querySelectorAll('#trows .row');"
                "return rows.length && rows[rows.length - 1].firstChild.textContent"
            )
            == str(HOUR_UNITS)
        )
    )
    assert browser.execute_script("return document.querySelectorAll('#trows .row').length") < 200
    assert console_problems(browser) == []
    assert [u for u in requested_urls(browser) if not u.startswith(LOCAL_SCHEMES)] == [
        path.as_uri()
    ]


def test_screenshot(browser, tmp_path):
    """The README's picture: the report in the middle of playback. ``scripts/report-screenshot``
    saves it to docs/report.png (through $QWEN3_ALIGNER_SCREENSHOT); here it must be small and
    not blank."""
    from PIL import Image

    alignment = make_alignment(LONG_ENGLISH)
    path = write_report(tmp_path / "speech.html", alignment, speech_like(alignment))
    browser.set_window_size(1100, 620)
    try:
        open_report(browser, path)
        click_unit(browser, 14)
        pause_and_settle(browser)
        browser.execute_script("document.getElementById('audio').currentTime = arguments[0]", 5.95)
        WebDriverWait(browser, 5).until(lambda d: state(d)["highlighted"] == [14])
        browser.execute_script("window.scrollTo(0, 0); document.activeElement.blur()")
        raw = tmp_path / "raw.png"
        assert browser.save_screenshot(str(raw))
    finally:
        browser.set_window_size(1200, 850)
    shot = tmp_path / "report.png"
    with Image.open(raw) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 20  # text, waveform, highlight: not blank
        image.convert("RGB").quantize(colors=64).save(shot, optimize=True)
    assert 10_000 < shot.stat().st_size < SCREENSHOT_MAX_BYTES
    target = os.environ.get(SCREENSHOT_ENV)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
        print(f"\nscreenshot written to {target} ({shot.stat().st_size} bytes)")


@pytest.mark.integration
def test_cli_writes_html_and_png_of_a_real_alignment(browser, server, tmp_path):
    """``qwen3-align`` against the tiny checkpoint on a real tritonserver, html and png."""
    from qwen3_aligner_client.cli import EXIT_OK, main
    from test_report import boundary_pixels

    text = "Hello, world! This is the quick brown fox; it jumps over the lazy dog."
    alignment = make_alignment(text)
    audio = tmp_path / "speech.flac"
    soundfile.write(audio, speech_like(alignment, 22050), 22050)
    transcript = tmp_path / "speech.txt"
    transcript.write_text(text + "\n", encoding="utf-8")
    common = [str(audio), str(transcript), "-l", "en", "--url", server.http_url]
    assert main([*common, "-o", str(tmp_path / "speech.json")]) == EXIT_OK
    assert main([*common, "-o", str(tmp_path / "speech.html")]) == EXIT_OK
    assert main([*common, "-f", "png", "-o", str(tmp_path / "speech.png")]) == EXIT_OK
    served = Alignment.from_json((tmp_path / "speech.json").read_text(encoding="utf-8"))

    from matplotlib.image import imread

    picture = imread(tmp_path / "speech.png")
    assert picture.shape[1] == 1600 and boundary_pixels(picture) > 100
    assert not list(tmp_path.glob("speech-*.png"))  # 4 s: one page

    # Batch mode decodes each item's audio again for the formats that picture it.
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copyfile(audio, folder / "speech.flac")
    shutil.copyfile(transcript, folder / "speech.txt")
    for fmt in ("html", "png"):
        argv = ["--batch", str(folder), "-l", "en", "--out-dir", str(tmp_path / "out"), "-f", fmt]
        assert main([*argv, "--url", server.http_url, "--no-progress"]) == EXIT_OK
    batch_page = (tmp_path / "out" / "speech.html").read_text(encoding="utf-8")
    batch_data = re.search(r'id="report-data">([^<]+)<', batch_page)
    assert batch_data is not None
    assert json.loads(batch_data.group(1))["label"] == [w.display for w in served.words]
    assert boundary_pixels(imread(tmp_path / "out" / "speech.png")) == boundary_pixels(picture)

    page = (tmp_path / "speech.html").read_text(encoding="utf-8")
    embedded = re.search(r'id="report-audio"[^>]*>([^<]+)<', page)
    assert embedded is not None
    assert base64.b64decode(embedded.group(1)).startswith((b"ID3", b"\xff"))  # MP3
    open_report(browser, tmp_path / "speech.html")
    labels = browser.execute_script(
        "return [...document.querySelectorAll('.u')].map((e) => e.textContent)"
    )
    assert labels == [w.display for w in served.words]
    transcript_shown = browser.execute_script(
        "return document.getElementById('transcript').textContent"
    )
    assert transcript_shown == text
    click_unit(browser, len(served.words) // 2)
    now = pause_and_settle(browser)
    assert now["highlighted"] == [len(served.words) // 2]
    assert console_problems(browser) == []
