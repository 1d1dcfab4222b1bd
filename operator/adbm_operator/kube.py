"""A small async Kubernetes client for the calls Kopf does not make for us.

It reuses the credentials Kopf logged in with (`kopf.ConnectionInfo`), so the operator has one
identity, and speaks plain REST: server-side apply with one field manager, get, list by label,
create, delete, and status patches, for the kinds of `kinds`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from adbm_operator.kinds import Kind, of

FIELD_MANAGER = "adbm-operator"


class ApiError(Exception):
    """An API server answer other than success."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def temporary(self) -> bool:
        """Worth retrying as is: server errors, throttling, conflicts, timeouts."""
        return self.status >= 500 or self.status in (408, 409, 429)


class Client:
    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self._server = info.server.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, ssl=info.as_ssl_context()),
            headers={**info.as_http_headers(), "User-Agent": FIELD_MANAGER},
            # No total: time queued for a pooled connection is not the API server's fault.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
        )
        self.calls: dict[str, int] = {}

    async def close(self) -> None:
        await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        self.calls[method] = self.calls.get(method, 0) + 1
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            async with self._session.request(
                method, self._server + path, params=params, data=data, headers=headers
            ) as response:
                text = await response.text()
                if response.status == 404 and method in ("GET", "DELETE"):
                    return None
                if response.status >= 400:
                    try:
                        status = json.loads(text)
                    except ValueError:
                        status = {}
                    raise ApiError(
                        response.status,
                        status.get("reason", response.reason or ""),
                        status.get("message", text[:500]),
                    )
                parsed: dict[str, Any] = json.loads(text) if text else {}
                return parsed
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise ApiError(503, "Unavailable", f"API server unreachable: {exc!r}") from exc

    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        return await self._request("GET", kind.path(namespace, name))

    async def list(
        self, kind: Kind, namespace: str | None, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        found = await self._request(
            "GET", kind.path(namespace), params={"labelSelector": label_selector}
        )
        return list((found or {}).get("items", []))

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as the one field manager; `force` takes over fields another
        manager (e.g. `kubectl edit`) changed, which is how drift is corrected."""
        kind = of(obj)
        result = await self._request(
            "PATCH",
            kind.path(obj["metadata"].get("namespace"), obj["metadata"]["name"]),
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        assert result is not None
        return result

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create as the one field manager; 409 AlreadyExists when it exists."""
        result = await self._request(
            "POST",
            of(obj).path(obj["metadata"].get("namespace")),
            params={"fieldManager": FIELD_MANAGER},
            body=obj,
        )
        assert result is not None
        return result

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> None:
        await self._request(
            "DELETE",
            kind.path(namespace, name),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )

    async def patch_status(
        self, kind: Kind, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return await self._request(
            "PATCH",
            kind.path(namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )
