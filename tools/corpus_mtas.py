"""Private, throwaway Postfix and Exim instances for tools/bounce_corpus.py: the Debian packages' programs
run from a temporary directory on loopback ports, nothing installed and no system file changed.

Both need root (Postfix's master and Exim switch users). Postfix runs from its unpacked package with
every directory parameter pointing into the work directory (`master -c <conf> -d`, in the foreground).
Exim's Debian build looks up the user `Debian-exim` before it reads any configuration; the machine has
no such user, so Exim runs in a private mount namespace (`unshare --mount`, see `in_namespace`) where a
copy of /etc/passwd and /etc/group that names it is bind-mounted over the real ones.
tools/corpus_more_mtas.py runs OpenSMTPD and Sendmail the same way.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.postfix import TOOLS, UnpackedPackage, unpacked_package

# Postfix's daemons run as mail_owner; setgid_group must be another group, default_privs another user.
POSTFIX_OWNER, POSTFIX_GROUP, POSTFIX_PRIVS = "nobody", "mail", "daemon"
_POSTFIX_DAEMONS = "usr/lib/postfix/sbin"
POSTFIX_PROGRAMS = [
    "usr/sbin/postconf",
    *(
        f"{_POSTFIX_DAEMONS}/{name}"
        for name in ("master", "smtpd", "smtp", "qmgr", "cleanup", "bounce", "local", "trivial-rewrite")
    ),
]
_QUEUE_DIRS = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "saved", "trace")

# chroot off everywhere: the unpacked programs and their libraries live outside any chroot.
_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def postfix_package(cache: Path = TOOLS) -> UnpackedPackage:
    """Postfix's Debian package, unpacked as bench/postfix.py does for smtp-sink (the same cache)."""
    return unpacked_package("postfix", POSTFIX_PROGRAMS, cache)


def exim_package(cache: Path = TOOLS / "exim4") -> UnpackedPackage:
    """exim4-daemon-light's Debian package, unpacked beside Postfix's."""
    return unpacked_package("exim4-daemon-light", ["usr/sbin/exim4"], cache)


def package_version(package: UnpackedPackage, name: str) -> str:
    """The Debian version of the .deb that was unpacked (`3.7.11-0+deb12u1`)."""
    debs = sorted((package.root.parent / "debs").glob(f"{name}_*.deb"))
    if not debs:
        raise RuntimeError(f"no {name} package next to {package.root}")
    return debs[-1].name.split("_")[1].replace("%3a", ":")


def in_namespace(argv: Sequence[str], *, binds: Sequence[tuple[Path, str]] = (), hostname: str = "") -> list[str]:
    """`argv` run in a private mount namespace (and UTS namespace, named `hostname`, when given) in which each
    (file, target) of `binds` is bind-mounted over `target`. Only the program and its children see that:
    the machine's files and name stay as they are."""
    steps, values = [], []
    if hostname:
        steps.append('hostname "$1" && shift')
        values.append(hostname)
    for source, target in binds:
        steps.append('mount --bind "$1" "$2" && shift 2')
        values += [str(source), target]
    script = " && ".join([*steps, 'exec "$@"'])
    flags = ["--mount", *(["--uts"] if hostname else [])]
    return ["unshare", *flags, "--", "sh", "-c", script, "namespace", *values, *argv]


def users_files(workdir: Path, users: Mapping[str, int]) -> tuple[Path, Path]:
    """Copies of /etc/passwd and /etc/group in `workdir` that also name `users` (name -> uid, its own group)."""
    passwd, group = workdir / "passwd", workdir / "group"
    passwd.write_text(
        Path("/etc/passwd").read_text()
        + "".join(f"{name}:x:{uid}:{uid}::/nonexistent:/bin/false\n" for name, uid in users.items())
    )
    group.write_text(Path("/etc/group").read_text() + "".join(f"{name}:x:{uid}:\n" for name, uid in users.items()))
    for path in (passwd, group):
        path.chmod(0o644)
    return passwd, group


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class PrivatePostfix:
    """One Postfix instance in `workdir`, its smtpd on 127.0.0.1:`port`, with `settings` added to main.cf."""

    def __init__(
        self, package: UnpackedPackage, workdir: Path, *, name: str, port: int, settings: Mapping[str, str]
    ) -> None:
        self.package, self.workdir, self.name, self.port = package, workdir, name, port
        self.conf, self.queue, self.data = workdir / "conf", workdir / "queue", workdir / "data"
        self.settings = dict(settings)
        self._master: subprocess.Popen[bytes] | None = None

    def _main_cf(self) -> dict[str, str]:
        root = self.package.root
        return {
            "compatibility_level": "3.6",
            "config_directory": str(self.conf),
            "meta_directory": str(self.conf),
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "daemon_directory": str(root / _POSTFIX_DAEMONS),
            "command_directory": str(root / "usr/sbin"),
            "shlib_directory": str(root / "usr/lib/postfix"),
            "mail_owner": POSTFIX_OWNER,
            "setgid_group": POSTFIX_GROUP,
            "default_privs": POSTFIX_PRIVS,
            # The daemons find libpostfix-*.so through this (their RUNPATH is the uninstalled /usr/lib/postfix).
            "import_environment": f"MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH={self.package.library_path}",
            "maillog_file": str(self.workdir / "maillog"),
            "maillog_file_prefixes": str(self.workdir),
            "syslog_name": self.name,
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "alias_maps": "",
            "alias_database": "",
            "notify_classes": "",
            "biff": "no",
            **self.settings,
        }

    def write_config(self) -> None:
        owner = pwd.getpwnam(POSTFIX_OWNER).pw_uid
        group = grp.getgrnam(POSTFIX_GROUP).gr_gid
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # the daemons run as mail_owner and must reach their queue
        self.conf.mkdir(exist_ok=True)
        (self.conf / "main.cf").write_text("".join(f"{key} = {value}\n" for key, value in self._main_cf().items()))
        (self.conf / "master.cf").write_text(_MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        (self.conf / "dynamicmaps.cf").write_text("")  # only built-in map types (inline:) are used
        for path, mode, gid in (
            (self.queue, 0o755, 0),
            (self.data, 0o700, None),
            *((self.queue / name, 0o700, None) for name in (*_QUEUE_DIRS, "private")),
            (self.queue / "public", 0o710, group),
            (self.queue / "maildrop", 0o730, group),
        ):
            path.mkdir(exist_ok=True)
            path.chmod(mode)
            if path != self.queue:
                os.chown(path, owner, -1 if gid is None else gid)
        (self.queue / "pid").mkdir(exist_ok=True)

    def version(self) -> str:
        """mail_version as the unpacked postconf reports it."""
        return self._postconf("-d", "-h", "mail_version").strip()

    def _postconf(self, *args: str) -> str:
        command = [str(self.package.root / "usr/sbin/postconf"), "-c", str(self.conf), *args]
        return subprocess.run(command, env=self.package.env(), capture_output=True, text=True, check=True).stdout

    def start(self) -> None:
        self.write_config()
        with open(self.workdir / "master.out", "wb") as output:
            self._master = subprocess.Popen(
                [str(self.package.root / _POSTFIX_DAEMONS / "master"), "-c", str(self.conf), "-d"],
                env=self.package.env(),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self._master, f"Postfix {self.name}")

    def stop(self) -> None:
        stop_process(self._master)

    def log(self) -> str:
        path = self.workdir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""


# Exim's Debian build names its user at compile time; the private namespace gives it this uid.
_EXIM_USER, _EXIM_UID = "Debian-exim", 64_977

_EXIM_CONF = """\
primary_hostname = {hostname}
qualify_domain = {hostname}
exim_user = {user}
exim_group = {user}
spool_directory = {workdir}/spool
log_file_path = {workdir}/log/%slog
pid_file_path = {workdir}/exim.pid
local_interfaces = <; 127.0.0.1
daemon_smtp_ports = {port}
domainlist local_domains = {local_domain}
acl_smtp_rcpt = acl_check_rcpt
rfc1413_hosts =
tls_advertise_hosts =
host_lookup =
exim_path = {exim_path}
# Exim re-executes itself (queue runs, deliveries): the unpacked libraries must stay found.
keep_environment = LD_LIBRARY_PATH
# The first delay warning after {delay_warning}; the next ones hourly, never within a run.
delay_warning = {delay_warning}:1h
queue_run_max = 2
{extra}

begin acl

acl_check_rcpt:
  accept

begin routers

{routers}
dnslookup:
  driver = dnslookup
  domains = ! +local_domains
  transport = remote_smtp

local_user:
  driver = accept
  domains = +local_domains
  check_local_user
  transport = discard

begin transports

remote_smtp:
  driver = smtp
  hosts_try_fastopen = :

discard:
  driver = appendfile
  file = /dev/null
  user = {user}

{transports}
begin retry

*   *   F,{lifetime},{retry}
"""

_EXIM_ROUTE = """\
route_{index}:
  driver = manualroute
  domains = {domain}
  route_list = * 127.0.0.1
  self = send
  transport = port_{port}
"""

_EXIM_TRANSPORT = """\
port_{port}:
  driver = smtp
  port = {port}
  allow_localhost
  hosts_try_fastopen = :
"""


class PrivateExim:
    """One Exim daemon in `workdir` on 127.0.0.1:`port`, routing `routes` (domain -> loopback port) by SMTP."""

    def __init__(
        self,
        package: UnpackedPackage,
        workdir: Path,
        *,
        hostname: str,
        port: int,
        local_domain: str,
        routes: Mapping[str, int],
        delay_warning: str,
        lifetime: str,
        retry: str,
        extra: str = "",
    ) -> None:
        self.package, self.workdir, self.port = package, workdir, port
        self.config = workdir / "exim.conf"
        self._values = {
            "hostname": hostname,
            "exim_path": str(workdir / "exim4"),
            "user": _EXIM_USER,
            "workdir": str(workdir),
            "port": str(port),
            "local_domain": local_domain,
            "delay_warning": delay_warning,
            "lifetime": lifetime,
            "retry": retry,
            "extra": extra,
            "routers": "\n".join(
                _EXIM_ROUTE.format(index=index, domain=domain, port=target)
                for index, (domain, target) in enumerate(routes.items())
            ),
            "transports": "\n".join(
                _EXIM_TRANSPORT.format(port=target) for target in sorted(set(routes.values()))
            ),
        }
        self._daemon: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        for name in ("spool", "log"):
            (self.workdir / name).mkdir(exist_ok=True)
            os.chown(self.workdir / name, _EXIM_UID, _EXIM_UID)
        # A copy without the setuid bit: Exim re-executes itself as Debian-exim, and the loader ignores
        # LD_LIBRARY_PATH (where the unpacked libraries are) for a setuid program run by another user.
        shutil.copyfile(self.package.root / "usr/sbin/exim4", self._values["exim_path"])
        Path(self._values["exim_path"]).chmod(0o755)
        self.config.write_text(_EXIM_CONF.format(**self._values))
        self.config.chmod(0o644)
        users_files(self.workdir, {_EXIM_USER: _EXIM_UID})

    def _command(self, *args: str) -> list[str]:
        """Exim with `args`, in a mount namespace whose /etc/passwd and /etc/group name Debian-exim."""
        binds = [(self.workdir / "passwd", "/etc/passwd"), (self.workdir / "group", "/etc/group")]
        return in_namespace([self._values["exim_path"], *args], binds=binds)

    def version(self) -> str:
        """The version line of `exim -bV` ("4.96")."""
        self.write_config()
        output = subprocess.run(
            self._command("-C", str(self.config), "-bV"), env=self.package.env(), capture_output=True, text=True
        ).stdout
        match = re.search(r"^Exim version (\S+)", output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"cannot read Exim's version from:\n{output}")
        return match.group(1)

    def start(self) -> None:
        self.write_config()
        with open(self.workdir / "daemon.out", "wb") as output:
            self._daemon = subprocess.Popen(
                self._command("-C", str(self.config), "-bdf", "-q3s"),
                env=self.package.env(),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self._daemon, "Exim")

    def stop(self) -> None:
        stop_process(self._daemon)

    def log(self) -> str:
        parts = []
        for name in ("mainlog", "rejectlog", "paniclog"):
            path = self.workdir / "log" / name
            if path.exists():
                parts.append(f"== {name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)
