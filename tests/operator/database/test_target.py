"""The admin Secret and the URIs derived from it (pure)."""

from __future__ import annotations

import base64

import pytest
from psycopg.conninfo import conninfo_to_dict

from adbm_operator.database.target import AdminSecretError, admin_server, admin_uri, app_uri


def _data(**values: str) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


def test_a_cloudnativepg_superuser_secret_works_as_is() -> None:
    # As CloudNativePG's CreateSecret writes it: basic-auth keys plus uri, database "*".
    data = _data(
        username="postgres",
        user="postgres",
        password="p@ss:w/rd",
        dbname="*",
        host="pg-rw",
        port="5432",
        pgpass="pg-rw:5432:*:postgres:p@ss:w/rd\n",
        uri="postgresql://postgres:p%40ss%3Aw%2Frd@pg-rw.shop:5432/%2A",
    )
    server = admin_server(data, "uri")
    assert (server.user, server.host, server.port) == ("postgres", "pg-rw.shop", "5432")
    params = conninfo_to_dict(server.conninfo("shop"))
    assert params == {
        "user": "postgres",
        "password": "p@ss:w/rd",
        "host": "pg-rw.shop",
        "port": "5432",
        "dbname": "shop",
        "connect_timeout": "5",
    }
    assert server.describe("shop") == "postgres@pg-rw.shop:5432/shop"
    assert repr(server) == "Server(postgres@pg-rw.shop:5432)"
    assert conninfo_to_dict(admin_uri(server, dbname="shop")) == {
        "user": "postgres",
        "password": "p@ss:w/rd",
        "host": "pg-rw.shop",
        "port": "5432",
        "dbname": "shop",
    }


def test_the_app_uri_keeps_the_server_and_tls_and_encodes_the_password() -> None:
    data = _data(
        uri="postgresql://admin:x@db.example:6543/app?sslmode=verify-full&application_name=a"
    )
    server = admin_server(data, "uri")
    uri = app_uri(server, dbname="shop", role="shop_app", password="a b/c?d#e%f@g")
    assert conninfo_to_dict(uri) == {
        "user": "shop_app",
        "password": "a b/c?d#e%f@g",
        "host": "db.example",
        "port": "6543",
        "dbname": "shop",
        "sslmode": "verify-full",
    }


def test_an_ipv6_host_is_bracketed() -> None:
    server = admin_server(_data(uri="postgresql://admin@[::1]:5432/x"), "uri")
    assert conninfo_to_dict(app_uri(server, dbname="d", role="r", password="p"))["host"] == "::1"


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (_data(other="x"), "uri", "the admin Secret has no key 'uri'"),
        ({"uri": "not base64!"}, "uri", "the admin Secret's key 'uri' is not base64 text"),
        (
            _data(uri="postgresql://admin:hunter2@host/x?no_such_option=1"),
            "uri",
            "the admin Secret's key 'uri' is not a libpq URI",
        ),
        (
            _data(uri="postgresql://host/x"),
            "uri",
            "the admin Secret's URI under 'uri' names no user",
        ),
    ],
)
def test_bad_admin_secrets_are_one_clear_line(data: dict[str, str], key: str, message: str) -> None:
    with pytest.raises(AdminSecretError) as caught:
        admin_server(data, key)
    assert str(caught.value) == message
    assert "hunter2" not in str(caught.value)
