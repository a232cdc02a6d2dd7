"""Staff accounts, console sessions, login throttling and the audit log (issue 16, part 1).

Everything lives in the records database (``POSBOT_DATABASE_URL``), so every bot instance sees
the same accounts and sessions. Accounts are made from the CLI (``posbot staff add``); passwords
are hashed with argon2 (argon2-cffi); a session is a random token whose SHA-256 alone is stored,
with its own CSRF token; failed logins are counted per name (5) and per address (20).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Boolean, Column, DateTime, Integer, String, Text, delete, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, declarative_base

from kb.schema import add_missing_columns, utcnow

Base: Any = declarative_base()  # a class made at run time (see kb/schema.py)

#: Roles, weakest first: an agent answers merchants, an editor also edits the knowledge base,
#: an admin also manages accounts and reads the audit log.
ROLES = ("agent", "editor", "admin")
SESSION_HOURS = 12
#: Failed logins allowed per name within THROTTLE_MINUTES (guessing one account's password).
MAX_FAILURES = 5
#: Failed logins allowed per address, whatever the names (trying many accounts from one place).
#: Higher than per name: a shop or support office shares one address behind its router, and
#: one colleague's typos must not lock everyone else out.
MAX_ADDRESS_FAILURES = 20
THROTTLE_MINUTES = 15
MIN_PASSWORD = 10
#: The name merchants see when this person answers ("您好，我是人工客服小王"); the login name
#: is for staff only. Without one, merchants see the login name.
MAX_DISPLAY_NAME = 20
#: An agent whose console was seen within this many seconds is on duty (staff/accounts.py
#: ``agents_on_duty``): a handoff then waits for a person; otherwise the bot keeps answering.
ON_DUTY_SECONDS = 120

_HASHER = PasswordHasher()
#: Verified when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


class StaffUser(Base):
    __tablename__ = "staff_users"
    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(String(60), nullable=False, unique=True)
    role = Column(String(20), nullable=False)
    password_hash = Column(Text, nullable=False)
    disabled = Column(Boolean, nullable=False, default=False)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    display_name = Column(String(MAX_DISPLAY_NAME), nullable=True)


class StaffSession(Base):
    __tablename__ = "staff_sessions"
    token_hash = Column(String(64), primary_key=True)
    user_id = Column(Integer, nullable=False, index=True)
    csrf = Column(String(64), nullable=False)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    expires_at = Column(DateTime, nullable=False, index=True)
    #: Updated by every console request (the inbox polls every 5 s): who is on duty now.
    last_seen = Column(DateTime, nullable=False, default=utcnow, index=True)


class LoginFailure(Base):
    __tablename__ = "staff_login_failures"
    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(String(60), nullable=False, index=True)
    address = Column(String(64), nullable=False, index=True)
    at = Column(DateTime, nullable=False, default=utcnow, index=True)


class AuditEntry(Base):
    __tablename__ = "staff_audit"
    id = Column(Integer, primary_key=True, autoincrement=True)
    at = Column(DateTime, nullable=False, default=utcnow, index=True)
    staff = Column(String(60), nullable=False)
    action = Column(String(40), nullable=False)
    target = Column(String(255), nullable=False, default="")
    detail = Column(Text, nullable=False, default="")


@dataclass(frozen=True)
class StaffView:
    id: int
    name: str
    role: str
    disabled: bool
    display_name: str = ""

    @property
    def shown_name(self) -> str:
        """What a merchant reads as this person's name."""
        return self.display_name or self.name

    def can(self, role: str) -> bool:
        """Whether this account has ``role`` or a stronger one."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class SessionView:
    user: StaffView
    csrf: str

    def csrf_ok(self, token: Optional[str]) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, str(token))


@dataclass(frozen=True)
class AuditView:
    at: datetime
    staff: str
    action: str
    target: str
    detail: str


class StaffError(ValueError):
    """A staff account request that cannot be done, with the reason for the CLI."""


class Throttled(Exception):
    """Too many failed logins for this name or address: wait THROTTLE_MINUTES."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _view(row: StaffUser) -> StaffView:
    return StaffView(row.id, row.name, row.role, bool(row.disabled), row.display_name or "")


def _clean_display_name(display_name: str) -> str:
    display_name = " ".join(display_name.split())
    if len(display_name) > MAX_DISPLAY_NAME:
        raise StaffError(f"the display name must be at most {MAX_DISPLAY_NAME} characters")
    return display_name


class StaffStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        Base.metadata.create_all(engine)
        add_missing_columns(engine, [("staff_users", "display_name", f"VARCHAR({MAX_DISPLAY_NAME})")])

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ---- accounts (CLI)
    def add_user(self, name: str, role: str, password: str, display_name: str = "") -> StaffView:
        name = name.strip()
        display_name = _clean_display_name(display_name)
        if not name or len(name) > 60:
            raise StaffError("the name must be 1-60 characters")
        if role not in ROLES:
            raise StaffError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise StaffError(f"the password must have at least {MIN_PASSWORD} characters")
        with self._session() as session, session.begin():
            if session.scalar(select(StaffUser).where(StaffUser.name == name)) is not None:
                raise StaffError(f"{name!r} exists already")
            row = StaffUser(
                name=name,
                role=role,
                password_hash=_HASHER.hash(password),
                display_name=display_name or None,
            )
            session.add(row)
            session.flush()
            return _view(row)

    def set_display_name(self, name: str, display_name: str) -> StaffView:
        """Set (or, with "", clear) the name merchants see for this account."""
        display_name = _clean_display_name(display_name)
        with self._session() as session, session.begin():
            row = session.scalar(select(StaffUser).where(StaffUser.name == name))
            if row is None:
                raise StaffError(f"no staff account {name!r}")
            row.display_name = display_name or None
            return _view(row)

    def set_disabled(self, name: str, disabled: bool) -> StaffView:
        with self._session() as session, session.begin():
            row = session.scalar(select(StaffUser).where(StaffUser.name == name))
            if row is None:
                raise StaffError(f"no staff account {name!r}")
            row.disabled = disabled
            if disabled:
                session.execute(delete(StaffSession).where(StaffSession.user_id == row.id))
            return _view(row)

    def users(self) -> list[StaffView]:
        with self._session() as session:
            return [_view(r) for r in session.scalars(select(StaffUser).order_by(StaffUser.name))]

    # ---- logging in
    def authenticate(self, name: str, password: str, address: str) -> Optional[StaffView]:
        """The account, or None for a wrong name/password/disabled account (all alike).
        Raises Throttled after MAX_FAILURES recent failures for the name, or
        MAX_ADDRESS_FAILURES for the address."""
        since = utcnow() - timedelta(minutes=THROTTLE_MINUTES)
        with self._session() as session, session.begin():
            for column, value, allowed in (
                (LoginFailure.name, name, MAX_FAILURES),
                (LoginFailure.address, address, MAX_ADDRESS_FAILURES),
            ):
                failures = session.scalar(
                    select(func.count())
                    .select_from(LoginFailure)
                    .where(column == value, LoginFailure.at >= since)
                )
                if failures >= allowed:
                    raise Throttled()
            row = session.scalar(select(StaffUser).where(StaffUser.name == name))
            try:
                _HASHER.verify(row.password_hash if row is not None else _DUMMY_HASH, password)
                ok = row is not None and not row.disabled
            except (VerificationError, InvalidHashError):
                ok = False
            if not ok:
                session.add(LoginFailure(name=name[:60], address=address[:64]))
                return None
            session.execute(delete(LoginFailure).where(LoginFailure.name == name))
            if _HASHER.check_needs_rehash(row.password_hash):
                row.password_hash = _HASHER.hash(password)
            return _view(row)

    def start_session(self, user: StaffView) -> tuple[str, SessionView]:
        """A new session: (the cookie's token, the session with its CSRF token)."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = utcnow()
        with self._session() as session, session.begin():
            session.execute(delete(StaffSession).where(StaffSession.expires_at < now))
            session.add(
                StaffSession(
                    token_hash=_digest(token),
                    user_id=user.id,
                    csrf=csrf,
                    expires_at=now + timedelta(hours=SESSION_HOURS),
                )
            )
        return token, SessionView(user, csrf)

    def session(self, token: Optional[str]) -> Optional[SessionView]:
        """The live session of a cookie token; None when unknown, expired or disabled."""
        if not token:
            return None
        with self._session() as session, session.begin():
            row = session.get(StaffSession, _digest(token))
            now = utcnow()
            if row is None or row.expires_at < now:
                return None
            user = session.get(StaffUser, row.user_id)
            if user is None or user.disabled:
                return None
            row.last_seen = now
            return SessionView(_view(user), row.csrf)

    def agents_on_duty(self, within_seconds: int = ON_DUTY_SECONDS) -> int:
        """How many enabled accounts have a console open (seen within ``within_seconds``)."""
        now = utcnow()
        with self._session() as session:
            return int(
                session.scalar(
                    select(func.count(func.distinct(StaffSession.user_id)))
                    .join(StaffUser, StaffUser.id == StaffSession.user_id)
                    .where(
                        StaffSession.last_seen >= now - timedelta(seconds=within_seconds),
                        StaffSession.expires_at >= now,
                        StaffUser.disabled.is_(False),
                    )
                )
                or 0
            )

    def end_session(self, token: Optional[str]) -> None:
        if token:
            with self._session() as session, session.begin():
                session.execute(
                    delete(StaffSession).where(
                        or_(StaffSession.token_hash == _digest(token), StaffSession.expires_at < utcnow())
                    )
                )

    # ---- audit log
    def audit(self, staff: str, action: str, target: str = "", detail: str = "") -> None:
        with self._session() as session, session.begin():
            session.add(AuditEntry(staff=staff, action=action, target=target[:255], detail=detail))

    def audit_entries(self, limit: int = 200) -> list[AuditView]:
        with self._session() as session:
            rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
            return [AuditView(r.at, r.staff, r.action, r.target, r.detail) for r in rows]
