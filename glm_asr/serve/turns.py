"""A live stream's audio on its way to utterances, as its turn detection says (turn_detection.py): through the
stream's VAD (utterances.Segmenter) under server_vad, or into one buffer that the client commits under manual
turns (turn_detection null). Every method runs on a worker thread; a stream calls them one at a time.

Events out: ("started", sample) and ("stopped", Utterance) from the VAD; ("committed", Utterance) for a
manual buffer. Samples count on the segmenter's timeline, which starts `origin` samples into the stream.
"""

from __future__ import annotations

import numpy as np

from glm_asr.model.front_end import SAMPLING_RATE
from glm_asr.serve.realtime_events import Fault
from glm_asr.serve.utterances import Segmenter, TurnOptions, Utterance

MAX_MANUAL_SECONDS = 600  # a manual buffer this long must be committed: it is held in memory until then

Event = tuple[str, int | Utterance]


class Turns:
    """One stream's audio since it opened: where its turns end, and the audio each turn holds."""

    def __init__(self, turn: TurnOptions | None) -> None:
        self.turn = turn
        self.segmenter = Segmenter(turn or TurnOptions())  # made even for manual turns: VadUnavailable shows at once
        self.manual: list[np.ndarray] = []  # under manual turns, the audio since the last commit or clear
        self.origin = 0  # stream samples (16 kHz) before this segmenter or buffer: a clear starts a new one
        self.received = 0  # stream samples (16 kHz) so far
        self.buffered = 0  # samples since the last commit, clear or utterance end: a commit of less is refused

    def ms(self, samples: int) -> int:
        """A position on this timeline as milliseconds of the stream."""
        return round((self.origin + samples) * 1000 / SAMPLING_RATE)

    def feed(self, samples: np.ndarray) -> list[Event]:
        if self.turn is None:
            if self.buffered + samples.shape[0] > MAX_MANUAL_SECONDS * SAMPLING_RATE:
                raise Fault("input_audio_buffer_full", f"the buffer holds {self.buffered / SAMPLING_RATE:.1f} s and turn_detection "
                            f"is null: commit at least every {MAX_MANUAL_SECONDS} s; this frame was not taken")
            self.received += samples.shape[0]
            self.buffered += samples.shape[0]
            self.manual.append(samples)
            return []
        self.received += samples.shape[0]
        self.buffered += samples.shape[0]
        events = self.segmenter.feed(samples)
        for name, value in events:
            if name == "stopped":  # the VAD committed the buffer up to the utterance's end
                assert isinstance(value, Utterance)
                self.buffered = self.received - self.origin - value.end
        return events

    def commit(self) -> list[Event]:
        """The client's commit: under server_vad the utterance in progress ends (none may be); under manual
        turns the whole buffer is one utterance."""
        if self.turn is None:
            end = self.received - self.origin
            audio = np.concatenate(self.manual) if self.manual else np.zeros(0, np.float32)
            self.manual, self.buffered = [], 0
            return [("committed", Utterance(end - audio.shape[0], end, audio))]
        self.buffered = 0
        return self.segmenter.flush()

    def clear(self) -> None:
        """The audio since the last commit dropped; the VAD starts afresh."""
        self.manual, self.buffered = [], 0
        self.origin, self.segmenter = self.received, Segmenter(self.turn or TurnOptions())

    def retune(self, turn: TurnOptions | None) -> list[Event]:
        """A new turn detection from the next sample on. Leaving server_vad ends the utterance in progress as a
        commit would; leaving manual turns runs the uncommitted buffer through the VAD, as if it came now."""
        events: list[Event] = []
        if self.turn is not None and turn is not None:
            self.segmenter.retune(turn)
        elif self.turn is not None:
            events = self.commit()
        elif turn is not None:
            buffer = np.concatenate(self.manual) if self.manual else np.zeros(0, np.float32)
            self.manual, self.buffered = [], 0
            self.origin, self.segmenter = self.received - buffer.shape[0], Segmenter(turn)
            self.received = self.origin
            self.turn = turn
            return self.feed(buffer)
        self.turn = turn
        return events
