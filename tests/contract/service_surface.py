"""What the service accepts, read from its own code: the CLI parser, the console script, the
settings and which of them the code reads, the environment variables of the OpenTelemetry SDK."""

from __future__ import annotations

import argparse
import ast
import functools
from importlib import metadata
from pathlib import Path

import opentelemetry.environment_variables as otel_api_env
import opentelemetry.sdk.environment_variables as otel_sdk_env

import reference_service
from reference_service import cli
from reference_service.config import Settings

ENV_PREFIX = "ADBM_"


def console_scripts() -> dict[str, str]:
    """Installed console scripts of the distribution: name -> `module:function`."""
    dist = metadata.distribution("adbm")
    return {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}


def subcommands(parser: argparse.ArgumentParser | None = None) -> set[str]:
    parser = parser or cli.build_parser()
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found |= set(action.choices)
    return found


def parse(args: list[str]) -> argparse.Namespace:
    """`args` parsed by the service's parser; AssertionError with argparse's message if not."""
    parser = cli.build_parser()
    parser.exit_on_error = False
    errors: list[str] = []

    def error(message: str) -> None:  # argparse calls this, then expects no return
        errors.append(message)
        raise SystemExit(2)

    for p in [parser, *_all_subparsers(parser)]:
        p.error = error  # type: ignore[method-assign]
    try:
        return parser.parse_args(args)
    except argparse.ArgumentError as exc:
        errors.append(str(exc))
    except SystemExit:
        pass
    raise AssertionError(f"adbm-service {' '.join(args)}: {'; '.join(errors)}")


def _all_subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += [sub, *_all_subparsers(sub)]
    return out


def setting_field(variable: str) -> str | None:
    """The Settings field an `ADBM_*` variable sets, or None."""
    if not variable.startswith(ENV_PREFIX):
        return None
    name = variable.removeprefix(ENV_PREFIX).lower()
    return name if name in Settings.model_fields else None


@functools.cache
def settings_read() -> frozenset[str]:
    """Settings fields some code of the service reads (`<anything>.<field>` outside the field
    declarations themselves)."""
    fields = set(Settings.model_fields)
    read: set[str] = set()
    for source in Path(reference_service.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Attribute) and node.attr in fields:
                read.add(node.attr)
    return frozenset(read)


def otel_variables() -> set[str]:
    """The variables the OpenTelemetry API and SDK read."""
    return {
        getattr(module, n)
        for module in (otel_api_env, otel_sdk_env)
        for n in dir(module)
        if n.startswith("OTEL_")
    }
