"""Where the database is and how to reach it: connection strings derived from the admin Secret.

The admin Secret holds a libpq URI (key `uri` by default). A CloudNativePG `<cluster>-superuser`
Secret works as is: its `uri` is `postgresql://postgres:<password>@<cluster>-rw.<ns>:5432/*`,
whose database `*` (a pgpass wildcard) is never connected to: every connection here names its
database explicitly. Everything in this module is pure; nothing connects.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MAINTENANCE_DATABASE = "postgres"
"""Database the operator connects to for cluster-wide work (CREATE DATABASE, roles)."""

CONNECT_TIMEOUT_SECONDS = 5
"""Upper bound of libpq's connect_timeout: an unreachable server costs at most this per try."""

# Connection parameters that describe the server (not the user), carried into the app's URI.
_SERVER_PARAMETERS = ("sslmode", "sslrootcert", "target_session_attrs", "channel_binding")


class AdminSecretError(ValueError):
    """The admin Secret is missing the key or does not hold a usable libpq URI."""


@dataclass(frozen=True)
class Server:
    """The admin's connection parameters, without a database."""

    params: Mapping[str, str]

    def __repr__(self) -> str:  # the params hold the admin's password
        return f"Server({self.user}@{self.host}:{self.port})"

    @property
    def host(self) -> str:
        return self.params.get("host", "localhost")

    @property
    def port(self) -> str:
        return self.params.get("port", "5432")

    @property
    def user(self) -> str:
        return self.params.get("user", "")

    def conninfo(self, dbname: str, *, timeout: int = CONNECT_TIMEOUT_SECONDS) -> str:
        """The admin's conninfo for `dbname`, with a bounded connect timeout."""
        given = self.params.get("connect_timeout")
        bounded = (
            min(int(given), timeout) if given and given.isdigit() and int(given) > 0 else timeout
        )
        params: dict[str, str | int] = {**self.params, "dbname": dbname, "connect_timeout": bounded}
        return make_conninfo("", **params)

    def describe(self, dbname: str) -> str:
        """`user@host:port/dbname`: what a message may say about a connection (no password)."""
        return f"{self.user}@{self.host}:{self.port}/{dbname}"


def admin_server(data: Mapping[str, str], key: str) -> Server:
    """The server from the admin Secret's `data` (values base64-encoded, as the API returns)."""
    if key not in data:
        raise AdminSecretError(f"the admin Secret has no key {key!r}")
    try:
        uri = base64.b64decode(data[key], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise AdminSecretError(f"the admin Secret's key {key!r} is not base64 text") from exc
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(uri).items() if v is not None}
    except ProgrammingError as exc:
        # psycopg's message quotes the conninfo, password included: never repeat it.
        raise AdminSecretError(f"the admin Secret's key {key!r} is not a libpq URI") from exc
    params.pop("dbname", None)
    if not params.get("user"):
        raise AdminSecretError(f"the admin Secret's URI under {key!r} names no user")
    return Server(params)


def uri(server: Server, *, dbname: str, user: str, password: str) -> str:
    """A libpq URI for `user` on the admin's server (with its TLS settings)."""
    host = server.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    query = "&".join(
        f"{name}={quote(server.params[name], safe='')}"
        for name in _SERVER_PARAMETERS
        if name in server.params
    )
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{server.port}"
        f"/{quote(dbname, safe='')}" + (f"?{query}" if query else "")
    )


def app_uri(server: Server, *, dbname: str, role: str, password: str) -> str:
    """The libpq URI the pods use: the admin's server, the app role's login."""
    return uri(server, dbname=dbname, user=role, password=password)


def admin_uri(server: Server, *, dbname: str) -> str:
    """The admin's libpq URI for `dbname` (what the migration Job connects with)."""
    return uri(server, dbname=dbname, user=server.user, password=server.params.get("password", ""))
