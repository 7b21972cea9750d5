"""Check every answer before cookiecutter writes a single file.

The rules are small pure functions: each takes a value and returns None when the
value is fine, or a short sentence saying which rule it breaks.  `problems()`
applies them to a whole context and returns one line per problem, naming the
variable, the value and the rule.  The unit tests import this file as it is in
the template (unrendered), so the only Jinja in it is the one expression inside
`rendered_context()`, which cookiecutter fills in before running the hook.

Standard library only: users run a bare `pipx install cookiecutter`.
"""

import ipaddress
import json
import os
import re
import shlex
import sys
from pathlib import Path

# All patterns are applied with fullmatch(): with match(), `$` also matches just
# before a trailing newline, and "jupyterhub\n" would pass as a namespace.
# RFC 1123 label: what Kubernetes accepts as a namespace or a Service name.
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# One path component of an OCI repository name (distribution/reference grammar).
REPO_COMPONENT = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$")
# An OCI tag.
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
# A Kubernetes quantity as people write sizes: 10Gi, 500M, 1.5Ti.
QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
USERNAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
# scripts/smoke-test's own user, blocked from logging in (hub-config/jupyterhub_config.py).
SMOKE_TEST_USER = "smoke-test"

# The authenticators are not listed here: each is a folder (see authenticators()).
CHOICES = {
    "create_namespace": ("yes", "no"),
    "hub_secrets": ("env-file", "existing-secret"),
    "tls": ("no", "yes"),
    "kaniko_credentials": ("docker-config", "secret", "none"),
    "user_storage": ("yes", "no"),
    "registry_insecure": ("no", "yes"),
    "idle_culling": ("yes", "no"),
    "proxy": ("in-hub", "separate"),
    "pre_puller": ("no", "yes"),
    "profiles": ("none", "profile_list"),
    "named_servers": ("no", "yes"),
}


def check_label(value):
    """An RFC 1123 label: a namespace."""
    if len(value) > 63:
        return f"is {len(value)} characters long; an RFC 1123 label has at most 63"
    if not LABEL.fullmatch(value):
        return (
            "must be an RFC 1123 label: lower-case letters, digits and '-',"
            " starting and ending with a letter or digit"
        )
    return None


def check_namespace(value):
    problem = check_label(value)
    if problem:
        return problem
    if value.startswith("kube-"):
        return "is a Kubernetes system namespace (kube-*); choose a namespace of your own"
    return None


def check_optional_label(value):
    """Empty (meaning: any) or an RFC 1123 label."""
    return None if value == "" else check_label(value)


def _is_ip_address(value):
    if "%" in value:  # an IPv6 zone (fe80::1%eth0) may hold any character at all
        return False
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


def _is_port(text):
    """1 to 65535 in ASCII digits (str.isdigit() also takes '²', which int() refuses)."""
    return re.fullmatch(r"[0-9]{1,5}", text) is not None and 1 <= int(text) <= 65535


def check_subdomain(value):
    """An RFC 1123 subdomain (a DNS name as Kubernetes wants it), not an IP address."""
    if not value:
        return "must not be empty"
    if "://" in value:
        return "must be a bare DNS name: drop the scheme (http:// or https://)"
    if "/" in value:
        return "must be a bare DNS name: drop the path"
    if ":" in value and not _is_ip_address(value):
        return "must be a bare DNS name: drop the port"
    if "*" in value:
        return "must be a bare DNS name: wildcards are not allowed"
    if _is_ip_address(value):
        return "is an IP address; a DNS name is needed here"
    if len(value) > 253:
        return f"is {len(value)} characters long; an RFC 1123 subdomain has at most 253"
    for label in value.split("."):
        if len(label) > 63:
            return f"has the label {label[:20]!r}... of {len(label)} characters; a label has at most 63"
        if not LABEL.fullmatch(label):
            return (
                "must be an RFC 1123 subdomain: dot-separated labels of lower-case letters,"
                " digits and '-', each starting and ending with a letter or digit"
            )
    return None


def check_optional_subdomain(value):
    """Empty (meaning: use the cluster's default) or an RFC 1123 subdomain."""
    return None if value == "" else check_subdomain(value)


def _is_repository_path(path):
    """'/'-separated OCI repository components, none of them empty."""
    return all(REPO_COMPONENT.fullmatch(component) for component in path.split("/"))


def check_registry(value):
    """host[:port][/path], lower case, no scheme."""
    if "://" in value:
        return "must be host[:port][/path] without a scheme (drop http:// or https://)"
    if value != value.lower():
        return "must be lower case"
    host_port, _, path = value.partition("/")
    host, colon, port = host_port.rpartition(":") if ":" in host_port else (host_port, "", "")
    if colon:
        if not _is_port(port):
            return f"has the port {port!r}; a port is a number from 1 to 65535"
    if host != "localhost" and not _is_ip_address(host):
        problem = check_subdomain(host)
        if problem:
            return f"must be host[:port][/path]; its host {problem}"
    if (path or value.endswith("/")) and not _is_repository_path(path):
        return (
            "must be host[:port][/path]; each path component is lower-case letters"
            " and digits, separated by '.', '_', '__' or '-'"
        )
    return None


def check_image_name(value):
    """A repository name inside the registry: lower-case path components."""
    if not value or len(value) > 255:
        return "must be 1 to 255 characters long"
    if not _is_repository_path(value):
        return (
            "must be a repository name: lower-case letters and digits, separated by"
            " '.', '_', '__' or '-', with '/' between components"
        )
    return None


def check_project(value):
    """A plain directory name (no path, nothing hidden) that is also a label value."""
    if len(value) > 100:
        return "must be at most 100 characters long"
    if not PROJECT.fullmatch(value):
        return (
            "must be a plain directory name: letters, digits, '.', '_' and '-',"
            " starting with a letter or digit (no '/', no spaces)"
        )
    if len(value) > 63 or not value[-1].isalnum():
        return (
            "is also the app.kubernetes.io/part-of label of every object, so it must be"
            " at most 63 characters long and end with a letter or digit"
        )
    return None


def check_quantity(value):
    """A positive Kubernetes quantity such as 10Gi."""
    if not QUANTITY.fullmatch(value):
        return "must be a Kubernetes quantity such as 10Gi or 500Mi"
    number = re.match(r"^[0-9.]+", value).group(0)
    if float(number) <= 0:
        return "must be larger than zero"
    return None


def check_tag(value):
    if not TAG.fullmatch(value):
        return "must be an image tag: letters, digits, '_', '.' and '-', at most 128 characters"
    return None


# A Zero to JupyterHub chart version, which is the k8s-hub image's tag: semver, with
# pre-releases such as the chart's development builds (4.4.1-0.dev.git.7157.h1a2b3c4d).
# No "+build" part: an image tag cannot hold a "+".
CHART_VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")
OLDEST_HUB_VERSION = (4, 0, 0)


def check_hub_version(value):
    """A k8s-hub tag (chart version) of 4.0.0 or newer: KubeSpawner 7, which the manifests rely on."""
    problem = check_tag(value)
    if problem:
        return problem
    match = CHART_VERSION.fullmatch(value)
    if not match:
        return "must be a Zero to JupyterHub chart version such as 4.4.0 (k8s-hub's tags are chart versions)"
    release = tuple(int(part) for part in match.group(1, 2, 3))
    # Semantic versioning: a pre-release comes before its release (4.0.0-beta.1 < 4.0.0).
    if release < OLDEST_HUB_VERSION or (release == OLDEST_HUB_VERSION and match.group(4)):
        before = " (a pre-release of 4.0.0 comes before it)" if release == OLDEST_HUB_VERSION else ""
        return (
            f"must be 4.0.0 or newer{before}: older k8s-hub images have KubeSpawner 6, whose user pod labels"
            " and volume claim names differ from what the NetworkPolicies and jupyterhub_config.py rely on"
        )
    return None


def check_pinned_image(value):
    """registry/repository:tag or @sha256:digest, never :latest or untagged."""
    name, at, digest = value.partition("@")
    if at and not DIGEST.fullmatch(digest):
        return "has a malformed digest; it must be sha256: and 64 hex digits"
    last = name.rsplit("/", 1)[-1]
    tag = ""
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not TAG.fullmatch(tag):
            return "has a malformed tag"
    if not (tag or at):
        return "must be pinned with a tag or a digest (name:tag or name@sha256:...)"
    if tag == "latest" and not at:
        return "must be pinned: ':latest' changes under you; use a version tag or a digest"
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        problem = check_registry(parts[0])
        if problem:
            return f"has a bad registry host: it {problem}"
        parts = parts[1:]
    if not _is_repository_path("/".join(parts)):
        return "must be an image reference such as quay.io/org/image:1.2.3"
    return None


def check_username(value):
    if not USERNAME.fullmatch(value):
        return (
            "must be a JupyterHub user name: 1 to 64 lower-case letters, digits, '.', '_'"
            " and '-', starting and ending with a letter or digit"
        )
    if value == SMOKE_TEST_USER:
        return (
            "is the smoke test's own user (scripts/smoke-test), which the hub blocks from logging in:"
            " choose another name"
        )
    return None


# Names people write when they have not chosen one: the template's default ("admin") and
# the usual stand-ins. The one list of them (README.md, "Variables", points here).
PLACEHOLDER_ADMIN_USERS = (
    "admin",
    "administrator",
    "root",
    "user",
    "username",
    "test",
    "example",
    "changeme",
    "change-me",
    "your-login",
    "your-username",
    "your-github-login",
)


def check_admin_user(value, authenticator, give):
    """The admin of a hub whose user names come from outside it (a GitHub login, an
    identity provider's account) must be a person the deployer names: whoever owns a
    placeholder such as "admin" there would log in as the hub's admin and could run code
    as any user. give: what to give instead (the authenticator's external_user_names),
    or None where the hub names its users itself, and any valid name will do."""
    if give is None or not isinstance(value, str):
        return None
    if value.strip() == "":
        return (
            f"must be given with authenticator={authenticator}, whose user names come from outside the hub:"
            f" give {give}"
        )
    if value in PLACEHOLDER_ADMIN_USERS:
        return (
            f"is a placeholder, and with authenticator={authenticator} user names come from outside the hub:"
            f" whoever owns that name there would be the hub's admin; give {give}"
        )
    return None


def external_user_names(context):
    """{authenticator: what to give as admin_user}, for the authenticators whose user names
    come from outside the hub: cookiecutter.json's _external_user_names, which repeats each
    folder's authenticator.yaml (under cruft the hooks cannot see the folders;
    tests/test_authenticators.py checks that the two agree). Empty if the answers lack it
    (a replay file of an older template): the rule then stays silent, as it was."""
    names = context.get("_external_user_names")
    return names if isinstance(names, dict) else {}


def check_https_url(value):
    if not (value.isascii() and value.isprintable()):
        return "must be printable ASCII: percent-encode anything else"
    match = re.fullmatch(r"^https://([^/?#\s]+)(/[^\s\"'\\]*)?$", value)
    if not match:
        return "must be an https:// URL without spaces, quotes or backslashes"
    host = match.group(1).rsplit(":", 1)
    if len(host) == 2 and not _is_port(host[1]):
        return "has a bad port; a port is a number from 1 to 65535"
    if check_subdomain(host[0]) and host[0] != "localhost" and not _is_ip_address(host[0]):
        return "has a host that is not a DNS name"
    return None


def check_seconds(value):
    if not re.fullmatch(r"[0-9]{1,9}", value) or int(value) < 60:
        return "must be a whole number of seconds, at least 60"
    return None


# Named servers per user: each is a pod of its own and, with user_storage, a volume of its
# own, so the limit bounds what one user can take from the namespace. JupyterHub reads 0
# as "no limit", which is refused here; 100 is far beyond any one person's work.
NAMED_SERVER_LIMIT_MAX = 100


def check_named_server_limit(value):
    """A whole number of named servers per user, 1 to NAMED_SERVER_LIMIT_MAX."""
    if not re.fullmatch(r"[0-9]{1,3}", value) or not 1 <= int(value) <= NAMED_SERVER_LIMIT_MAX:
        return (
            f"must be a whole number from 1 to {NAMED_SERVER_LIMIT_MAX}: the most named servers (each a pod,"
            " and with user_storage a volume, of its own) one user may have"
        )
    return None


RULES = {
    "project": check_project,
    "namespace": check_namespace,
    "ingress_domain": check_subdomain,
    "hostname": check_subdomain,
    "__development_hostname": check_subdomain,
    "registry": check_registry,
    "image_name": check_image_name,
    "admin_user": check_username,
    "__oauth_authorize_url": check_https_url,
    "__oauth_token_url": check_https_url,
    "__oauth_userdata_url": check_https_url,
    "hub_version": check_hub_version,
    "user_image": check_pinned_image,
    "user_storage_size": check_quantity,
    "hub_storage_size": check_quantity,
    "storage_class": check_optional_subdomain,
    "ingress_class": check_optional_subdomain,
    "ingress_controller_namespace": check_optional_label,
    "__cert_manager_issuer": check_optional_subdomain,
    "__kaniko_secret_name": check_subdomain,
    "__image_pull_secret": check_optional_subdomain,
    "kaniko_image": check_pinned_image,
    "idle_timeout": check_seconds,
    "named_server_limit": check_named_server_limit,
}


def authenticators(template_dir):
    """The authenticators a template offers: one folder each, with an authenticator.yaml
    (<template>/<project directory>/authenticators/<name>/, see CONTRIBUTING.md)."""
    return tuple(sorted(path.parent.name for path in Path(template_dir).glob("*/authenticators/*/authenticator.yaml")))


def choices(context):
    """The values each choice variable may take. cookiecutter names the template's
    directory in _repo_dir; cruft does not, but it passes every answer through
    cookiecutter's own check of choice variables."""
    found = dict(CHOICES)
    if context.get("_repo_dir"):
        found = {"authenticator": authenticators(context["_repo_dir"]), **found}
    return found


def check_choice(allowed, value):
    if value not in allowed:
        return "must be one of " + ", ".join(allowed)
    return None


# Checked only where the chosen options use them, so that a mistake elsewhere is
# reported once, not again through the defaults derived from it.
USED_ONLY_WITH = {
    "__oauth_authorize_url": ("authenticator", "generic-oauth"),
    "__oauth_token_url": ("authenticator", "generic-oauth"),
    "__oauth_userdata_url": ("authenticator", "generic-oauth"),
    "__kaniko_secret_name": ("kaniko_credentials", "secret"),
}


# Rules between two answers: (variable, the other variable, check(value, other) -> problem or None).
PAIR_RULES = [
    (
        "__development_hostname",
        "hostname",
        lambda value, other: (
            f"must differ from hostname ({other}): the development hub is a hub of its own, with a host of its own"
            if value == other
            else None
        ),
    ),
]


def rules_with_context(context):
    """Rules of a variable that depend on other answers, as {variable: check(value)}: they
    speak before the variable's own rule, being the more precise about what to give."""
    authenticator = context.get("authenticator")
    give = external_user_names(context).get(authenticator) if isinstance(authenticator, str) else None
    return {"admin_user": lambda value: check_admin_user(value, authenticator, give)}


def problems(context):
    """One line per problem: the variable, its value (JSON-quoted, so on one line) and the rule."""
    lines = []
    allowed = choices(context)
    first = rules_with_context(context)
    for name, rule in list(RULES.items()) + [(n, None) for n in allowed]:
        if name not in context:
            continue
        if name in USED_ONLY_WITH:
            choice, value = USED_ONLY_WITH[name]
            if context.get(choice) != value:
                continue
        value = context[name]
        if not isinstance(value, str):
            problem = "must be a string"
        elif rule is None:
            problem = check_choice(allowed[name], value)
        else:
            problem = (first[name](value) if name in first else None) or rule(value)
        if problem:
            lines.append(f"{name}={json.dumps(value, ensure_ascii=True)} {problem}")
    reported = {line.split("=", 1)[0] for line in lines}
    for name, other, rule in PAIR_RULES:
        value = context.get(name)
        if isinstance(value, str) and name not in reported and other not in reported and name in context and other in context:
            problem = rule(value, context[other])
            if problem:
                lines.append(f"{name}={json.dumps(value, ensure_ascii=True)} {problem}")
    return lines


# --- After a failed check: how to try again without answering every question ------

# A default made of text and references to other answers only (hostname, registry,
# user_image, ...): it follows those answers.  The pattern is written so that no two
# braces touch, since cookiecutter renders this file with Jinja.
REFERENCE = re.compile(r"\{\{\s*cookiecutter\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def derived_default(raw, context):
    """(value, sources): raw rendered with the answers, and the names it uses; None if not derived."""
    if not isinstance(raw, str) or not REFERENCE.search(raw):
        return None
    if "{" + "%" in raw or "{" + "#" in raw or any(n not in context for n in REFERENCE.findall(raw)):
        return None
    value = REFERENCE.sub(lambda m: str(context[m.group(1)]), raw)
    if "{" + "{" in value:  # something besides plain references: do not guess
        return None
    return value, set(REFERENCE.findall(raw))


def follows(name, context, defaults):
    """The names this answer was derived from, if it is still its derived default; else None."""
    derived = derived_default(defaults.get(name), context)
    if derived and context.get(name) == derived[0]:
        return derived[1]
    return None


def root_problems(found, context, defaults):
    """Drop the problems of answers that only repeat a bad answer they were derived from.

    namespace=Bad_NS makes the default hostname Bad_NS-jupyterhub...: one mistake,
    reported once, on the variable the user typed.
    """
    return {
        name: problem
        for name, problem in found.items()
        if not (follows(name, context, defaults) or set()) & set(found)
    }


def in_template_order(context, defaults):
    """The context's names in the order of cookiecutter.json (the hook's copy is sorted)."""
    order = {name: i for i, name in enumerate(defaults)}
    return sorted(context, key=lambda name: order.get(name, len(order)))


def retry_command(context, bad, defaults, cwd=None, overwrite=False):
    """A complete cookiecutter command line with these answers, the bad ones last.

    Left out: answers that still follow their derived default (hostname after
    namespace, ...), so that they follow the corrected value, and private
    settings (__name) the user did not change.
    """
    words = ["cookiecutter", "--no-input", str(context.get("_template", "<template>"))]
    if context.get("_checkout"):
        words += ["--checkout", str(context["_checkout"])]
    output_dir = context.get("_output_dir")
    if output_dir and (cwd is None or os.path.realpath(output_dir) != os.path.realpath(cwd)):
        words += ["--output-dir", output_dir]
    if overwrite:
        words.append("--overwrite-if-exists")
    good_words, bad_words = [], []
    for name in in_template_order(context, defaults):
        value = context[name]
        if not isinstance(value, str) or (name.startswith("_") and not name.startswith("__")):
            continue
        if name not in bad:
            if follows(name, context, defaults) is not None:
                continue
            if name.startswith("__") and value == defaults.get(name):
                continue
        (bad_words if name in bad else good_words).append(f"{name}={value}")
    command = " ".join(shlex.quote(word) for word in words + good_words + bad_words)
    if bad:
        command += "  # fix: " + ", ".join(n for n in in_template_order(context, defaults) if n in bad)
    return command


def template_defaults(context):
    """The template's cookiecutter.json as this run saw it (pre_prompt's copy), or {}."""
    try:
        with open(os.path.join(context["_repo_dir"], "cookiecutter.json"), encoding="utf-8") as f:
            defaults = json.load(f)
    except (KeyError, TypeError, OSError, ValueError):
        return {}
    return defaults if isinstance(defaults, dict) else {}


def replay_file(context, environ):
    """Where cookiecutter saved these answers (it does so before this hook runs), or None.

    cookiecutter's replay_dir comes from the config file in $COOKIECUTTER_CONFIG, else
    ~/.cookiecutterrc, else ~/.cookiecutter_replay/; the file is named after the
    template's directory.  A --config-file given on the command line is invisible
    here, so the file found must hold exactly these answers to be named.
    """
    home = environ.get("HOME") or os.path.expanduser("~")
    replay_dirs = [os.path.join(home, ".cookiecutter_replay")]
    config = environ.get("COOKIECUTTER_CONFIG") or os.path.join(home, ".cookiecutterrc")
    try:
        with open(config, encoding="utf-8") as f:
            match = re.search(r"^replay_dir:[ \t]*['\"]?([^'\"\n#]*?)['\"]?[ \t]*$", f.read(), re.M)
        if match:
            replay_dirs.insert(0, os.path.expanduser(os.path.expandvars(match.group(1))))
    except OSError:
        pass
    name = os.path.basename(os.path.abspath(str(context.get("_repo_dir", ""))))
    for replay_dir in replay_dirs:
        path = os.path.join(replay_dir, name + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                if json.load(f).get("cookiecutter") == context:
                    return path
        except (OSError, ValueError, AttributeError):
            continue
    return None


def retry_advice(context, bad, defaults, environ, cwd, overwrite):
    lines = []
    saved = replay_file(context, environ)
    if saved:
        lines.append(f"Your answers are saved in {saved} (until this template runs again).")
    lines.append("To try again without answering every question, fix the value(s) marked at the end and run:")
    lines.append("  " + retry_command(context, bad, defaults, cwd=cwd, overwrite=overwrite))
    following = [n for n in in_template_order(context, defaults) if (follows(n, context, defaults) or set()) & set(bad) and not n.startswith("_")]
    if following:
        lines.append(f"({', '.join(following)}: left out, so that they follow the fixed value.)")
    return lines


def rendered_context():
    # Filled in by cookiecutter: JSON inside a Python string literal survives any value.
    return json.loads({{ cookiecutter | jsonify | tojson }})


def main():
    context = rendered_context()
    defaults = template_defaults(context)
    found = {}
    for line in problems(context):
        found.setdefault(line.split("=", 1)[0], line)
    found = root_problems(found, context, defaults)
    if not found:
        return
    for line in found.values():
        print(f"error: {line}", file=sys.stderr)
    print(f"error: nothing was generated ({len(found)} problem(s) above)", file=sys.stderr)
    # Runs in the new project's directory: files in it mean cookiecutter was given -f.
    overwrite = any(os.scandir("."))
    for line in retry_advice(context, set(found), defaults, os.environ, os.environ.get("PWD"), overwrite):
        print(line, file=sys.stderr)
    print("(cookiecutter adds a traceback of its own below: the lines above are all there is to fix.)", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
