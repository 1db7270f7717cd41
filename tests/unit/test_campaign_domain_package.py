"""The campaign domain's boundaries: it knows nothing of the generated proto types (the api layer maps them)."""

from __future__ import annotations

import subprocess
import sys

DOMAIN_MODULES = ("services.campaign.domain", "services.campaign.email_domain")


def test_the_campaign_domain_imports_no_generated_proto_type() -> None:
    # A fresh interpreter: this test session has long since loaded every generated module.
    probe = (
        "import sys\n"
        f"for name in {DOMAIN_MODULES!r}:\n"
        "    __import__(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('herald', 'grpc') or m.startswith('google.protobuf')))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
