"""The conformance kit for other implementations: export, check, the catalogue of known porting bugs, diagnosis."""
