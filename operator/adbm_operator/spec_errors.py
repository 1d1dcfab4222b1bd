"""How a BackendService that does not validate is told to a person: one line per problem, located
by the field path they write in YAML. The CLI prints it; the operator puts it in the status."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


def field_path(loc: Sequence[str | int]) -> str:
    """A pydantic location as a user writes it in YAML: `spec.versioning.deprecated[0].link`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "(object)"


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, located by the field path a user writes in YAML."""
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {field_path(error['loc'])}: {message}")
    return "\n".join(lines)
