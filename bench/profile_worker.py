"""Runs one delivery worker (`herald serve delivery-worker`) under cProfile and writes its statistics when it stops.

    .venv/bin/python bench/profile_worker.py OUT.prof   (with the environment of a worker `herald run` started)

bench/delivery.py --profile-worker OUT.prof starts it beside `herald run`'s own workers. Only the main thread (the
event loop, where the worker's Python runs) is profiled; cProfile slows it down, so read shares, not times.
"""

from __future__ import annotations

import cProfile
import runpy
import sys


def main() -> None:
    out = sys.argv[1]
    sys.argv = ["services.cli", "serve", "delivery-worker"]
    profile = cProfile.Profile()
    try:
        profile.runcall(runpy.run_module, "services.cli", run_name="__main__")
    except SystemExit:
        pass
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
