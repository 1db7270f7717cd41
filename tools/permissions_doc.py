"""Renders the RPC permission table (services/common/permissions.py) into docs/legacy-mapping.md.

`python tools/permissions_doc.py` rewrites the table in place; `--check` exits 1 when the doc is stale
(tests/unit/test_rpc_permissions.py checks the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

from services.common.permissions import with_table

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "legacy-mapping.md"


def main(argv: list[str]) -> int:
    current = DOC.read_text()
    rendered = with_table(current)
    if "--check" in argv:
        if rendered != current:
            print(f"{DOC.relative_to(ROOT)} is stale: run python tools/permissions_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
