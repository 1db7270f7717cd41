"""What rendering one campaign message costs a delivery worker: bench/delivery.py's email, per recipient, in one process.

    .venv/bin/python bench/render.py [--recipients 20000]

A worker does this for every message it sends: the return path (MAIL FROM, one signed token), then the
message itself (personalization, the signed unsubscribe, click and open-pixel links, quoted-printable
bodies, headers). The email is the one bench/delivery.py sends, with open and link tracking on as a
campaign has them by default. Prints microseconds of CPU per message: the share of a worker's CPU per
message that no SMTP or database work can save.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from delivery import HTML, PLAIN, SUBJECT
from dkim_signing import campaign_template

from services.delivery.message import MessageTemplate, Recipient


def template() -> MessageTemplate:
    """bench/delivery.py's email, with open and link tracking on as an email has them by default."""
    return campaign_template(
        {
            "email_id": 1,
            "subject": SUBJECT,
            "preheader_text": "",
            "from_name": "Herald Benchmark",
            "from_email": "bench@herald.example",
            "reply_to_name": "",
            "reply_to_email": "",
            "html": HTML,
            "plain": PLAIN,
            "content_type": "Both",
            "open_tracking": True,
            "link_tracking": True,
            "utm": {"enabled": False},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=20_000)
    args = parser.parse_args()
    made = template()
    recipients = [
        Recipient(n, f"user{n}@example.com", "Ann", "Lee", n, 3, None, 1) for n in range(1, args.recipients + 1)
    ]
    for recipient in recipients[:500]:  # warm-up
        made.return_path(recipient)
        made.render(recipient)
    size = 0
    started = time.process_time()
    for recipient in recipients:
        made.return_path(recipient)
        size += len(made.render(recipient).data)
    spent = time.process_time() - started
    print(
        f"{args.recipients:,} messages of ~{size // args.recipients:,} bytes: "
        f"{spent * 1e6 / args.recipients:.1f} us of CPU per message (return path and rendering)"
    )


if __name__ == "__main__":
    main()
