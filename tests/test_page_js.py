"""The live page's script (glm_asr/serve/static/app.js) run in Node with stand-ins for the browser's objects:
Stop then Start within the close delay leaves the new stream open, the microphone is recorded at the device's
rate and that rate is named to the server, and an upload names the model the server serves. (The page in a
real browser: tests/test_browser.py, with Chromium.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node") or shutil.which("nodejs")
APP = Path(__file__).resolve().parents[1] / "glm_asr" / "serve" / "static" / "app.js"

HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const elements = {}, sockets = [], contexts = [], timers = [], fetches = [];
const classList = { add() {}, remove() {} };
const node = () => ({ textContent: "", classList, dataset: {}, innerHTML: "", appendChild() {}, querySelector: () => node() });
const el = (id) => (elements[id] = elements[id] || Object.assign(node(), { id, disabled: false }));
class FakeSocket {
  constructor(url) { this.url = url; this.readyState = 0; this.sent = []; this.closed = false; sockets.push(this); }
  send(data) { this.sent.push(typeof data === "string" ? JSON.parse(data) : "binary"); }
  close() { this.closed = true; this.readyState = 3; }
}
FakeSocket.OPEN = 1;
class FakeAudioContext {
  constructor(options) { this.options = options; this.sampleRate = 44100; this.destination = {}; contexts.push(this); }
  createMediaStreamSource() { return { connect() {}, disconnect() {} }; }
  createScriptProcessor() { return { connect() {}, disconnect() {} }; }
  close() {}
}
const sandbox = {
  document: { getElementById: el, createElement: node }, WebSocket: FakeSocket, AudioContext: FakeAudioContext,
  navigator: { mediaDevices: { getUserMedia: async () => ({ getTracks: () => [] }) } },
  location: { protocol: "http:", host: "127.0.0.1:9", hash: "" },
  setTimeout: (f, ms) => timers.push([f, ms]),
  fetch: async (url, options) => {
    fetches.push([url, options && options.body ? options.body.fields : null]);
    return url === "/v1/models" ? { json: async () => ({ data: [{ id: "served-name" }] }) }
                                : { ok: true, json: async () => ({ text: "a text" }) };
  },
  FormData: class { constructor() { this.fields = []; } append(k, v) { this.fields.push([k, typeof v === "string" ? v : "file"]); } },
  JSON, Math, Int16Array, Date, Map, console,
};
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(process.argv[1], "utf8"), sandbox);
const tick = () => new Promise((r) => setImmediate(r));
(async () => {
  el("start").onclick(); await tick(); await tick();
  const first = sockets[0]; first.readyState = 1; if (first.onopen) first.onopen();
  el("stop").onclick();
  el("start").onclick(); await tick(); await tick();
  const second = sockets[1]; second.readyState = 1; if (second.onopen) second.onopen();
  for (const [f] of timers) f();  // the first stream's delayed close comes due while the second runs
  first.onclose({ code: 1000 });
  el("file").onchange({ target: { files: [{ name: "a.wav" }] } }); for (let i = 0; i < 6; i++) await tick();
  console.log(JSON.stringify({
    contextOptions: contexts.map((c) => c.options === undefined ? null : c.options),
    firstSent: first.sent, firstClosed: first.closed, secondClosed: second.closed, secondSent: second.sent,
    delays: timers.map(([, ms]) => ms), stopDisabled: el("stop").disabled, status: el("status").textContent,
    fetches,
  }));
})();
"""


@pytest.fixture(scope="module")
def run() -> dict:
    if NODE is None:
        pytest.skip("needs Node.js (apt-get install nodejs)")
    out = subprocess.run([NODE, "-e", HARNESS, str(APP)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_stop_then_start_within_the_close_delay_leaves_the_new_stream_open(run):
    assert run["firstSent"][-1] == {"type": "input_audio_buffer.commit"} and run["delays"] == [30000]
    assert run["firstClosed"] and not run["secondClosed"]
    assert not run["stopDisabled"] and not run["status"].startswith("closed")  # the old socket's close stops nothing


def test_the_microphone_is_taken_at_the_device_rate_and_the_rate_named(run):
    assert run["contextOptions"] == [None, None]  # no sampleRate: Firefox refuses a microphone in a context at another rate
    update = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}}}
    assert run["firstSent"][0] == update and run["secondSent"] == [update]


def test_an_upload_names_the_served_model(run):
    posted = [fields for url, fields in run["fetches"] if url == "/v1/audio/transcriptions"]
    assert "/v1/models" in [url for url, _ in run["fetches"]] and posted == [[["file", "file"], ["model", "served-name"]]]
