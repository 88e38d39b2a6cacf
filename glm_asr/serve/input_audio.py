"""A live stream's audio formats, as OpenAI's realtime API names them, turned into the model's 16 kHz.

OpenAI's realtime sessions take PCM16 at 24 kHz (GA `{"type": "audio/pcm", "rate": 24000}`, beta `pcm16`)
and G.711 at 8 kHz (GA `audio/pcmu` / `audio/pcma`, beta `g711_ulaw` / `g711_alaw`). This server also takes
`audio/pcm` at the other common device rates (16 kHz, the model's own, which its tools send; 44.1 and 48 kHz,
a microphone's, which its page sends as the browser records it: Firefox cannot resample a microphone). G.711 bytes are expanded by the
ITU-T G.711 tables; every rate but 16 kHz goes through a polyphase resampler (scipy's `resample_poly`
filter) that carries its history from frame to frame, so a stream resampled frame by frame equals the whole
stream resampled at once, whatever the frame sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np
from scipy.signal import firwin, upfirdn

from glm_asr.model.front_end import SAMPLING_RATE


@dataclass(frozen=True)
class InputFormat:
    """How the bytes of a frame are coded (`pcm16`, `pcmu` or `pcma`) and their sample rate."""

    coding: str
    rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.coding == "pcm16" else 1

    def ga(self) -> dict:
        """The GA session's `audio.input.format`."""
        return {"type": "audio/pcm", "rate": self.rate} if self.coding == "pcm16" else {"type": f"audio/{self.coding}"}

    def beta(self) -> str:
        """The beta session's `input_audio_format` (PCM16 at another rate than 24 kHz has no beta name: it says what it is)."""
        if self.coding == "pcm16":
            return "pcm16" if self.rate == 24000 else f"pcm16_{self.rate}hz"
        return {"pcmu": "g711_ulaw", "pcma": "g711_alaw"}[self.coding]


OPENAI_PCM = InputFormat("pcm16", 24000)  # OpenAI's default, for a client that names no format
MODEL_PCM = InputFormat("pcm16", SAMPLING_RATE)  # this server's own clients (binary frames, the page)
BETA = {"pcm16": OPENAI_PCM, "g711_ulaw": InputFormat("pcmu", 8000), "g711_alaw": InputFormat("pcma", 8000),
        "pcm16_16000hz": MODEL_PCM}
PCM_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


class FormatError(ValueError):
    pass


def from_ga(fmt: object) -> InputFormat:
    """`audio.input.format` of a GA `session.update`."""
    if not isinstance(fmt, dict) or fmt.get("type") not in ("audio/pcm", "audio/pcmu", "audio/pcma"):
        raise FormatError(f"audio.input.format {fmt!r}: expected {{'type': 'audio/pcm', 'rate': 24000}} (or another rate "
                          f"of {', '.join(map(str, PCM_RATES))}), "
                          "{'type': 'audio/pcmu'} or {'type': 'audio/pcma'}")
    if fmt["type"] != "audio/pcm":
        return InputFormat(fmt["type"].removeprefix("audio/"), 8000)
    rate = fmt.get("rate", 24000)
    if rate not in PCM_RATES:
        raise FormatError(f"audio.input.format rate {rate!r}: audio/pcm is taken at 24000 Hz (OpenAI's rate) or at "
                          f"{', '.join(str(r) for r in PCM_RATES if r != 24000)}")
    return InputFormat("pcm16", int(rate))


def from_beta(name: object) -> InputFormat:
    """`input_audio_format` of a beta `transcription_session.update`."""
    if name not in BETA:
        raise FormatError(f"input_audio_format {name!r}: expected one of {', '.join(BETA)}")
    return BETA[name]


def _g711_tables() -> dict[str, np.ndarray]:
    """The 256 16-bit values of each G.711 code (ITU-T G.711, as in Sun's g711.c and ffmpeg's pcm_mulaw/alaw)."""
    code = np.arange(256)
    u = ~code & 0xFF
    mu = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)
    mu = np.where(u & 0x80, 0x84 - mu, mu - 0x84)
    a = code ^ 0x55
    seg, mant = (a >> 4) & 7, (a & 0x0F) << 4
    alaw = np.where(seg == 0, mant + 8, (mant + 0x108) << np.maximum(seg - 1, 0))
    alaw = np.where(a & 0x80, alaw, -alaw)
    return {"pcmu": (mu / 32768.0).astype(np.float32), "pcma": (alaw / 32768.0).astype(np.float32)}


G711 = _g711_tables()


def g711(data: bytes, coding: str) -> np.ndarray:
    """G.711 bytes as float32 samples in [-1, 1)."""
    return G711[coding][np.frombuffer(data, np.uint8)]


class StreamResampler:
    """`scipy.signal.resample_poly(x, up, down)` computed frame by frame: `feed` returns the output samples that
    the input so far determines, `flush` the rest (as if the stream ended there). The filter is resample_poly's
    (Kaiser window, beta 5, 10 zero crossings each side), so the concatenated outputs equal the whole call's."""

    def __init__(self, rate_in: int, rate_out: int = SAMPLING_RATE) -> None:
        g = gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g
        half_len = 10 * max(self.up, self.down)
        h = firwin(2 * half_len + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)) * self.up
        pre_pad = self.down - half_len % self.down  # as resample_poly: the filter's delay, in whole outputs
        self.h = np.concatenate([np.zeros(pre_pad), h])
        self.skip = (half_len + pre_pad) // self.down  # leading outputs that are the filter's delay
        self.hist = np.zeros(0, np.float64)  # inputs from index `base` on
        self.base = 0  # always a multiple of `down`, so that output n lines up with hist's upfirdn output
        self.taken = 0  # inputs fed so far
        self.next = 0  # the next output index (before the delay is removed)

    def feed(self, x: np.ndarray) -> np.ndarray:
        self.hist = np.concatenate([self.hist, x.astype(np.float64, copy=False)])
        self.taken += x.shape[0]
        return self._emit((self.taken * self.up - 1) // self.down)  # outputs whose last input has arrived

    def flush(self) -> np.ndarray:
        """The outputs still owed once the stream ends (the inputs after it count as zeros, as in resample_poly)."""
        last = self.skip + -(-self.taken * self.up // self.down) - 1
        pad = np.zeros(max(0, (last * self.down) // self.up + 1 - self.taken))
        self.hist = np.concatenate([self.hist, pad])
        return self._emit(last)

    def _emit(self, last: int) -> np.ndarray:
        if self.up == self.down == 1:
            out, self.hist = self.hist.astype(np.float32), self.hist[:0]
            return out
        first = self.base * self.up // self.down
        y = upfirdn(self.h, self.hist, self.up, self.down)
        start = max(self.next, self.skip)
        out = y[start - first : last - first + 1] if last >= start else y[:0]
        self.next = max(self.next, last + 1)
        # Drop the inputs that no later output reaches (output n reads inputs above (n*down - len(h)) / up).
        keep = max(self.base, (self.next * self.down - self.h.shape[0] + 1) // self.up)
        keep = keep // self.down * self.down
        self.hist, self.base = self.hist[keep - self.base :], keep
        return out.astype(np.float32)
