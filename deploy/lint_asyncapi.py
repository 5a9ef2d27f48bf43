"""`make lint-asyncapi`: build the AsyncAPI document the api serves at /asyncapi.json and validate
it against the AsyncAPI 3.0.0 JSON Schema vendored in deploy/asyncapi/ (see its README.md), and
check that every `$ref` in it points at something (the specification's schema cannot).

Offline: the bundle holds every definition under its `$id`, they are registered from the file,
and a `$ref` to anything else is an error, never a download. The validation is checked not to be
vacuous: a copy of the document with a channel of the wrong type must fail, or this fails too.
Run with the project's interpreter: `.venv/bin/python deploy/lint_asyncapi.py`.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT7

SPEC = Path(__file__).resolve().parent / "asyncapi" / "3.0.0.json"


def _offline(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)


def spec_validator() -> jsonschema.Draft7Validator:
    """A draft-07 validator of AsyncAPI 3.0.0 documents, every `$ref` resolved in the bundle."""
    spec = json.loads(SPEC.read_text())
    registry: Registry[Any] = (
        Registry(retrieve=_offline).with_resource(spec["$id"], DRAFT7.create_resource(spec)).crawl()
    )
    for uri in spec["definitions"]:
        registry.contents(uri)  # each bundled definition is a resource of its own: or raise
    return jsonschema.Draft7Validator(
        spec, registry=registry, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    if not error.context:
        yield error
    for sub in error.context or ():
        yield from _leaves(sub)


def problems(document: Any, validator: jsonschema.Draft7Validator | None = None) -> list[str]:
    """One line per error, with its deepest reasons: a oneOf that fails says little by itself."""
    validator = validator or spec_validator()
    lines = []
    for error in sorted(validator.iter_errors(document), key=lambda e: e.json_path):
        leaves = list(_leaves(error))
        depth = max(len(leaf.absolute_path) for leaf in leaves)
        reasons = dict.fromkeys(
            f"{leaf.json_path}: {leaf.message[:200]}"
            for leaf in leaves
            if len(leaf.absolute_path) == depth
        )
        lines.append("; ".join(list(reasons)[:3]))
    return lines


def dangling_refs(document: Any) -> list[str]:
    """Local `$ref`s that point at nothing: the specification's schema checks only their form."""
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and not _resolves(document, ref):
                found.append(f"{where}: $ref {ref!r} points at nothing in the document")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(document, "#")
    return found


def _resolves(document: Any, ref: str) -> bool:
    if not ref.startswith("#/"):
        return False
    node = document
    for part in ref.removeprefix("#/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def canary(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` the schema must refuse: its first channel is a string."""
    broken = copy.deepcopy(document)
    first = next(iter(broken["channels"]))
    broken["channels"][first] = "not a channel"
    return broken


def main() -> int:
    from service.entrypoints.asyncapi import asyncapi_document

    try:
        validator = spec_validator()
        document = asyncapi_document()
        found = problems(document, validator) + dangling_refs(document)
        vacuous = not problems(canary(document), validator)
    except (Unresolvable, ValueError) as error:
        print(f"lint_asyncapi: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    for line in found:
        print(f"lint_asyncapi: {line}", file=sys.stderr)
    if vacuous:
        print("lint_asyncapi: a broken document validates: the check is vacuous", file=sys.stderr)
    if found or vacuous:
        return 1
    channels, messages = len(document["channels"]), len(document["components"]["messages"])
    print(f"asyncapi: valid AsyncAPI 3.0.0 ({channels} channels, {messages} messages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
