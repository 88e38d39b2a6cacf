"""Text: the byte-level BPE tokenizer that reads tokenizer.json, with the Unicode classes its pre-tokenizer needs."""
