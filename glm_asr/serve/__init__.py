"""`glm-asr serve`: OpenAI's transcription API over the library (the optional `serve` extra)."""
