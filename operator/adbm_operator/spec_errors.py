"""How a BackendService that does not validate is told to a person: one line per problem, located
by the field path they write in YAML. The CLI prints it; the operator puts it in the status."""

from __future__ import annotations

from pydantic import ValidationError


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, located by the field path a user writes in YAML."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "(object)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)
