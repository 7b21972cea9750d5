"""Skaffold's JSON schemas, found wherever they are, or downloaded once at a pinned commit.

Lookup order for the schema of config version `v4betaN`:

1. `$SKAFFOLD_SCHEMA`: a directory holding `skaffold-v4betaN.json` (the names of
   `../shared/schemas/`), or one file whose name ends in `v4betaN.json` (it serves that
   version only; the others are looked up further down);
2. `../shared/schemas/skaffold-v4betaN.json` beside the checkout;
3. the download cache (`skaffold-schemas/` in the test tools' directory, outside the checkout);
4. a download of `docs-v2/content/en/schemas/v4betaN.json` from Skaffold's repository at
   the release tag SKAFFOLD_REF (the URL's base can be replaced with
   `$SKAFFOLD_SCHEMA_URL_BASE`, e.g. for a mirror), stored in that cache.

If all fail, find_schema raises SchemaUnavailable with the reason; the tests skip with it
outside CI, and fail under CI (tests/conftest.py).
"""

import json
import os
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "schemas"

# A Skaffold release that ships every schema the tests use (config versions are never
# changed after a release that introduced a newer one).
SKAFFOLD_REF = "v2.19.0"
URL_BASE = f"https://raw.githubusercontent.com/GoogleContainerTools/skaffold/{SKAFFOLD_REF}/"
URL_BASE_VARIABLE = "SKAFFOLD_SCHEMA_URL_BASE"
SCHEMA_PATH = "docs-v2/content/en/schemas/{version}.json"
DOWNLOAD_TIMEOUT = 20  # seconds, for the whole file


class SchemaUnavailable(Exception):
    pass


def file_name(version):
    return f"skaffold-{version}.json"


def is_skaffold_schema(data):
    return isinstance(data, dict) and "SkaffoldConfig" in data.get("definitions", {})


def find_schema(version, environ=os.environ, shared=SHARED, cache=None):
    """(path, where) of the JSON schema of skaffold/<version>; raises SchemaUnavailable."""
    if cache is None:
        from support.tools import SCHEMA_CACHE as cache
    tried = []
    given = environ.get("SKAFFOLD_SCHEMA")
    if given:
        given = Path(given).expanduser()
        if given.is_dir() and (given / file_name(version)).is_file():
            return given / file_name(version), "$SKAFFOLD_SCHEMA"
        if given.is_file() and given.name.endswith(f"{version}.json"):
            return given, "$SKAFFOLD_SCHEMA"
        tried.append(f"$SKAFFOLD_SCHEMA={given} (no {file_name(version)} there)")
    else:
        tried.append("$SKAFFOLD_SCHEMA (unset)")
    for directory, where in ((Path(shared), "../shared/schemas"), (Path(cache), "the download cache")):
        if (directory / file_name(version)).is_file():
            return directory / file_name(version), where
        tried.append(str(directory))
    url = (environ.get(URL_BASE_VARIABLE) or URL_BASE).rstrip("/") + "/" + SCHEMA_PATH.format(version=version)
    try:
        download(url, Path(cache) / file_name(version))
    except (OSError, ValueError) as error:  # URLError and timeouts are OSErrors
        tried.append(f"download of {url} ({error})")
        raise SchemaUnavailable(f"the Skaffold {version} schema is not found: tried " + "; ".join(tried)) from None
    return Path(cache) / file_name(version), f"downloaded from {url}"


def download(url, dest):
    """Fetch url into dest atomically, refusing anything that is not a Skaffold schema."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:  # noqa: S310 (https, or the base given)
        body = response.read()
    if not is_skaffold_schema(json.loads(body)):
        raise ValueError(f"{url} is not a Skaffold config schema")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as handle:
        handle.write(body)
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, dest)  # concurrent workers: the last complete file wins


def load_schema(version, **kwargs):
    path, where = find_schema(version, **kwargs)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not is_skaffold_schema(data):
        raise SchemaUnavailable(f"{path} (from {where}) is not a Skaffold config schema")
    return data
