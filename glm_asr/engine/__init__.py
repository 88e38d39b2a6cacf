"""The batching engine shared by the corpus path and the server: units of work and their results (units.py),
whole batches decoded prompt to end (batch.py), and a running batch that rows join and leave between decode
steps (running.py). It sits below both: it imports neither glm_asr.corpus nor glm_asr.serve."""
