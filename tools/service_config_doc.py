"""Writes docs/grpc-service-config.json: the gRPC service config Herald's own clients use (services/common/grpc_config.py,
with the default settings), for other teams' clients to load (docs/clients.md).

`python tools/service_config_doc.py` rewrites the file; `--check` exits 1 when it is stale
(tests/unit/test_grpc_config.py checks the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

from services.common.grpc_config import service_config_document

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "grpc-service-config.json"


def main(argv: list[str]) -> int:
    rendered = service_config_document()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text() != rendered:
            print(f"{DOC.relative_to(ROOT)} is stale: run python tools/service_config_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
