"""A live stream's session as OpenAI's realtime API shows and updates it, in its GA form (`session.created`,
`session.update` with `session.type: "transcription"`) and its beta form (`transcription_session.*`): the
input format, the turn detection (turn_detection.py), the language and the prompt it names, and the session
object each form sends back."""

from __future__ import annotations

from dataclasses import dataclass, field

from glm_asr.serve import input_audio, languages, turn_detection
from glm_asr.serve.utterances import TurnOptions


class ConfigError(ValueError):
    """An update refused: the error event's code and message; the session keeps what it had."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass
class SessionConfig:
    id: str
    ga: bool  # the GA form (session.*) rather than the beta one (transcription_session.*)
    format: input_audio.InputFormat
    language: str | None = None
    prompt: str = ""  # taken and echoed; the model's instruction is fixed (docs/realtime.md)
    defaults: TurnOptions = field(default_factory=TurnOptions)  # the server's, for the server_vad fields not sent
    turn: TurnOptions | None = None  # None: manual turns (turn_detection null); set from `defaults` at first

    def __post_init__(self) -> None:
        self.turn = self.defaults

    def update(self, kind: str, session: object) -> None:
        """`session.update` (GA) or `transcription_session.update` (beta): all of it taken, or none (ConfigError)."""
        session = session if isinstance(session, dict) else {}
        try:
            if kind == "session.update":
                if session.get("type", "transcription") != "transcription":
                    raise ConfigError("invalid_value", f"session.type {session.get('type')!r}: this server transcribes only; "
                                      "send 'transcription' and connect to /v1/realtime?intent=transcription")
                audio = (session.get("audio") or {}).get("input") or {}
                fmt = None if audio.get("format") is None else input_audio.from_ga(audio["format"])
                transcription = audio.get("transcription") or {}
                turn, where = self._turn(audio, "session.audio.input.turn_detection")
            else:
                name = session.get("input_audio_format")
                fmt = None if name is None else input_audio.from_beta(name)
                transcription = session.get("input_audio_transcription") or {}
                turn, where = self._turn(session, "session.turn_detection")
            transcription = transcription if isinstance(transcription, dict) else {}
            language = languages.check(transcription["language"]) if transcription.get("language") else self.language
        except input_audio.FormatError as e:
            raise ConfigError("unsupported_format", f"{e}; the session keeps {self.format.beta()}") from None
        except languages.LanguageError as e:
            raise ConfigError("unsupported_language", f"language {e}") from None
        self.language, self.ga = language, kind == "session.update"  # answered in the form it was asked in
        if isinstance(transcription.get("prompt"), str):
            self.prompt = transcription["prompt"]
        if fmt is not None:
            self.format = fmt
        if where:
            self.turn = turn

    def _turn(self, holder: object, where: str) -> tuple[TurnOptions | None, str]:
        """The turn detection an update asks for, and where it was asked (self.turn and "" when it names none)."""
        if not isinstance(holder, dict) or "turn_detection" not in holder:
            return self.turn, ""
        try:
            return turn_detection.parse(holder["turn_detection"], self.defaults), where
        except turn_detection.FieldError as e:
            raise ConfigError("invalid_value", f"{where}: {e.message}; the session keeps its turn detection",
                              f"{where}.{e.field}" if e.field else where) from None

    def created(self) -> str:
        return "session.created" if self.ga else "transcription_session.created"

    def updated(self) -> str:
        return "session.updated" if self.ga else "transcription_session.updated"

    def payload(self, model: str, extras: dict) -> dict:
        """The session object in this form, with the server's own fields (`extras`: mode, reason, limits)."""
        transcription = {"model": model, "language": self.language, "prompt": self.prompt}
        detection = turn_detection.shown(self.turn)
        if self.ga:
            return {"type": "transcription", "object": "realtime.transcription_session", "id": self.id,
                    "audio": {"input": {"format": self.format.ga(), "transcription": transcription, "noise_reduction": None,
                                        "turn_detection": detection}}, "include": [], **extras}
        return {"id": self.id, "object": "realtime.transcription_session", "input_audio_format": self.format.beta(),
                "sample_rate": self.format.rate, "input_audio_transcription": transcription, "turn_detection": detection,
                **extras}
