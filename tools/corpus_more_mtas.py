"""Private, throwaway OpenSMTPD, Sendmail and Courier instances for tools/bounce_corpus.py, run like Postfix and Exim
(tools/corpus_mtas.py): the Debian packages' programs, unpacked with `apt-get download` + `dpkg -x`, run as
root from a temporary directory on loopback ports; nothing installed, nothing left running, no file of the
machine changed.

- OpenSMTPD (Debian `opensmtpd`) has its users (`opensmtpd`, `opensmtpq`), its spool (/var/spool/smtpd),
  its chroot (/var/lib/opensmtpd/empty) and its control socket (/var/run/smtpd.sock) compiled in. It runs
  in private mount and UTS namespaces where copies of /etc/passwd and /etc/group that name those users,
  and a /var of the work directory, are bind-mounted over the real ones, and the host name is the
  sender's. Its retry backoff starts at minutes, so the tool asks it to retry its queue every 3 s
  (`smtpctl schedule all`, run inside the same namespace), as an operator would.
- Sendmail (Debian `sendmail-bin`, with `sendmail-cf`'s m4 files and `m4`) reads any configuration given
  with -C: the tool writes a .mc, builds the .cf with the unpacked m4 and sendmail-cf, and routes each test
  domain through a mailertable (built with the package's makemap) to a mailer of its own that connects to
  the loopback port of that domain's server. Only its host name is private (UTS namespace).
- Courier (Debian `courier-mta`, with `courier-base` and `courier-authlib`) has every path compiled in
  and expects its maintainer scripts to have prepared them. It runs chrooted, in private mount and UTS
  namespaces, into a root whose /usr, /etc and /var are the unpacked packages laid over the machine's
  with overlayfs, every change going to a tmpfs that vanishes with the namespace; the setup its
  maintainer scripts would do, and its configuration, are done there.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.postfix import TOOLS, UnpackedPackage, unpacked_package
from tools.corpus_mtas import in_namespace, stop_process, users_files, wait_for_port

# --- OpenSMTPD -------------------------------------------------------------------------------------------

_SMTPD, _SMTPCTL = "usr/sbin/smtpd", "usr/sbin/smtpctl"
# The users Debian's build names; the private namespace gives them these uids.
_OPENSMTPD_USERS = {"opensmtpd": 64_978, "opensmtpq": 64_979}
# How often the tool asks OpenSMTPD to retry its queue.
KICK_SECONDS = 3.0

_SMTPD_CONF = """\
# Written by tools/bounce_corpus.py: a private OpenSMTPD that sends the corpus's campaign messages.
queue ttl {lifetime}
bounce warn-interval {delay_warning}
listen on 127.0.0.1 port {port} hostname {hostname}
{actions}
action "dns" relay
{matches}
match from any for any action "dns"
match from local for any action "dns"
"""


def opensmtpd_package(cache: Path = TOOLS / "opensmtpd") -> UnpackedPackage:
    return unpacked_package("opensmtpd", [_SMTPD, _SMTPCTL], cache)


class PrivateOpenSmtpd:
    """One OpenSMTPD on 127.0.0.1:`port`, relaying each domain of `routes` to its loopback port, the rest by DNS."""

    def __init__(
        self,
        package: UnpackedPackage,
        workdir: Path,
        *,
        hostname: str,
        port: int,
        routes: Mapping[str, int],
        delay_warning: str,
        lifetime: str,
    ) -> None:
        self.package, self.workdir, self.hostname, self.port = package, workdir, hostname, port
        self.routes, self.delay_warning, self.lifetime = dict(routes), delay_warning, lifetime
        self.config = workdir / "smtpd.conf"
        self._daemon: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._kicker: threading.Thread | None = None

    def version(self) -> str:
        """ "6.8.0p2", from `smtpd -h`."""
        result = subprocess.run(
            [str(self.package.root / _SMTPD), "-h"], env=self.package.env(), capture_output=True, text=True
        )
        match = re.search(r"OpenSMTPD (\S+)", result.stdout + result.stderr)
        if match is None:
            raise RuntimeError(f"cannot read OpenSMTPD's version from:\n{result.stdout}{result.stderr}")
        return match.group(1)

    def write_config(self) -> None:
        var = self.workdir / "var"
        for path, mode in ((var, 0o755), (var / "spool", 0o755), (var / "run", 0o755), (var / "lib", 0o755)):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
        empty = var / "lib" / "opensmtpd" / "empty"
        empty.mkdir(parents=True, exist_ok=True)
        empty.chmod(0o711)
        users_files(self.workdir, _OPENSMTPD_USERS)
        ports = sorted(set(self.routes.values()))
        self.config.write_text(
            _SMTPD_CONF.format(
                lifetime=self.lifetime,
                delay_warning=self.delay_warning,
                port=self.port,
                hostname=self.hostname,
                actions="\n".join(f'action "port_{p}" relay host smtp://127.0.0.1:{p}' for p in ports),
                matches="\n".join(
                    f'match from {origin} for domain "{domain}" action "port_{p}"'
                    for domain, p in self.routes.items()
                    for origin in ("any", "local")
                ),
            )
        )
        self.config.chmod(0o644)

    def _command(self, *args: str) -> list[str]:
        binds = [
            (self.workdir / "passwd", "/etc/passwd"),
            (self.workdir / "group", "/etc/group"),
            (self.workdir / "var", "/var"),
        ]
        return in_namespace([str(self.package.root / _SMTPD), *args], binds=binds, hostname=self.hostname)

    def start(self) -> None:
        self.write_config()
        with open(self.workdir / "daemon.out", "wb") as output:
            self._daemon = subprocess.Popen(
                self._command("-d", "-f", str(self.config)),
                env=self.package.env(),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self._daemon, "OpenSMTPD")
        self._kicker = threading.Thread(target=self._kick, name="opensmtpd-kick", daemon=True)
        self._kicker.start()

    def _kick(self) -> None:
        """`smtpctl schedule all` every KICK_SECONDS, inside the daemon's namespace (its control socket is there)."""
        assert self._daemon is not None
        smtpctl = str(self.package.root / _SMTPCTL)
        # smtpctl insists on running with the group opensmtpq (Debian installs it setgid).
        group = str(_OPENSMTPD_USERS["opensmtpq"])
        command = [
            *("nsenter", "--target", str(self._daemon.pid), "--mount", "--"),
            *("setpriv", "--regid", group, "--clear-groups", smtpctl, "schedule", "all"),
        ]
        while not self._stopping.wait(KICK_SECONDS):
            if self._daemon.poll() is not None:
                return
            result = subprocess.run(command, env=self.package.env(), capture_output=True, text=True)
            if result.returncode != 0:
                with open(self.workdir / "kick.log", "a") as log:
                    log.write(result.stdout + result.stderr)

    def stop(self) -> None:
        self._stopping.set()
        if self._kicker is not None:
            self._kicker.join(10)
        stop_process(self._daemon)

    def log(self) -> str:
        parts = [self.workdir / "daemon.out", self.workdir / "kick.log"]
        return "\n".join(path.read_text(errors="replace") for path in parts if path.exists())


# --- Sendmail --------------------------------------------------------------------------------------------

_SENDMAIL, _MAKEMAP = "usr/libexec/sendmail/sendmail", "usr/libexec/sendmail/makemap"
_CF_DIR, _M4 = "usr/share/sendmail/cf", "usr/bin/m4"

_SENDMAIL_MC = """\
divert(-1)
# Written by tools/bounce_corpus.py: a private Sendmail that sends the corpus's campaign messages.
divert(0)dnl
VERSIONID(`Herald bounce corpus')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `{hostname}')dnl
define(`QUEUE_DIR', `{workdir}/queue')dnl
define(`STATUS_FILE', `{workdir}/statistics')dnl
define(`confPID_FILE', `{workdir}/sendmail.pid')dnl
define(`confCW_FILE', `{workdir}/local-host-names')dnl
define(`confCT_FILE', `{workdir}/trusted-users')dnl
define(`ALIAS_FILE', `')dnl
define(`confHELP_FILE', `')dnl
define(`confTO_QUEUEWARN', `{delay_warning}')dnl
define(`confTO_QUEUERETURN', `{lifetime}')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
dnl The work directory lives under /tmp, which Sendmail's file-safety checks refuse by default.
define(`confDONT_BLAME_SENDMAIL', `GroupWritableDirPathSafe,MapInUnsafeDirPath')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`nouucp', `reject')dnl
FEATURE(`mailertable', `hash {workdir}/mailertable')dnl
MAILER(`local')dnl
MAILER(`smtp')dnl
MAILER_DEFINITIONS
{mailers}
"""

# One mailer per loopback port: Sendmail's TCP mailers take the port from their A= arguments.
_SENDMAIL_MAILER = (
    "Mport{port},\tP=[IPC], F=mDFMuXa, S=EnvFromSMTP/HdrFromSMTP, R=EnvToSMTP, E=\\r\\n, L=990,\n"
    "\t\tT=DNS/RFC822/SMTP,\n"
    "\t\tA=TCP $h {port}"
)


def sendmail_packages(cache: Path = TOOLS / "sendmail") -> tuple[UnpackedPackage, UnpackedPackage]:
    """sendmail-bin with sendmail-cf's m4 files (one tree), and m4 to build the .cf."""
    unpacked_package("sendmail-cf", [f"{_CF_DIR}/m4/cf.m4"], cache)
    sendmail = unpacked_package("sendmail-bin", [_SENDMAIL, _MAKEMAP], cache)
    return sendmail, unpacked_package("m4", [_M4], cache.parent / "m4")


class PrivateSendmail:
    """One Sendmail daemon on 127.0.0.1:`port`, routing each domain of `routes` to its loopback port."""

    def __init__(
        self,
        packages: tuple[UnpackedPackage, UnpackedPackage],
        workdir: Path,
        *,
        hostname: str,
        port: int,
        routes: Mapping[str, int],
        delay_warning: str,
        lifetime: str,
        retry: str,
    ) -> None:
        (self.package, self.m4), self.workdir = packages, workdir
        self.hostname, self.port, self.routes = hostname, port, dict(routes)
        self.delay_warning, self.lifetime, self.retry = delay_warning, lifetime, retry
        self.config = workdir / "sendmail.cf"
        self._daemon: subprocess.Popen[bytes] | None = None

    def _program(self, path: str, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(self.package.root / path), *args],
            env=self.package.env(),
            input=stdin,
            capture_output=True,
            text=True,
        )
        return result.stdout + result.stderr

    def version(self) -> str:
        """ "8.17.1.9", from the debug output of `sendmail -d0.1`."""
        self.write_config()
        output = self._program(_SENDMAIL, "-d0.1", "-bt", "-C", str(self.config), stdin="")
        match = re.search(r"^Version (\S+)", output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"cannot read Sendmail's version from:\n{output}")
        return match.group(1)

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        (self.workdir / "queue").mkdir(exist_ok=True)
        (self.workdir / "queue").chmod(0o700)
        for name in ("local-host-names", "trusted-users"):
            (self.workdir / name).write_text("")
        ports = sorted(set(self.routes.values()))
        mc = _SENDMAIL_MC.format(
            hostname=self.hostname,
            workdir=self.workdir,
            port=self.port,
            delay_warning=self.delay_warning,
            lifetime=self.lifetime,
            mailers="\n".join(_SENDMAIL_MAILER.format(port=p) for p in ports),
        )
        (self.workdir / "sendmail.mc").write_text(mc)
        cf_dir = self.package.root / _CF_DIR
        built = subprocess.run(
            [str(self.m4.root / _M4), f"-D_CF_DIR_={cf_dir}/", str(cf_dir / "m4" / "cf.m4"), "-"],
            input=mc,
            env=self.m4.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        self.config.write_text(built.stdout)
        self.config.chmod(0o644)
        table = "".join(f"{domain}\tport{p}:[127.0.0.1]\n" for domain, p in self.routes.items())
        (self.workdir / "mailertable.txt").write_text(table)
        self._program(_MAKEMAP, "-C", str(self.config), "hash", str(self.workdir / "mailertable"), stdin=table)
        if not (self.workdir / "mailertable.db").exists():
            raise RuntimeError("makemap did not build the mailertable")

    def start(self) -> None:
        self.write_config()
        command = [str(self.package.root / _SENDMAIL), "-bD", f"-q{self.retry}", "-C", str(self.config)]
        with open(self.workdir / "daemon.out", "wb") as output:
            self._daemon = subprocess.Popen(
                in_namespace(command, hostname=self.hostname),
                env=self.package.env(),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self._daemon, "Sendmail", timeout=60)

    def stop(self) -> None:
        stop_process(self._daemon)

    def log(self) -> str:
        """Sendmail logs to syslog; what is left here is its output and the queue."""
        out = self.workdir / "daemon.out"
        queue = sorted(path.name for path in (self.workdir / "queue").iterdir())
        return (out.read_text(errors="replace") if out.exists() else "") + f"\nqueue: {queue}\n"


# --- Courier ---------------------------------------------------------------------------------------------

# courier-mta's programs with courier-base's and courier-authlib's, and the libraries they link.
_COURIER_PACKAGES = {
    "courier-base": "usr/bin/courier-config",
    "courier-authlib": "usr/lib/x86_64-linux-gnu/courier-authlib/libcourierauth.so",
    "courier-mta": "usr/lib/courier/courier/courierd",
}
_COURIER_PROGRAMS = ["usr/sbin/courier", "usr/lib/courier/courier/courierd", "usr/sbin/couriertcpd"]
_COURIER_UID = 64_980

# Run by `unshare --mount --uts`: a root of overlays (the unpacked packages over the machine's /usr, /etc and
# /var, changes kept in a tmpfs), the work directory at /mnt, then the setup inside a chroot of it.
_COURIER_NAMESPACE = """\
set -e
mount -t tmpfs herald-corpus /srv
mkdir -p /srv/root /srv/upper /srv/work
for d in usr etc var; do
    mkdir -p /srv/root/$d /srv/upper/$d /srv/work/$d
    mount -t overlay herald-corpus -o lowerdir={package}/$d:/$d,upperdir=/srv/upper/$d,workdir=/srv/work/$d /srv/root/$d
done
for d in bin lib lib64 sbin; do ln -s usr/$d /srv/root/$d; done
mkdir -p /srv/root/proc /srv/root/dev /srv/root/run /srv/root/tmp /srv/root/mnt
mount -t proc proc /srv/root/proc
mount --bind /dev /srv/root/dev
mount -t tmpfs herald-corpus /srv/root/run
mount -t tmpfs -o mode=1777 herald-corpus /srv/root/tmp
mount --bind {workdir} /srv/root/mnt
hostname {hostname}
exec chroot /srv/root /bin/sh /mnt/inside.sh
"""

# Inside the chroot: what the packages' maintainer scripts would have done, the configuration, then Courier.
_COURIER_INSIDE = """\
set -e
echo 'courier:x:{uid}:{uid}::/var/lib/courier:/usr/sbin/nologin' >> /etc/passwd
echo 'courier:x:{uid}:' >> /etc/group
for n in makedat deliverquota maildirmake lockmail preline; do ln -sf $n.courier /usr/bin/$n; done
C=/etc/courier
chown root:courier $C
chown -R courier:courier /var/lib/courier
chmod 750 /var/lib/courier && chmod 770 /var/lib/courier/tmp
chown courier:courier /usr/lib/courier/courier/submitmkdir && chmod 4755 /usr/lib/courier/courier/submitmkdir
mkdir -p /run/courier && chown courier:courier /run/courier
echo {hostname} > $C/me
echo {hostname} > $C/defaultdomain
echo localhost > $C/locals
echo '"Courier mail server at {hostname}" <@>' > $C/dsnfrom
echo {lifetime} > $C/queuetime
echo {delay_warning} > $C/warntime
echo {retry} > $C/retryalpha && echo 3 > $C/retrybeta && echo {retry} > $C/retrygamma && echo 0 > $C/retrymaxdelta
cat > $C/esmtproutes <<'ROUTES'
{routes}
ROUTES
sed -i 's/^PORT=.*/PORT={port}/; s/^BOFHCHECKDNS=.*/BOFHCHECKDNS=0/; s/^TARPIT=.*/TARPIT=0/' $C/esmtpd
echo 'ADDRESS=127.0.0.1' >> $C/esmtpd
mkdir -p $C/smtpaccess && printf '127.0.0.1\\tallow,RELAYCLIENT\\n' > $C/smtpaccess/default
/usr/lib/courier/makesmtpaccess
/usr/lib/courier/makeacceptmailfor
/usr/sbin/makealiases
/usr/lib/courier/esmtpd start
set -a
. $C/courierd
exec /usr/lib/courier/courier/courierd
"""


def courier_package(cache: Path = TOOLS / "courier") -> UnpackedPackage:
    """courier-mta with courier-base and courier-authlib, unpacked into one tree."""
    for name, program in _COURIER_PACKAGES.items():
        unpacked_package(name, [program], cache)
    return unpacked_package("courier-mta", _COURIER_PROGRAMS, cache)


def _session_processes(session: int) -> list[int]:
    """The processes of a session (Courier's daemons detach from their parent but stay in it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # fields: state, ppid, pgrp, session...; a zombie is gone already, only its parent may reap it.
        if len(fields) > 3 and int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry.name))
    return found


class PrivateCourier:
    """One Courier (courierd and its esmtpd) on 127.0.0.1:`port`, routing each domain of `routes` to its port.

    Courier's paths (/etc/courier, /var/lib/courier, /usr/lib/courier, /run/courier) are compiled in, and
    its maintainer scripts prepare them. It runs in private mount and UTS namespaces, chrooted into a root
    whose /usr, /etc and /var are the unpacked packages laid over the machine's with overlayfs, the changes
    going to a tmpfs that vanishes with the namespace. Its daemons detach, so it runs in a session of its
    own, and `stop` ends every process of that session."""

    def __init__(
        self,
        package: UnpackedPackage,
        workdir: Path,
        *,
        hostname: str,
        port: int,
        routes: Mapping[str, int],
        delay_warning: str,
        lifetime: str,
        retry: str,
    ) -> None:
        self.package, self.workdir, self.hostname, self.port = package, workdir, hostname, port
        self.routes = dict(routes)
        self.delay_warning, self.lifetime, self.retry = delay_warning, lifetime, retry
        self._daemon: subprocess.Popen[bytes] | None = None

    def version(self) -> str:
        """ "1.0.16", from `courier --version`."""
        result = subprocess.run(
            [str(self.package.root / "usr/sbin/courier"), "--version"],
            env=self.package.env(),
            capture_output=True,
            text=True,
        )
        match = re.search(r"Courier (\S+)", result.stdout + result.stderr)
        if match is None:
            raise RuntimeError(f"cannot read Courier's version from:\n{result.stdout}{result.stderr}")
        return match.group(1)

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        (self.workdir / "namespace.sh").write_text(
            _COURIER_NAMESPACE.format(package=self.package.root, workdir=self.workdir, hostname=self.hostname)
        )
        (self.workdir / "inside.sh").write_text(
            _COURIER_INSIDE.format(
                uid=_COURIER_UID,
                hostname=self.hostname,
                lifetime=self.lifetime,
                delay_warning=self.delay_warning,
                retry=self.retry,
                port=self.port,
                routes="\n".join(f"{domain}: [127.0.0.1],{p}" for domain, p in self.routes.items()),
            )
        )

    def start(self) -> None:
        self.write_config()
        command = ["unshare", "--mount", "--uts", "--", "sh", str(self.workdir / "namespace.sh")]
        with open(self.workdir / "daemon.out", "wb") as output:
            self._daemon = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(self.port, self._daemon, "Courier")

    def stop(self) -> None:
        if self._daemon is None:
            return
        session = self._daemon.pid
        for signal_number in (signal.SIGTERM, signal.SIGKILL):
            for pid in _session_processes(session):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
            deadline = time.monotonic() + 10
            while _session_processes(session) and time.monotonic() < deadline:
                time.sleep(0.2)
                self._daemon.poll()
        self._daemon.wait(5)

    def log(self) -> str:
        path = self.workdir / "daemon.out"
        return path.read_text(errors="replace") if path.exists() else ""
