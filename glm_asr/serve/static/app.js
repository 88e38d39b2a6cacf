// The microphone at the device's own rate, as PCM16 frames over the WebSocket /v1/realtime (a session.update
// names the rate; the server resamples to 16 kHz: Firefox cannot connect a microphone to an AudioContext at
// another rate than the device's); events shown as they come. A dropped file goes to
// POST /v1/audio/transcriptions under the model name the server serves. Plain JavaScript: no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const items = new Map();  // item_id -> {li, text}
let socket = null, context = null, source = null, processor = null, stream = null, modelName = null;
const CLOSE_AFTER_STOP_MS = 30000;  // time for the last utterance's text to arrive

function line(itemId, startMs) {
  if (!items.has(itemId)) {
    const li = document.createElement("li");
    li.dataset.item = itemId;
    li.innerHTML = '<span class="time"></span><span class="text partial">...</span>';
    $("utterances").appendChild(li);
    items.set(itemId, { li, text: "" });
  }
  const entry = items.get(itemId);
  if (startMs !== undefined) entry.li.querySelector(".time").textContent = (startMs / 1000).toFixed(1) + " s";
  return entry;
}

function onEvent(event) {
  switch (event.type) {
    case "transcription_session.created":
    case "session.created":
      $("mode").textContent = "mode: " + event.session.mode + " (" + event.session.reason + ")";
      break;
    case "input_audio_buffer.speech_started":
      line(event.item_id, event.audio_start_ms);
      $("status").textContent = "speech...";
      break;
    case "input_audio_buffer.speech_stopped":
      $("status").textContent = "transcribing...";
      break;
    case "conversation.item.input_audio_transcription.delta": {
      const entry = line(event.item_id);
      entry.text += event.delta;
      entry.li.querySelector(".text").textContent = entry.text + " ...";
      break;
    }
    case "conversation.item.input_audio_transcription.completed": {
      const entry = line(event.item_id, event.audio_start_ms);
      const text = entry.li.querySelector(".text");
      text.textContent = event.transcript || "(no speech)";
      text.classList.remove("partial");
      $("status").textContent = "listening";
      break;
    }
    case "error":
      if (event.error.code === "input_audio_buffer_commit_empty") break;  // Stop with nothing said since the last text
      $("error").textContent = event.error.code + ": " + event.error.message;
      break;
  }
}

async function start() {
  $("error").textContent = "";
  stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false } });
  context = new AudioContext();  // the device's rate: the server resamples
  const rate = context.sampleRate;
  source = context.createMediaStreamSource(stream);
  processor = context.createScriptProcessor(4096, 1, 1);  // 85-256 ms frames, by the rate
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + "/v1/realtime");  // this stream's own: Stop closes it, never a newer one
  socket = ws;
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send(JSON.stringify({ type: "session.update", session: { type: "transcription",
    audio: { input: { format: { type: "audio/pcm", rate: rate } } } } }));
  ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  ws.onclose = (e) => { if (socket === ws) { $("status").textContent = "closed (" + e.code + ")"; stop(); } };
  processor.onaudioprocess = (e) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const input = e.inputBuffer.getChannelData(0);
    const pcm = new Int16Array(input.length);
    for (let i = 0; i < input.length; i++) pcm[i] = Math.max(-1, Math.min(1, input[i])) * 32767;
    ws.send(pcm.buffer);
  };
  source.connect(processor);
  processor.connect(context.destination);
  $("start").disabled = true;
  $("stop").disabled = false;
  $("status").textContent = "listening";
}

function stop() {
  const ws = socket;
  socket = null;  // a Start from now on opens its own socket, which this one's close never touches
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ type: "input_audio_buffer.commit" }));  // the last utterance gets its text
    setTimeout(() => ws.close(), CLOSE_AFTER_STOP_MS);
  }
  if (processor) processor.disconnect();
  if (source) source.disconnect();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (context) context.close();
  processor = source = stream = context = null;
  $("start").disabled = false;
  $("stop").disabled = true;
}

async function servedModel() {  // the name the server answers to (--served-model-name), not a fixed one
  if (modelName === null) modelName = (await (await fetch("/v1/models")).json()).data[0].id;
  return modelName;
}

async function upload(file) {
  const entry = line("file-" + Date.now());
  entry.li.querySelector(".time").textContent = file.name;
  const form = new FormData();
  form.append("file", file);
  form.append("model", await servedModel());
  const response = await fetch("/v1/audio/transcriptions", { method: "POST", body: form });
  const body = await response.json();
  const text = entry.li.querySelector(".text");
  if (response.ok) { text.textContent = body.text || "(no speech)"; text.classList.remove("partial"); }
  else { text.textContent = ""; $("error").textContent = body.error.message; }
}

$("start").onclick = () => start().catch((e) => { $("error").textContent = "microphone: " + e.message; });
if (location.hash === "#start") $("start").click();  // a headless browser's way in (tests/test_page_js.py, docs/realtime.md)
$("stop").onclick = stop;
$("file").onchange = (e) => e.target.files.length && upload(e.target.files[0]);
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]); };
