"""`adbm-operator`: render BackendServices offline and print the CRD."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from adbm_operator import apidoc, crd, model, specs, yamlout
from adbm_operator.spec_errors import format_validation_error


class InputError(Exception):
    """Bad input from the user: reported as one clear message, never a traceback."""


def _read_documents(path: str, stdin: TextIO | None) -> Iterator[tuple[int, dict[str, Any]]]:
    if path == "-":
        text = (stdin or sys.stdin).read()
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from exc
    found = False
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise InputError(f"{path}: document {index} is not a mapping")
        found = True
        yield index, doc
    if not found:
        raise InputError(f"{path}: no BackendService found")


def load(path: str, stdin: TextIO | None = None) -> list[model.BackendService]:
    """Parse and validate every BackendService in a file; other kinds are an error. Every
    invalid document is reported, each with every problem it has."""
    objects, problems = [], []
    for index, doc in _read_documents(path, stdin):
        kind, api_version = doc.get("kind"), doc.get("apiVersion")
        if kind != model.KIND or api_version != model.API_VERSION:
            problems.append(
                f"{path}: document {index} is {api_version}/{kind}, "
                f"expected {model.API_VERSION}/{model.KIND}"
            )
            continue
        try:
            objects.append(model.parse(doc))
        except ValidationError as exc:
            name = (doc.get("metadata") or {}).get("name", "?")
            problems.append(
                f"{path}: BackendService {name!r} is invalid:\n{format_validation_error(exc)}"
            )
    if problems:
        raise InputError("\nerror: ".join(problems))
    return objects


def dump(objects: Sequence[dict[str, Any]], output: str) -> str:
    """YAML documents, or one JSON `List` (what `kubectl apply -f -` takes)."""
    if output == "json":
        body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        return json.dumps(body, indent=2) + "\n"
    return yamlout.dump_all(objects)


def _render(args: argparse.Namespace) -> str:
    objects = load(args.filename)
    if args.defaults:
        return dump([model.with_computed_defaults(obj) for obj in objects], args.output)
    children = []
    for obj in objects:
        rendered = offline(obj)
        children.extend(rendered)
        # A summary for the reviewer on stderr, so stdout stays pipeable to kubectl.
        print(summary(obj, rendered), file=sys.stderr)
    return dump(children, args.output)


def offline(obj: model.BackendService) -> list[dict[str, Any]]:
    """Everything the operator would create for `obj`: the applied children, then what it
    creates once, without the values it generates then (each says so in an annotation)."""
    return [*specs.render(obj), *specs.created_once(obj)]


def summary(obj: model.BackendService, children: Sequence[dict[str, Any]]) -> str:
    db = obj.spec.database
    return (
        f"{obj.namespace}/{obj.name}: {len(children)} objects; at most"
        f" {model.max_connections(obj.spec)} database connections"
        f" (pool.maxSize {db.pool.max_size}) of a budget of {db.connection_budget}"
    )


def _crd(args: argparse.Namespace) -> str:
    return crd.crd_yaml()


RENDER_SAMPLE = "examples/minimal.yaml"


def readme_sections(root: Path) -> dict[str, str]:
    """What the README's generated sections must say: the field reference, and the real output
    of `adbm-operator render` for the minimal example."""
    sample = dump(offline(load(str(root / RENDER_SAMPLE))[0]), "yaml")
    return {
        apidoc.REFERENCE: apidoc.field_reference(),
        f"adbm-operator render -f {RENDER_SAMPLE}": f"```yaml\n{sample}```\n",
    }


def _docs(args: argparse.Namespace) -> str:
    if args.update is None:
        return apidoc.field_reference()
    path = Path(args.update)
    try:
        text = path.read_text(encoding="utf-8")
        updated = apidoc.embed(text, readme_sections(path.resolve().parent))
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from exc
    path.write_text(updated, encoding="utf-8")
    return f"updated the generated sections of {path}\n"


def _run(args: argparse.Namespace) -> str:
    # Kopf imports the `kubernetes` client whenever it is installed (it is, with the [dev]
    # extra), only to recognise that client's model objects, which the operator never hands
    # it, and for a login handler the operator replaces with its own: ~25 MB of memory for
    # nothing. An import that fails is what Kopf expects when the client is absent.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    # Imported here: the offline commands must not need Kopf's runtime or a cluster.
    import kopf

    from adbm_operator import telemetry
    from adbm_operator.handlers import lifecycle, registry, runtime

    if not args.all_namespaces and not args.namespace:
        raise InputError("say which namespaces to watch: --namespace NS (repeatable) or -A")
    settings = lifecycle.settings()
    try:
        # Checked before Kopf starts: its own failure is a retried traceback every minute.
        lifecycle.find_credentials(settings)
    except lifecycle.NoCredentials as exc:
        raise InputError(str(exc)) from exc
    telemetry.configure_logging(verbose=args.verbose)
    telemetry.serve_metrics(args.metrics_port)
    kopf.run(
        registry=registry,
        settings=settings,
        memo=runtime.new_memo(),
        clusterwide=args.all_namespaces,
        namespaces=args.namespace or (),
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz",
    )
    return ""


def _priority(text: str) -> int:
    """An integer, or `random`: replicas started alike each get their own (Kopf pauses every
    replica when two live ones share the highest priority)."""
    if text == "random":
        return secrets.randbelow(2**31 - 1) + 1
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or 'random': {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adbm-operator", description="Deploy backends to the ADBM standard."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser(
        "render",
        help="validate BackendServices and print every object the operator will apply for them",
    )
    render.add_argument("-f", "--filename", required=True, help="YAML file, or - for stdin")
    render.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    render.add_argument(
        "--defaults",
        action="store_true",
        help="print the BackendServices themselves instead, with every default applied"
        " (including the app role and Redis key prefix computed from the object)",
    )
    render.set_defaults(func=_render)

    crd_cmd = sub.add_parser("crd", help="print the BackendService CustomResourceDefinition")
    crd_cmd.set_defaults(func=_crd)

    run = sub.add_parser(
        "run", help="run the operator against the cluster of the current kubeconfig (or in-cluster)"
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", help="watch this namespace (repeatable; globs ok)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument(
        "--peering",
        metavar="NAME",
        help="coordinate with other replicas through the KopfPeering object NAME (HA: only the"
        " highest-priority replica acts); without it the operator runs standalone",
    )
    run.add_argument(
        "--priority",
        type=_priority,
        default=0,
        help="peering priority: the live replica with the highest acts, so replicas of one"
        " Deployment need different ones; `random` draws one at start (default 0)",
    )
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port")
    run.add_argument("--liveness-port", type=int, default=8081, help="/healthz port")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_run)

    docs = sub.add_parser("docs", help="print the BackendService field reference (Markdown)")
    docs.add_argument(
        "--update", metavar="FILE", help="rewrite the generated section of FILE (the README)"
    )
    docs.set_defaults(func=_docs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sys.stdout.write(args.func(args))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
