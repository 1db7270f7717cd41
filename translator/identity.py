"""Identity at the edge: users and admins with hashed API keys and passwords, login sessions, and principal tokens."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import auth, db
from services.common.config import Settings
from translator.ratelimit import LoginThrottle

SCHEMA = "identity"
# The `svc` claim of the tokens the translator mints for its own calls (auth.Principal.service).
SERVICE = "translator"
ALL_PERMISSIONS = "*"
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
# Authenticating a key costs a query; legacy clients send their key on every request, so a
# short cache keeps the hot path off the database. Revocation takes effect within this time.
_CACHE_SECONDS = 5.0
# A login for a username that does not exist checks its password against this stand-in, so it costs
# the same scrypt run as a wrong password for one that does: the time to answer tells them apart no
# more than the answer does. Its digest is all zeros, which no password hashes to.
_NO_ACCOUNT_HASH = f"scrypt${secrets.token_bytes(16).hex()}${'00' * 32}"

PASSWORD_CHECKS = Counter(
    "herald_translator_password_checks_total",
    "scrypt password verifications at login, the stand-in ones for unknown usernames included",
)


class IdentityError(Exception):
    """A user or admin could not be created (for example, the username is taken)."""


@dataclass(frozen=True)
class Caller:
    """An authenticated legacy caller: a user or an admin."""

    user_id: int = 0
    admin_id: int = 0
    permissions: frozenset[str] = frozenset()
    untrusted: bool = False

    @property
    def is_admin(self) -> bool:
        return self.admin_id != 0

    def may(self, permission: str) -> bool:
        return self.is_admin or ALL_PERMISSIONS in self.permissions or permission in self.permissions

    def principal(self) -> auth.Principal:
        return auth.Principal(
            user_id=self.user_id, is_admin=self.is_admin, permissions=self.permissions, untrusted=self.untrusted
        )


def new_api_key() -> str:
    """XXXX-XXXX-XXXX-XXXX, as legacy clients expect (about 82 bits of randomness)."""
    return "-".join("".join(secrets.choice(_KEY_ALPHABET) for _ in range(4)) for _ in range(4))


def key_hash(secret: str) -> str:
    # API keys and session ids are random, so a fast hash is enough; passwords get scrypt.
    return hashlib.sha256(secret.strip().encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    PASSWORD_CHECKS.inc()
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


class IdentityStore:
    """Users, admins and sessions in the `identity` schema, plus the principal tokens minted for them."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._secret = settings.effective_token_secret()
        self._key_cache: dict[str, tuple[float, Caller | None]] = {}
        # One lookup per credential at a time: when a cached entry expires under load, the requests
        # that arrive before the query answers wait for that query instead of each running their own.
        self._lookups: dict[str, asyncio.Future[Caller | None]] = {}
        self._token_cache: dict[Caller, tuple[float, str]] = {}
        self._system_token: tuple[float, str] | None = None
        self._logins = LoginThrottle(
            per_username=settings.login_failures_per_username,
            per_address=settings.login_failures_per_address,
            window=settings.login_window_seconds,
        )

    @classmethod
    async def open(cls, settings: Settings) -> IdentityStore:
        engine = db.make_engine(settings)
        await db.migrate(engine, SCHEMA, Path(__file__).with_name("migrations"), with_outbox=False)
        return cls(engine, settings)

    async def close(self) -> None:
        await self._engine.dispose()

    @property
    def settings(self) -> Settings:
        """The settings the translator was started with."""
        return self._settings

    async def create_user(
        self,
        username: str,
        password: str,
        *,
        permissions: list[str],
        email: str = "",
        untrusted: bool = False,
    ) -> dict[str, Any]:
        if not username.strip() or not password:
            raise IdentityError("username and password are required")
        api_key = new_api_key()
        try:
            async with self._engine.begin() as conn:
                user_id = (
                    await conn.execute(
                        text(
                            "INSERT INTO identity.users (username, email_address, password_hash, api_key_hash, "
                            "permissions, untrusted) VALUES (:u, :e, :p, :k, :perms, :untrusted) RETURNING user_id"
                        ),
                        {
                            "u": username.strip(),
                            "e": email,
                            "p": await asyncio.to_thread(hash_password, password),
                            "k": key_hash(api_key),
                            "perms": permissions,
                            "untrusted": untrusted,
                        },
                    )
                ).scalar_one()
        except IntegrityError as exc:
            raise IdentityError(f"username {username!r} is taken") from exc
        return {"UserID": user_id, "APIKey": api_key}

    async def create_admin(self, username: str, password: str) -> dict[str, Any]:
        if not username.strip() or not password:
            raise IdentityError("username and password are required")
        api_key = new_api_key()
        try:
            async with self._engine.begin() as conn:
                admin_id = (
                    await conn.execute(
                        text(
                            "INSERT INTO identity.admins (username, password_hash, api_key_hash) "
                            "VALUES (:u, :p, :k) RETURNING admin_id"
                        ),
                        {
                            "u": username.strip(),
                            "p": await asyncio.to_thread(hash_password, password),
                            "k": key_hash(api_key),
                        },
                    )
                ).scalar_one()
        except IntegrityError as exc:
            raise IdentityError(f"admin username {username!r} is taken") from exc
        return {"AdminID": admin_id, "AdminAPIKey": api_key}

    async def set_untrusted(self, user_id: int, untrusted: bool) -> dict[str, Any]:
        """Marks a user (un)trusted: an untrusted user's campaigns wait for an admin's approval (RULINGS 8)."""
        async with self._engine.begin() as conn:
            found = (
                await conn.execute(
                    text("UPDATE identity.users SET untrusted = :t WHERE user_id = :u RETURNING user_id"),
                    {"t": untrusted, "u": user_id},
                )
            ).first()
        if found is None:
            raise IdentityError(f"no user {user_id}")
        return {"UserID": user_id, "Untrusted": untrusted}

    async def reissue_key(self, *, user_id: int | None = None, username: str = "") -> dict[str, Any]:
        """`herald user reissue-key`: a new API key for a user, found by id or (case-insensitive) username.

        Only its hash is stored, so a lost key cannot be shown again, only replaced. The old key stops
        working once the translators' look-up caches let it go (_CACHE_SECONDS); sessions opened
        with it stay valid until they expire.
        """
        api_key = new_api_key()
        who: int | str
        if user_id is not None:
            match, who, named = "user_id = :who", user_id, f"no user {user_id}"
        else:
            match, who, named = "lower(username) = lower(:who)", username.strip(), f"no user named {username!r}"
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    text(f"UPDATE identity.users SET api_key_hash = :k WHERE {match} RETURNING user_id, username"),
                    {"k": key_hash(api_key), "who": who},
                )
            ).first()
        if row is None:
            raise IdentityError(named)
        return {"UserID": row[0], "Username": row[1], "APIKey": api_key}

    async def list_users(self) -> list[dict[str, Any]]:
        """`herald user list`: every user's attributes, without password or key hashes."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT user_id, username, email_address, account_status, permissions, untrusted, "
                        "created_at FROM identity.users ORDER BY user_id"
                    )
                )
            ).all()
        return [
            {
                "UserID": row[0],
                "Username": row[1],
                "EmailAddress": row[2],
                "AccountStatus": row[3],
                "Permissions": list(row[4]),
                "Untrusted": row[5],
                "CreatedOn": row[6].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            }
            for row in rows
        ]

    async def _caller_by_key(self, hashed: str) -> Caller | None:
        async with self._engine.connect() as conn:
            user = (
                await conn.execute(
                    text(
                        "SELECT user_id, permissions, untrusted FROM identity.users "
                        "WHERE api_key_hash = :k AND account_status = 'Active'"
                    ),
                    {"k": hashed},
                )
            ).first()
            if user is not None:
                return Caller(user_id=user[0], permissions=frozenset(user[1]), untrusted=user[2])
            admin = (
                await conn.execute(
                    text("SELECT admin_id FROM identity.admins WHERE api_key_hash = :k"), {"k": hashed}
                )
            ).first()
            return Caller(admin_id=admin[0]) if admin is not None else None

    async def _caller_by_session(self, hashed: str) -> Caller | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT s.admin_id, u.user_id, u.permissions, u.untrusted FROM identity.sessions s "
                        "LEFT JOIN identity.users u ON u.user_id = s.user_id AND u.account_status = 'Active' "
                        "WHERE s.session_hash = :h AND s.expires_at > now()"
                    ),
                    {"h": hashed},
                )
            ).first()
        if row is None:
            return None
        if row[0] is not None:
            return Caller(admin_id=row[0])
        if row[1] is None:
            return None
        return Caller(user_id=row[1], permissions=frozenset(row[2]), untrusted=row[3])

    async def authenticate(self, *, api_key: str = "", session_id: str = "") -> Caller | None:
        """The caller behind an API key (user or admin) or a session id; None when unknown or expired."""
        secret = api_key or session_id
        if not secret:
            return None
        cache_key = ("k:" if api_key else "s:") + key_hash(secret)
        now = time.monotonic()
        cached = self._key_cache.get(cache_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._lookups.get(cache_key)
        if pending is None:
            pending = asyncio.ensure_future(self._look_up(cache_key, by_key=bool(api_key)))
            self._lookups[cache_key] = pending
            pending.add_done_callback(lambda done: self._looked_up(cache_key, done))
        # Shielded: a waiter that goes away (its client hung up) does not cancel the others' lookup.
        return await asyncio.shield(pending)

    async def _look_up(self, cache_key: str, *, by_key: bool) -> Caller | None:
        hashed = cache_key[2:]
        caller = await (self._caller_by_key(hashed) if by_key else self._caller_by_session(hashed))
        if len(self._key_cache) > 10_000:
            self._key_cache.clear()
        self._key_cache[cache_key] = (time.monotonic() + _CACHE_SECONDS, caller)
        return caller

    def _looked_up(self, cache_key: str, done: asyncio.Future[Caller | None]) -> None:
        self._lookups.pop(cache_key, None)
        if not done.cancelled():
            done.exception()  # retrieved here too, in case every waiter went away

    async def _new_session(self, *, user_id: int | None = None, admin_id: int | None = None) -> str:
        session_id = secrets.token_hex(24)
        async with self._engine.begin() as conn:
            await conn.execute(text("DELETE FROM identity.sessions WHERE expires_at < now()"))
            await conn.execute(
                text(
                    "INSERT INTO identity.sessions (session_hash, user_id, admin_id, expires_at) "
                    "VALUES (:h, :u, :a, :exp)"
                ),
                {
                    "h": key_hash(session_id),
                    "u": user_id,
                    "a": admin_id,
                    "exp": datetime.now(UTC) + timedelta(seconds=self._settings.session_ttl_seconds),
                },
            )
        return session_id

    async def _account_row(self, table: str, *, username: str, api_key: str) -> Any:
        """The account row for a login by API key or by username (users: active ones only), or None."""
        if not api_key and "\x00" in username:
            return None  # no account has one: PostgreSQL text cannot hold NUL (and refuses the query)
        active = " AND account_status = 'Active'" if table == "users" else ""
        match, value = (
            ("api_key_hash = :v", key_hash(api_key))
            if api_key
            else ("lower(username) = lower(:v)", username.strip())
        )
        query = f"SELECT * FROM identity.{table} WHERE {match}{active}"
        async with self._engine.connect() as conn:
            return (await conn.execute(text(query), {"v": value})).mappings().first()

    async def _log_in(self, account: str, *, username: str, password: str, api_key: str, client: str) -> Any:
        """The account row when the credentials are right, else None; RateLimited while throttled.

        A password login does the same work whether the username exists or not: one query and one
        scrypt run (against a stand-in hash for an unknown username).
        """
        name = "" if api_key else username
        moment = self._logins.attempt(account, name, client)
        try:
            row = await self._account_row(f"{account}s", username=username, api_key=api_key)
            if api_key:
                right = row is not None
            else:
                stored = row["password_hash"] if row is not None else _NO_ACCOUNT_HASH
                right = await asyncio.to_thread(password_matches, password, stored) and row is not None
        except BaseException:
            # Not a wrong password: the database failed or the client went away.
            self._logins.withdraw(account, name, client, moment)
            raise
        if not right:
            return None
        self._logins.succeeded(account, name, client, moment)
        return row

    async def login_user(
        self, *, username: str = "", password: str = "", api_key: str = "", client: str = ""
    ) -> dict[str, Any] | None:
        """SessionID and UserInfo for valid credentials (username + password, or an API key); None otherwise.

        Raises RateLimited while the username or the client address has too many recent failures.
        """
        row = await self._log_in("user", username=username, password=password, api_key=api_key, client=client)
        if row is None:
            return None
        return {
            "SessionID": await self._new_session(user_id=row["user_id"]),
            "UserInfo": {
                "UserID": row["user_id"],
                "Username": row["username"],
                "EmailAddress": row["email_address"],
                "FirstName": row["first_name"],
                "LastName": row["last_name"],
                "AccountStatus": row["account_status"],
                "Untrusted": row["untrusted"],
            },
        }

    async def login_admin(
        self, *, username: str = "", password: str = "", api_key: str = "", client: str = ""
    ) -> dict[str, Any] | None:
        """SessionID and AdminInfo for valid credentials; None otherwise; RateLimited like login_user."""
        row = await self._log_in("admin", username=username, password=password, api_key=api_key, client=client)
        if row is None:
            return None
        async with self._engine.begin() as conn:
            await conn.execute(
                text("UPDATE identity.admins SET last_login_at = now() WHERE admin_id = :a"),
                {"a": row["admin_id"]},
            )
        return {
            "SessionID": await self._new_session(admin_id=row["admin_id"]),
            "AdminInfo": {
                "AdminID": row["admin_id"],
                "Username": row["username"],
                "FirstName": "",
                "LastName": "",
                "EmailAddress": "",
                "2FA_Enabled": False,
                "CreatedOn": row["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
                "LastLoginOn": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            },
        }

    def token_for(self, caller: Caller) -> str:
        """A principal token for calling services on the caller's behalf, reused until shortly before it expires."""
        now = time.monotonic()
        cached = self._token_cache.get(caller)
        if cached is not None and cached[0] > now:
            return cached[1]
        ttl = self._settings.token_ttl_seconds
        token = auth.mint_token(caller.principal(), self._secret, ttl)
        if len(self._token_cache) > 10_000:
            self._token_cache.clear()
        self._token_cache[caller] = (now + ttl * 0.8, token)
        return token

    def system_token(self) -> str:
        """A token for the translator's own calls on no legacy caller's behalf (the public archive pages).

        An admin principal (user id 0) marked as the translator's, reused until shortly before it expires.
        """
        now = time.monotonic()
        if self._system_token is not None and self._system_token[0] > now:
            return self._system_token[1]
        ttl = self._settings.token_ttl_seconds
        token = auth.mint_token(auth.Principal(user_id=0, is_admin=True, service=SERVICE), self._secret, ttl)
        self._system_token = (now + ttl * 0.8, token)
        return token

    def service_token(self, principal: auth.Principal) -> str:
        """A token of the principal marked as the translator's, for a call the translator makes for its own
        needs while serving a legacy caller (see Context.as_translator); never handed to a caller."""
        return auth.service_token(principal, SERVICE, self._secret)

    async def mint_for(self, *, user_id: int | None, admin_id: int | None, ttl: int) -> dict[str, Any]:
        """`herald token mint`: a token for a direct gRPC caller acting as this user or admin."""
        async with self._engine.connect() as conn:
            if user_id is not None:
                row = (
                    await conn.execute(
                        text("SELECT permissions, untrusted FROM identity.users WHERE user_id = :u"),
                        {"u": user_id},
                    )
                ).first()
                if row is None:
                    raise IdentityError(f"no user {user_id}")
                principal = auth.Principal(user_id=user_id, permissions=frozenset(row[0]), untrusted=row[1])
            else:
                found = (
                    await conn.execute(text("SELECT 1 FROM identity.admins WHERE admin_id = :a"), {"a": admin_id})
                ).first()
                if found is None:
                    raise IdentityError(f"no admin {admin_id}")
                principal = auth.Principal(user_id=0, is_admin=True)
        return {"Token": auth.mint_token(principal, self._secret, ttl), "ExpiresIn": ttl}
