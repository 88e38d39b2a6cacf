"""`glm-asr serve`: OpenAI's transcription API over the library (the optional `serve` extra).

The room needs Starlette and python-multipart (and uvicorn to run on its own): importing it without them
fails at once, naming the extra, rather than deep inside a request."""

try:
    import python_multipart  # noqa: F401
    import starlette  # noqa: F401
except ImportError as e:
    raise ImportError(f"glm_asr.serve needs {e.name}: pip install 'glm-asr[serve]'") from e
