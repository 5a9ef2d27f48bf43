"""Audit the locked dependencies against PyPI's vulnerability feed (the PyPA advisories, as OSV).

Usage: audit_dependencies.py ALL.txt --runtime RUNTIME.txt
  ALL.txt      every locked package (`uv export --no-hashes`), the image's and the dev tools'
  RUNTIME.txt  the ones that ship in the image (`uv export --no-dev --no-hashes`)

For each locked `name==version` it asks PyPI's JSON API for the advisories of that exact version
(`/pypi/<name>/<version>/json`, the same source pip-audit uses). Some mirrors serve only the
project document (`/pypi/<name>/json`), whose advisories are those of the *latest* release; the
audit then uses it only when the locked version is that release, and otherwise reports the package
as not audited rather than guessing.

Exit 0: no known vulnerability and every package audited.
Exit 1: a vulnerability, or a package that could not be audited. A dev-only package may be listed
        in pyproject's [tool.dependency-audit] held-back, with the reason it cannot move to the
        latest release; it is then reported but does not fail the audit. Runtime packages never.
Exit 2: PyPI could not be asked at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PYPI = "https://pypi.org/pypi"


@dataclass
class Audit:
    name: str
    version: str
    vulnerabilities: list[dict[str, object]] = field(default_factory=list)
    unaudited_because: str | None = None


def locked(path: Path) -> dict[str, str]:
    """`name==version` lines of a `uv export` file, by normalised name."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split(";")[0].split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def fetch(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (fixed https URL)
            document: dict[str, object] = json.load(answer)
            return document
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def audit(name: str, version: str) -> Audit:
    exact = fetch(f"{PYPI}/{name}/{version}/json")
    if exact is not None:
        return Audit(name, version, list(exact.get("vulnerabilities") or []))  # type: ignore[call-overload]
    project = fetch(f"{PYPI}/{name}/json")
    if project is None:
        return Audit(name, version, unaudited_because="not on PyPI")
    latest = project["info"]["version"]  # type: ignore[index]
    if latest != version:
        return Audit(
            name,
            version,
            unaudited_because=f"PyPI here serves advisories for the latest release only ({latest})",
        )
    return Audit(name, version, list(project.get("vulnerabilities") or []))  # type: ignore[call-overload]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("all", type=Path)
    parser.add_argument("--runtime", type=Path, required=True)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args()

    pins, runtime = locked(args.all), locked(args.runtime)
    config = tomllib.loads(args.pyproject.read_text()).get("tool", {}).get("dependency-audit", {})
    held_back: dict[str, str] = config.get("held-back", {})

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda pin: audit(*pin), sorted(pins.items())))
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        print(f"audit: cannot reach PyPI: {error}", file=sys.stderr)
        return 2

    failed = False
    for result in results:
        for vulnerability in result.vulnerabilities:
            failed = True
            fixed = ", ".join(vulnerability.get("fixed_in") or []) or "no fix released"  # type: ignore[arg-type]
            aliases = ", ".join(vulnerability.get("aliases") or [])  # type: ignore[arg-type]
            print(f"VULNERABLE {result.name} {result.version}: {vulnerability.get('id')} ({aliases}); fixed in: {fixed}")
        if result.unaudited_because:
            reason = held_back.get(result.name)
            if reason and result.name not in runtime:
                print(f"held back  {result.name} {result.version}: {result.unaudited_because}; {reason}")
            else:
                failed = True
                print(f"UNAUDITED  {result.name} {result.version}: {result.unaudited_because}")

    audited = sum(1 for r in results if r.unaudited_because is None)
    found = sum(len(r.vulnerabilities) for r in results)
    print(
        f"audit: {len(results)} locked packages ({len(runtime)} in the image), {audited} audited, "
        f"{found} known vulnerabilities: {'FAIL' if failed else 'OK'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
