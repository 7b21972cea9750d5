"""Fill in the defaults from where the user works, before cookiecutter asks anything.

cookiecutter runs this in a temporary copy of the template, with the copy as the
working directory, before prompting (with --no-input too).  It rewrites that
copy's cookiecutter.json; values given on the command line or in a config file
still win, because cookiecutter applies them over these defaults.

- namespace:      $SESSION_NAMESPACE (workshop platforms announce it), else the
                  namespace of the current kube context, else the template's default.
- ingress_domain: $INGRESS_DOMAIN, else the template's default.
- registry:       $REGISTRY_HOST, else derived from namespace and ingress_domain.
- create_namespace: "no" first when the namespace came from the environment (a workshop's
                  session namespace, or the kube context's: it exists, and the user may
                  not be allowed to create one), else "yes" first.

Standard library only, and it never fails: without kubectl, a kube config or a
cluster, the defaults simply stay as they are.
"""

import json
import os
import shutil
import subprocess
import sys

KUBECTL_TIMEOUT_SECONDS = 5


def kube_config_files(environ):
    """The kube config files kubectl would read that exist: $KUBECONFIG's list, else
    ~/.kube/config. With none there is no context to ask about, so kubectl (some 0.1 s
    of every run) need not start."""
    home = environ.get("HOME") or os.path.expanduser("~")
    listed = environ.get("KUBECONFIG") or os.path.join(home, ".kube", "config")
    return [path for path in listed.split(os.pathsep) if path and os.path.isfile(path)]


def kube_context_namespace():
    """The namespace of the current kube context, or None.

    `kubectl config view --minify` reads the local kube config only; it never
    contacts a cluster, and the timeout guards against anything unexpected.
    """
    kubectl = shutil.which("kubectl")
    if not kubectl or not kube_config_files(os.environ):
        return None
    try:
        result = subprocess.run(
            [kubectl, "config", "view", "--minify", "--output", "jsonpath={..namespace}"],
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    namespace = result.stdout.strip()
    if result.returncode != 0 or not namespace or " " in namespace:
        return None
    return namespace


def defaults_from_environment(environ, context_namespace):
    """The defaults to change, as a dict: pure, so the tests can feed it anything."""
    changes = {}
    namespace = environ.get("SESSION_NAMESPACE", "").strip() or context_namespace
    if namespace:
        changes["namespace"] = namespace
        changes["create_namespace"] = ["no", "yes"]
    domain = environ.get("INGRESS_DOMAIN", "").strip()
    if domain:
        changes["ingress_domain"] = domain
    registry = environ.get("REGISTRY_HOST", "").strip()
    if registry:
        changes["registry"] = registry
    return changes


def main():
    path = "cookiecutter.json"
    with open(path, encoding="utf-8") as f:
        context = json.load(f)
    namespace = None
    if not os.environ.get("SESSION_NAMESPACE", "").strip():
        namespace = kube_context_namespace()
    changes = defaults_from_environment(os.environ, namespace)
    if not changes:
        return
    context.update(changes)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(context, f, indent=2, ensure_ascii=False)
        f.write("\n")
    for name, value in changes.items():
        print(f"default {name}={json.dumps(value)} (from your environment)", file=sys.stderr)


if __name__ == "__main__":
    main()
