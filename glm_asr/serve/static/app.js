// The microphone at 16 kHz, as PCM16 frames over the WebSocket /v1/realtime; events shown as they come.
// A dropped file goes to POST /v1/audio/transcriptions. Plain JavaScript: no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const items = new Map();  // item_id -> {li, text}
let socket = null, context = null, source = null, processor = null, stream = null;

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
      $("error").textContent = event.error.code + ": " + event.error.message;
      break;
  }
}

async function start() {
  $("error").textContent = "";
  stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false } });
  context = new AudioContext({ sampleRate: 16000 });  // the browser resamples the microphone to 16 kHz
  source = context.createMediaStreamSource(stream);
  processor = context.createScriptProcessor(4096, 1, 1);  // 256 ms frames
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(scheme + "//" + location.host + "/v1/realtime");
  socket.binaryType = "arraybuffer";
  socket.onmessage = (m) => onEvent(JSON.parse(m.data));
  socket.onclose = (e) => { $("status").textContent = "closed (" + e.code + ")"; stop(); };
  processor.onaudioprocess = (e) => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const input = e.inputBuffer.getChannelData(0);
    const pcm = new Int16Array(input.length);
    for (let i = 0; i < input.length; i++) pcm[i] = Math.max(-1, Math.min(1, input[i])) * 32767;
    socket.send(pcm.buffer);
  };
  source.connect(processor);
  processor.connect(context.destination);
  $("start").disabled = true;
  $("stop").disabled = false;
  $("status").textContent = "listening";
}

function stop() {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));  // the last utterance gets its text
    setTimeout(() => socket && socket.close(), 30000);
  }
  if (processor) processor.disconnect();
  if (source) source.disconnect();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (context) context.close();
  processor = source = stream = context = null;
  $("start").disabled = false;
  $("stop").disabled = true;
}

async function upload(file) {
  const entry = line("file-" + Date.now());
  entry.li.querySelector(".time").textContent = file.name;
  const form = new FormData();
  form.append("file", file);
  form.append("model", "glm-asr-nano-2512");
  const response = await fetch("/v1/audio/transcriptions", { method: "POST", body: form });
  const body = await response.json();
  const text = entry.li.querySelector(".text");
  if (response.ok) { text.textContent = body.text || "(no speech)"; text.classList.remove("partial"); }
  else { text.textContent = ""; $("error").textContent = body.error.message; }
}

$("start").onclick = () => start().catch((e) => { $("error").textContent = "microphone: " + e.message; });
$("stop").onclick = stop;
$("file").onchange = (e) => e.target.files.length && upload(e.target.files[0]);
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]); };
