"""Stubs for other languages: `make sdk`'s TypeScript and Java output compiles, and the protos stay compatible.

A breaking change to a released package fails `buf breaking` against protos/baseline.binpb, the image of
the protos as last released (`make breaking-baseline` records it when a release is cut); a change made in
a new package version (herald.campaign.v2) passes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUF = Path(sys.executable).parent / "buf"
BASELINE = ROOT / "protos" / "baseline.binpb"


def test_generated_typescript_and_java_stubs_compile(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "tools/sdk.py", "check", str(tmp_path / "sdk")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "sdk" / "ts" / "herald" / "campaign" / "v1" / "campaign.ts").is_file()
    assert (tmp_path / "sdk" / "java" / "herald" / "campaign" / "v1" / "CampaignServiceGrpc.java").is_file()
    # The error details every Herald error carries, for clients to decode with the SDK alone.
    assert (tmp_path / "sdk" / "ts" / "google" / "rpc" / "error_details.ts").is_file()
    assert (tmp_path / "sdk" / "java" / "com" / "google" / "rpc" / "ErrorInfo.java").is_file()


def buf_breaking(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUF, "breaking", "--against", str(BASELINE)], cwd=workdir, capture_output=True, text=True, check=False
    )


def copy_of_protos(tmp_path: Path) -> Path:
    """A copy of the module (buf.yaml and protos/) to edit."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos", ignore=shutil.ignore_patterns("*.binpb"))
    return tmp_path


def test_protos_have_no_breaking_change_against_the_released_baseline() -> None:
    result = buf_breaking(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_breaking_change_to_a_released_package_fails_the_check(tmp_path: Path) -> None:
    module = copy_of_protos(tmp_path)
    campaign = module / "protos" / "herald" / "campaign" / "v1" / "campaign.proto"
    source = campaign.read_text()
    assert "  string status_reason = 5;\n" in source
    campaign.write_text(source.replace("  string status_reason = 5;\n", "  reserved 5;\n"))

    result = buf_breaking(module)

    assert result.returncode != 0
    assert (
        'Previously present field "5" with name "status_reason" on message "Campaign" was deleted' in result.stdout
    )


def test_a_change_made_in_a_new_package_version_passes_the_check(tmp_path: Path) -> None:
    module = copy_of_protos(tmp_path)
    v1 = module / "protos" / "herald" / "campaign" / "v1" / "campaign.proto"
    v2 = module / "protos" / "herald" / "campaign" / "v2" / "campaign.proto"
    v2.parent.mkdir()
    # v2 drops status_reason; v1 stays as it was released.
    source = v1.read_text().replace("package herald.campaign.v1;", "package herald.campaign.v2;")
    v2.write_text(source.replace("  string status_reason = 5;\n", "  reserved 5;\n"))

    result = buf_breaking(module)

    assert result.returncode == 0, result.stdout + result.stderr
