"""Import benchmark: a 1,000,000-row CSV streamed into one list with `herald subscribers import`, end to end,
beside a bare `COPY` of the same file into a plain table of the same PostgreSQL.

Run: `.venv/bin/python bench/import.py` (`--rows N` for another size). Prints the CLI's wall time and
rows/s, the COPY's, their ratio, and the peak memory (RSS, sampled every 0.2 s) of every Herald
process, of PostgreSQL (postmaster and its largest backend) and of the CLI. The target is 60 s and
500 MB per process for 1,000,000 rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import psycopg
from harness import ROOT, Herald, free_port, running_herald

PIECE = 1024 * 1024


def write_csv(path: Path, rows: int) -> None:
    """email, first name, last name and one custom column, like an export from another mailing tool."""
    with path.open("w") as out:
        out.write("email,first_name,last_name,city\n")
        for start in range(0, rows, 100_000):
            out.write(
                "".join(
                    f"subscriber{i}@example{i % 997}.com,First{i},Last{i},City{i % 500}\n"
                    for i in range(start, min(start + 100_000, rows))
                )
            )


class PeakMemory:
    """Samples the RSS of a set of processes every 0.2 s in a thread and keeps each one's peak."""

    def __init__(self) -> None:
        self.watched: dict[str, psutil.Process] = {}
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def watch(self, role: str, process: psutil.Process) -> None:
        self.watched[role] = process

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for role, process in list(self.watched.items()):
                try:
                    rss = process.memory_info().rss
                    # PostgreSQL forks a backend per connection: the largest one is reported.
                    if role == "postgres":
                        backends = [c.memory_info().rss for c in process.children()]
                        self.peaks["postgres backend"] = max([self.peaks.get("postgres backend", 0), *backends])
                except psutil.Error:
                    continue
                self.peaks[role] = max(self.peaks.get(role, 0), rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def database_url(herald: Herald) -> str:
    """The embedded PostgreSQL's URL, as `herald run` handed it to its services."""
    return str(herald.processes()["audience"].environ()["DATABASE_URL"])


def postmaster(herald: Herald) -> psutil.Process:
    pid = int((herald.data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    return psutil.Process(pid)


def _call(herald: Herald, command: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        herald.base_url + "/api.php",
        data=json.dumps(command).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, object] = json.load(response)
    return answer


def create_list(herald: Herald, api_key: str) -> int:
    """The list to import into, with the custom field its `city` column names (by alias): an import's
    columns must name fields the list has."""
    answer = _call(herald, {"Command": "list.create", "APIKey": api_key, "SubscriberListName": "Benchmark"})
    list_id = int(str(answer["ListID"]))
    field = {"FieldName": "City", "FieldType": "Single line", "MergeTagAlias": "city"}
    created = _call(
        herald, {"Command": "customfield.create", "APIKey": api_key, "SubscriberListID": list_id, **field}
    )
    assert created.get("Success") is True, created
    return list_id


def raw_copy(url: str, path: Path) -> float:
    """Seconds to COPY the file (CSV, header) into a bare table: PostgreSQL's own floor for the same rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE TABLE bench_copy (email text, first_name text, last_name text, city text)")
        started = time.perf_counter()
        with (
            conn.cursor().copy("COPY bench_copy FROM STDIN (FORMAT csv, HEADER true)") as copy,
            path.open("rb") as f,
        ):
            while data := f.read(PIECE):
                copy.write(data)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
    return elapsed


def run(rows: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="herald-import-bench-") as tmp,
        running_herald(
            # Its own capture SMTP port, so that it runs beside another Herald on this machine.
            {"HERALD_SMTP_CAPTURE_PORT": str(free_port())}
        ) as herald,
    ):
        path = Path(tmp) / "subscribers.csv"
        started = time.perf_counter()
        write_csv(path, rows)
        print(
            f"generated {rows:,} rows ({path.stat().st_size / 1e6:,.1f} MB) in {time.perf_counter() - started:.1f} s"
        )
        user = json.loads(herald.cli("user", "create", "--username", "bench", "--password", "bench-password"))
        list_id = create_list(herald, user["APIKey"])

        with PeakMemory() as memory:
            memory.watch("herald run", psutil.Process(herald.process.pid))
            for child in psutil.Process(herald.process.pid).children(recursive=True):
                command = child.cmdline()
                memory.watch(command[-1] if "serve" in command else child.name(), child)
            memory.watch("postgres", postmaster(herald))
            started = time.perf_counter()
            cli = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "subscribers", "import", "--list", str(list_id), str(path)],
                env=herald.env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            memory.watch("cli", psutil.Process(cli.pid))
            out, _ = cli.communicate()
            import_seconds = time.perf_counter() - started
        if cli.returncode != 0:
            raise SystemExit(f"the import failed: {out}")
        report = json.loads(out)
        if report["Imported"] != rows:
            raise SystemExit(f"expected {rows:,} imported rows: {report}")

        copy_seconds = raw_copy(database_url(herald), path)

        print(
            f"herald subscribers import  {import_seconds:7.2f} s   {rows / import_seconds:>10,.0f} rows/s   (target 60 s)"
        )
        print(f"bare COPY of the same file {copy_seconds:7.2f} s   {rows / copy_seconds:>10,.0f} rows/s")
        print(f"ratio import / COPY        {import_seconds / copy_seconds:7.1f}x")
        print("peak RSS (target 500 MB per process):")
        for role, peak in sorted(memory.peaks.items(), key=lambda item: -item[1]):
            print(f"  {role:<18} {peak / 1e6:8.1f} MB")
        print(
            "report: "
            + json.dumps({k: report[k] for k in ("TotalRows", "Imported", "Updated", "Duplicates", "Rejected")})
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    run(args.rows)


if __name__ == "__main__":
    main()
