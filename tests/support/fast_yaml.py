"""YAML as the tests read the files a bake generated and the renders of kustomize: PyYAML's
safe loader, with its C parser (libyaml) where PyYAML has it (its wheels do). The same
objects as yaml.safe_load, in a tenth of the time; the matrix reads thousands of files.

Tests of what a person sees when a file is wrong (a line number in a message) keep
yaml.safe_load, whose messages they check.
"""

import yaml

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text):
    return yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 (a safe loader)


def load_all(text):
    return yaml.load_all(text, Loader=SAFE_LOADER)  # noqa: S506 (a safe loader)
