"""Transcribing a corpus: inputs (files, folders, manifests), batching across files with read-ahead, results
files, subtitles, and Ray."""
