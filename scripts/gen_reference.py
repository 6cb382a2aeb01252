#!/usr/bin/env python
"""Write docs/reference.md from the option table (sdgen/config/options.py): every option, flag, settings key,
batch-line key, record field and A1111 field.

    python scripts/gen_reference.py           # after changing a row
    python scripts/gen_reference.py --check   # exit 1 when the committed file is stale (the tests do this too)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only say whether the file is up to date")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from sdgen.cli import reference

    path = ROOT / reference.PATH
    text = reference.render()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        if current != text:
            print(f"{reference.PATH} is stale: run {reference.COMMAND}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {reference.PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
