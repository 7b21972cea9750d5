"""A scanner for literal secrets in text: known token formats, high-entropy values assigned to
secret-sounding names, base64 blobs, Kubernetes Secrets with data, secretGenerator literals.
test_security.py shows it finding planted secrets and passing what is no secret."""

import functools
import math
import re

import yaml

from support import fast_yaml

SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:passw(?:or)?d|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|credentials?|[_.-]key|^key)[A-Za-z0-9_.-]*"
)
ASSIGNMENT = re.compile(
    rf"""(?P<name>{SECRET_NAME})["']?\s*(?::=|=|:)\s*["']?(?P<value>[A-Za-z0-9+/=_.~-]{{21,}})(?=["'\s,;)}}\]]|$)""",
    re.IGNORECASE | re.MULTILINE,
)
PATTERNS = {
    "private key block": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@\"'{}]+:[^/\s@\"'{}$<]{3,}@[^\s/]"),
    "docker registry auth": re.compile(r"\"auth\"\s*:\s*\"[A-Za-z0-9+/]{8,}=*\""),
}
BASE64_BLOB = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
PLACEHOLDER = re.compile(r"replace|example|changeme|change-me|your[-_]|xxxx|dummy|placeholder|redacted", re.IGNORECASE)
# Lower-case words and separators: kaniko-docker-config, app.kubernetes.io/name (random tokens mix cases).
WORDS = re.compile(r"^[a-z]+(?:[-_./][a-z]+|[-_.][0-9]+)*$")


def entropy(text):
    """Shannon entropy in bits per character."""
    counts = {c: text.count(c) for c in set(text)}
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def looks_random(value):
    if PLACEHOLDER.search(value) or WORDS.match(value):
        return False
    classes = sum(bool(re.search(p, value)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return classes >= 2 and entropy(value) >= 3.5


@functools.lru_cache(maxsize=4096)
def scan_text(text):
    """(line number, what) for everything in text that looks like a literal secret.

    Kept per text: most files are the same in many baked projects, and each is read once."""
    findings = []
    for line_number, line in enumerate(text.splitlines(), 1):
        for what, pattern in PATTERNS.items():
            if pattern.search(line):
                findings.append((line_number, what))
        for match in ASSIGNMENT.finditer(line):
            if looks_random(match.group("value")):
                findings.append((line_number, f"high-entropy value assigned to {match.group('name')}"))
        for match in BASE64_BLOB.finditer(line):
            if entropy(match.group(0)) >= 4.5 and looks_random(match.group(0)):
                findings.append((line_number, "base64 blob"))
    for document in yaml_documents(text):
        if isinstance(document, dict) and document.get("kind") == "Secret":
            for field in ("data", "stringData"):
                if any(v not in (None, "") for v in (document.get(field) or {}).values()):
                    findings.append((0, f"Secret {document.get('metadata', {}).get('name')} with literal {field}"))
        if isinstance(document, dict) and document.get("kind") == "Kustomization":
            for generator in document.get("secretGenerator") or []:
                if generator.get("literals"):
                    findings.append((0, f"secretGenerator {generator.get('name')} with literals"))
    return tuple(findings)


def yaml_documents(text):
    if "apiVersion:" not in text and "kind:" not in text:
        return []
    try:
        return [d for d in fast_yaml.load_all(text) if d]
    except yaml.YAMLError:
        return []


def scan_files(root, paths):
    """'path:line: what' for every finding in the given files under root."""
    findings = []
    for relative in paths:
        data = (root / relative).read_bytes()
        if b"\0" in data:
            findings.append(f"{relative}: binary file (cannot be checked for secrets)")
            continue
        for line, what in scan_text(data.decode("utf-8", errors="replace")):
            findings.append(f"{relative}:{line}: {what}")
    return findings
