#!/usr/bin/env python3
"""Writes the tables the docs print from the code that owns them, so that no number is written twice by hand.

    python tools/doc_tables.py          # rewrite each table in place
    python tools/doc_tables.py --check  # exit 1 if a doc differs (tests/test_docs.py does the same)

Each table sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers in its doc.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conformance.harness.tolerances import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TABLES = {("docs/conformance.md", "tolerances"): markdown_table}


def render(text: str, name: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:begin -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"doc_tables: no <!-- {name}:begin --> ... <!-- {name}:end --> markers; add them where the table goes")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if a doc is out of date")
    args = parser.parse_args()
    stale = []
    for (doc, name), make in TABLES.items():
        path = ROOT / doc
        text = path.read_text()
        new = render(text, name, make())
        if new != text:
            stale.append(f"{doc}: table {name}")
            if not args.check:
                path.write_text(new)
    for line in stale:
        print(("out of date: " if args.check else "rewrote: ") + line)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
