"""Is the hub's Role minimal? Evidence from the API requests the hub made on the emulated cluster.

A Role is right when the hub was refused nothing it asked for, and every verb it grants was
used, or is needed by a code path too rare for a test run to take, which the Role's own
comment names (`<verb>: KubeSpawner.<method>`, a method the installed KubeSpawner has).
The comments are read from the Role's source file (kubectl kustomize drops comments).
"""

import re

# A comment line such as "#   get: KubeSpawner._make_create_pvc_request reads the claim ...".
EXCUSE = re.compile(r"#\s*(?P<verbs>[a-z]+(?:\s*,\s*[a-z]+)*)\s*:\s*(?P<path>KubeSpawner\.(?P<method>[A-Za-z_][A-Za-z0-9_]*))")


def granted(rules):
    """{(resource, verb)} that the Role's rules grant (core API group)."""
    return {
        (resource, verb)
        for rule in rules
        if "" in (rule.get("apiGroups") or [])
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    }


def observed(requests, user):
    """{(resource, verb)} of the requests `user` made that the API server answered (not 401/403)."""
    return {
        (r["resource"] + (f"/{r['subresource']}" if r.get("subresource") else ""), r["verb"])
        for r in requests
        if r.get("user") == user and r.get("verb") and r["status"] not in (401, 403)
    }


def excuses(role_source):
    """{(resource, verb): "KubeSpawner.method"} from the comments above each rule of the Role's
    source: a rule's comment block is the run of comment lines just before its `- apiGroups:`."""
    found = {}
    block = []
    lines = role_source.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped)
            continue
        if stripped.startswith("- apiGroups:"):
            resources = []
            for following in lines[index + 1:index + 4]:
                match = re.search(r"resources:\s*\[([^\]]*)\]", following)
                if match:
                    resources = [r.strip() for r in match.group(1).split(",") if r.strip()]
            for comment in block:
                for match in EXCUSE.finditer(comment):
                    for verb in re.split(r"\s*,\s*", match.group("verbs")):
                        for resource in resources:
                            found[(resource, verb)] = match.group("path")
        block = []
    return found


def problems(rules, requests, user, role_source, spawner_class):
    """What makes the Role other than minimal and sufficient, as sentences ([] when it is both)."""
    found = []
    refused = sorted({(r["resource"], r["verb"]) for r in requests if r.get("user") == user and r["status"] == 403})
    for resource, verb in refused:
        found.append(f"the hub was refused {verb} on {resource}, which it needs")
    used = observed(requests, user)
    reasons = excuses(role_source)
    for resource, verb in sorted(granted(rules) - used):
        reason = reasons.get((resource, verb))
        if reason is None:
            found.append(f"the Role grants {verb} on {resource}, which the hub never used, and its comment names no code path that needs it")
        elif not hasattr(spawner_class, reason.split(".", 1)[1]):
            found.append(f"the Role's comment excuses {verb} on {resource} with {reason}, which KubeSpawner does not have")
    return found
