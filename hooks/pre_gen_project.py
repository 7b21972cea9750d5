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
import re
import sys

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

CHOICES = {
    "authenticator": ("dummy", "native", "github", "generic-oauth", "tmp"),
    "hub_secrets": ("env-file", "existing-secret"),
    "tls": ("no", "yes"),
    "kaniko_credentials": ("docker-config", "secret", "none"),
    "user_storage": ("yes", "no"),
    "registry_insecure": ("no", "yes"),
    "idle_culling": ("yes", "no"),
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
    return None


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


RULES = {
    "project": check_project,
    "namespace": check_namespace,
    "ingress_domain": check_subdomain,
    "hostname": check_subdomain,
    "registry": check_registry,
    "image_name": check_image_name,
    "admin_user": check_username,
    "oauth_authorize_url": check_https_url,
    "oauth_token_url": check_https_url,
    "oauth_userdata_url": check_https_url,
    "hub_version": check_tag,
    "user_image": check_pinned_image,
    "user_storage_size": check_quantity,
    "hub_storage_size": check_quantity,
    "storage_class": check_optional_subdomain,
    "ingress_class": check_optional_subdomain,
    "ingress_controller_namespace": check_optional_label,
    "cert_manager_issuer": check_optional_subdomain,
    "kaniko_secret_name": check_subdomain,
    "kaniko_image": check_pinned_image,
    "idle_timeout": check_seconds,
}


def check_choice(name, value):
    if value not in CHOICES[name]:
        return "must be one of " + ", ".join(CHOICES[name])
    return None


# Checked only where the chosen options use them, so that a mistake elsewhere is
# reported once, not again through the defaults derived from it.
USED_ONLY_WITH = {
    "oauth_authorize_url": ("authenticator", "generic-oauth"),
    "oauth_token_url": ("authenticator", "generic-oauth"),
    "oauth_userdata_url": ("authenticator", "generic-oauth"),
    "kaniko_secret_name": ("kaniko_credentials", "secret"),
}


def problems(context):
    """One line per problem: the variable, its value (JSON-quoted, so on one line) and the rule."""
    lines = []
    for name, rule in list(RULES.items()) + [(n, None) for n in CHOICES]:
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
            problem = check_choice(name, value)
        else:
            problem = rule(value)
        if problem:
            lines.append(f"{name}={json.dumps(value, ensure_ascii=True)} {problem}")
    return lines


def rendered_context():
    # Filled in by cookiecutter: JSON inside a Python string literal survives any value.
    return json.loads({{ cookiecutter | jsonify | tojson }})


def main():
    found = problems(rendered_context())
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    if found:
        print(f"error: nothing was generated ({len(found)} problem(s) above)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
