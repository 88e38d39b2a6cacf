"""The live page's audio path in headless Firefox (tox -e browser): Debian has firefox-esr but no geckodriver,
so Firefox is not driven; it opens the page at `/#start` (the page's own way in) with a fake microphone, no
permission prompt and a mock audio output (profile prefs: a container has no sound device, and without one
Firefox's AudioContext never leaves "suspended"), and the server side is watched: the page names its device rate in a
session.update, and frames at that rate arrive, carry the fake microphone's tone (peak 0.1) and are taken,
with no error event sent back. (Firefox 153 ESR, the one Debian has, connects a microphone to a 16 kHz
AudioContext as well: the refusal older Firefox gave, "Connecting AudioNodes from AudioContexts with
different sample-rate is currently not supported", does not reproduce with it. The page records at the
device's rate all the same, which every Firefox takes.)"""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest

pytestmark = pytest.mark.browser
pytest.importorskip("uvicorn")
FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")
if FIREFOX is None:
    pytest.skip("needs Debian's firefox-esr: apt-get install firefox-esr", allow_module_level=True)

from glm_asr import load_model_and_processor  # noqa: E402
from glm_asr.serve import realtime  # noqa: E402
from glm_asr.serve.app import Service  # noqa: E402
from glm_asr.serve.realtime import RealtimeOptions  # noqa: E402
from tests.live_server import live_server  # noqa: E402

PREFS = """
user_pref("media.navigator.streams.fake", true);
user_pref("media.navigator.permission.disabled", true);
user_pref("media.autoplay.default", 0);
user_pref("media.autoplay.block-webaudio", false);
user_pref("media.cubeb.force_mock_context", true);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
"""


def test_firefox_streams_the_microphone_at_its_own_rate(tmp_path, monkeypatch):
    seen: list[tuple[int, int]] = []
    peaks: list[int] = []
    sent: list[dict] = []
    ingest, send = realtime.Session._ingest, realtime.Session.send

    def watched_ingest(self, data):  # noqa: ANN001, ANN202
        seen.append((self.config.format.rate, len(data)))
        peaks.append(int(abs(np.frombuffer(data, "<i2").astype(np.int32)).max()))
        return ingest(self, data)

    async def watched_send(self, event):  # noqa: ANN001, ANN202
        sent.append(event)
        await send(self, event)
    monkeypatch.setattr(realtime.Session, "_ingest", watched_ingest)
    monkeypatch.setattr(realtime.Session, "send", watched_send)
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "user.js").write_text(PREFS)
    model, processor = load_model_and_processor(None, random_preset="small")
    service = Service(model, processor, max_new_tokens=4, realtime=RealtimeOptions(partials="off"))
    with live_server(service) as port:
        browser = subprocess.Popen([FIREFOX, "--headless", "--no-remote", "--profile", str(tmp_path / "profile"),
                                    f"http://127.0.0.1:{port}/#start"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while sum(n for _, n in seen) < 2 * 44100 and time.monotonic() < deadline:  # a second of audio or more
                time.sleep(0.2)
        finally:
            browser.terminate()
            try:
                browser.wait(20)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
    updated = [e for e in sent if e["type"] == "session.updated"]
    assert updated and updated[0]["session"]["audio"]["input"]["format"]["rate"] in (44100, 48000), sent[:3]
    rate = updated[0]["session"]["audio"]["input"]["format"]["rate"]
    assert seen and {r for r, _ in seen} == {rate} and sum(n for _, n in seen) >= 2 * 44100
    assert min(peaks) > 0.05 * 32768, peaks[:10]  # the fake microphone's tone, not silence
    assert not [e for e in sent if e["type"] == "error"], [e for e in sent if e["type"] == "error"]
