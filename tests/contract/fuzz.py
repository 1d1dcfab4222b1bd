"""Schemathesis against the committed `openapi.json` and the live service: every operation with
generated valid and invalid requests, then stateful sequences following the links schemathesis
derives (a created resource's `Location`, ids from responses).

Every response goes through schemathesis' own conformance checks (status code, content type,
headers, body schema, no 5xx) and the service's rules below. Failures are collected, not raised,
so one run reports all of them; `test_fuzz.py` turns them into test results.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure as StFailure
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

OPENAPI = Path(__file__).parents[2] / "openapi.json"
PROBLEM = "application/problem+json"
# The IETF httpapi-ratelimit-headers fields the service sends (reference_service/http/ratelimit.py).
RATELIMIT_HEADERS = ("RateLimit", "RateLimit-Policy")


@dataclass(frozen=True)
class Finding:
    check: str
    method: str
    path: str
    status: int
    problem: str
    message: str
    request: str

    def describe(self) -> str:
        return (
            f"[{self.check}] {self.method} {self.path} -> {self.status} {self.problem}:"
            f" {self.message}\n  {self.request}"
        )


@dataclass
class Report:
    operations: int = 0
    examples: int = 0
    stateful_steps: int = 0
    findings: list[Finding] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)


# --- the service's rules, as schemathesis checks -----------------------------------------------


def problem_details(response: Response) -> str | None:
    """Why a 4xx/5xx is not valid problem+json with an absolute `type`, or None."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    if not content_type.startswith(PROBLEM):
        return f"content type {content_type!r}, not {PROBLEM}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return "body is not JSON"
    if not isinstance(body, dict):
        return "body is not an object"
    kind = body.get("type")
    parts = urlsplit(kind) if isinstance(kind, str) else None
    if parts is None or not parts.scheme or not (parts.netloc or parts.scheme == "about"):
        return f"type {kind!r} is not an absolute URI"
    if body.get("status") != response.status_code:
        return f"status member {body.get('status')!r} differs from {response.status_code}"
    if not isinstance(body.get("title"), str):
        return "no title"
    return None


PROBLEM_TYPE_BASE = "https://adbm.io/problems/"


def registered_type(response: Response) -> str | None:
    """The service documents one registered type per problem (README, problems.py): clients
    branch on it. A 4xx/5xx of another type (`about:blank`) is one they cannot branch on."""
    if response.status_code < 400 or problem_details(response) is not None:
        return None
    kind = json.loads(response.content).get("type")
    return None if str(kind).startswith(PROBLEM_TYPE_BASE) else f"type {kind!r} is not registered"


def ratelimit_headers(response: Response, path: str) -> str | None:
    """Under /api every response carries RateLimit headers, or is a 429/401 problem."""
    if not path.startswith("/api/"):
        return None
    present = [h for h in RATELIMIT_HEADERS if h.lower() in {k.lower() for k in response.headers}]
    if len(present) == len(RATELIMIT_HEADERS):
        return None
    if response.status_code in (401, 429) and problem_details(response) is None:
        return None
    return f"RateLimit headers missing (has {present})"


BUILTIN = {
    "not_a_server_error": not_a_server_error,
    "status_code_conformance": status_code_conformance,
    "content_type_conformance": content_type_conformance,
    "response_headers_conformance": response_headers_conformance,
    "response_schema_conformance": response_schema_conformance,
}


def _request_line(case: Case, response: Response) -> str:
    request = response.request
    body = request.body if isinstance(request.body, bytes | str | None) else repr(request.body)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    shown = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    return f"{request.method} {request.url} headers={shown} body={(body or '')[:300]!r}"


def problem_type(response: Response) -> str:
    """The problem's type slug, for telling findings apart ("" when not a problem)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return ""
    kind = body.get("type", "") if isinstance(body, dict) else ""
    return str(kind).rsplit("/", 1)[-1]


def check_response(report: Report, case: Case, response: Response) -> None:
    path = urlsplit(response.request.url).path
    template = case.operation.path
    slug = problem_type(response) if response.status_code >= 400 else ""

    def found(check: str, message: str) -> None:
        report.add(
            Finding(
                check,
                case.method.upper(),
                template,
                response.status_code,
                slug,
                message.strip().splitlines()[0][:300] if message.strip() else check,
                _request_line(case, response),
            )
        )

    for name, check in BUILTIN.items():
        try:
            case.validate_response(response, checks=[check])
        except (StFailure, BaseExceptionGroup) as exc:  # FailureGroup is an exception group
            failures = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
            for failure in failures:
                found(
                    name,
                    getattr(failure, "title", "")
                    + ": "
                    + str(getattr(failure, "message", failure)),
                )
    for name, rule in (
        ("problem_details", lambda: problem_details(response)),
        ("registered_type", lambda: registered_type(response)),
        ("ratelimit_headers", lambda: ratelimit_headers(response, path)),
    ):
        problem = rule()
        if problem is not None:
            found(name, problem)


def with_operation_key(headers: dict[str, Any], case: Case) -> dict[str, Any]:
    """A new Idempotency-Key for each write that has none, as a client sends one per
    operation: the invalid requests that drop the header would otherwise all stop at 400
    idempotency-key-required, before anything else is exercised."""
    if case.method.upper() in ("POST", "PATCH") and "idempotency-key" not in {
        k.lower() for k in headers
    }:
        return {**headers, "Idempotency-Key": uuid.uuid4().hex}
    return headers


# --- the run -----------------------------------------------------------------------------------


def load_schema() -> Any:
    return schemathesis.openapi.from_path(OPENAPI)


def run(
    base_url: str,
    api_key: str,
    *,
    examples_per_operation: int,
    stateful_examples: int,
    seed: int,
) -> Report:
    schema = load_schema()
    report = Report()
    headers = {"Authorization": f"Bearer {api_key}"}
    fuzz_settings = hsettings(
        max_examples=examples_per_operation,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        print_blob=False,
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(operation, mode, base_url, headers, report, fuzz_settings, seed)
    _stateful(schema, base_url, headers, report, stateful_examples, seed)
    return report


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    report: Report,
    fuzz_settings: hsettings,
    seed: int,
) -> None:
    @hypothesis.seed(seed)
    @fuzz_settings
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case: Case) -> None:
        report.examples += 1
        sent = with_operation_key({**headers, **(case.headers or {})}, case)
        response = case.call(base_url=base_url, headers=sent)
        check_response(report, case, response)

    try:
        one()
    except hypothesis.errors.Unsatisfiable:
        # No invalid request exists for an operation without parameters or body (/health).
        assert mode is GenerationMode.NEGATIVE, operation.label


def _stateful(
    schema: Any, base_url: str, headers: dict[str, str], report: Report, examples: int, seed: int
) -> None:
    base = schema.as_state_machine()

    class Machine(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            sent = with_operation_key({**headers, **(case.headers or {})}, case)
            return {"base_url": base_url, "headers": sent}

        def validate_response(self, response: Response, case: Case, *a: Any, **kw: Any) -> None:
            report.stateful_steps += 1
            check_response(report, case, response)

    # derandomize: the draws are the same on every run. What the sequences do after their first
    # call still depends on the answers (new ids each run), so stateful counts vary a little.
    run_state_machine_as_test(
        Machine,
        settings=hsettings(
            max_examples=examples,
            stateful_step_count=10,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.generate],
        ),
    )


def group(findings: Iterable[Finding]) -> dict[tuple[str, str, str, int, str], list[Finding]]:
    out: dict[tuple[str, str, str, int, str], list[Finding]] = {}
    for f in findings:
        out.setdefault((f.check, f.method, f.path, f.status, f.problem), []).append(f)
    return out
