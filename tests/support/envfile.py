"""The env files kustomize's secretGenerator reads (`envs:`): KEY=VALUE lines."""

from pathlib import Path


def env_file(path):
    """KEY=VALUE lines of an env file, as a dict (comments and blank lines skipped)."""
    values = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values
