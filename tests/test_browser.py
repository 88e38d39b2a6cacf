"""The live page in a real browser (tox -e browser): Debian's headless Chromium, its fake microphone fed from
example_en.wav plus silence, against a live server on 127.0.0.1 (small random preset, so the text is
meaningless): utterance events arrive over the WebSocket and their text is shown on the page.
GLM_ASR_SCREENSHOT=path saves the page once the text is there (docs/realtime.png)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile

pytestmark = pytest.mark.browser
webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("uvicorn")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from glm_asr import load_model_and_processor  # noqa: E402
from glm_asr.io.audio_file import load_audio  # noqa: E402
from glm_asr.serve.app import Service  # noqa: E402
from glm_asr.serve.realtime import RealtimeOptions  # noqa: E402
from glm_asr.serve.server import bind, make_server  # noqa: E402
from tests.conftest import SHARED_AUDIO  # noqa: E402

AUDIO = Path(os.environ.get("GLM_ASR_SHARED_AUDIO", SHARED_AUDIO))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver", allow_module_level=True)
if not (AUDIO / "example_en.wav").is_file():
    pytest.skip(f"no shared speech clips in {AUDIO}", allow_module_level=True)


@pytest.fixture(scope="module")
def server():  # noqa: ANN201
    model, processor = load_model_and_processor(None, random_preset="small")
    service = Service(model, processor, batch_size=4, max_new_tokens=24, realtime=RealtimeOptions(partials="auto"))
    sock = bind("127.0.0.1", 0)
    uv = make_server(service)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    uv.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture
def browser(tmp_path):  # noqa: ANN201
    """Headless Chromium whose microphone plays speech then 3 s of silence, in a loop (16-bit PCM, as it wants)."""
    wav = tmp_path / "mic.wav"
    speech = load_audio(AUDIO / "example_en.wav")
    samples = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(48000, np.float32)])
    scipy.io.wavfile.write(wav, 16000, (np.clip(samples, -1, 1) * 32767).astype(np.int16))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,700",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_transcribes_the_microphone(server, browser):
    browser.get(server)
    assert browser.title == "glm-asr: live transcription"
    browser.find_element(By.ID, "start").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "mode").text.startswith("mode: "))
    assert "final-only" in browser.find_element(By.ID, "mode").text or "partials" in browser.find_element(By.ID, "mode").text

    def done(d) -> bool:  # noqa: ANN001
        return any(el.text.strip() and "partial" not in el.get_attribute("class")
                   for el in d.find_elements(By.CSS_SELECTOR, "#utterances li .text"))

    WebDriverWait(browser, 60).until(done)
    items = browser.find_elements(By.CSS_SELECTOR, "#utterances li")
    assert items[0].get_attribute("data-item").startswith("item_")
    assert items[0].find_element(By.CSS_SELECTOR, ".time").text.endswith(" s")
    assert browser.find_element(By.ID, "error").text == ""
    if os.environ.get("GLM_ASR_SCREENSHOT"):
        browser.save_screenshot(os.environ["GLM_ASR_SCREENSHOT"])
    browser.find_element(By.ID, "stop").click()
