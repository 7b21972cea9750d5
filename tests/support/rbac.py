"""RBAC as the Kubernetes API server applies it: request attributes from an HTTP request, and
the rules of the Roles bound to a subject.

- `request_attributes(method, path, query)`: what the API server's RequestInfoFactory makes
  of a request: verb (get, list, watch, create, update, patch, delete, deletecollection),
  API group, namespace, resource, subresource (pods/log, pods/status, ...) and name (for a
  list or watch, the name a `metadata.name=` field selector pins).
- `rule_allows(rule, attributes)`: the RBAC authorizer's RuleAllows: the verb, the group, the
  resource ("pods", "pods/log", "*", "*/log") and, when the rule lists resourceNames, the
  name. A rule with resourceNames never allows a request without a name (create, an
  unfiltered list or watch, deletecollection).
- `rules_for(objects, namespace, service_account)`: the rules of every Role the rendered
  RoleBindings give that service account in that namespace (ClusterRoles are not part of
  what this project may render, and are not looked up).
"""

from urllib.parse import parse_qs


CONNECT_SUBRESOURCES = {"exec", "attach", "portforward", "proxy"}


def request_attributes(method, path, query=None):
    """The attributes the authorizer sees; None for a path that is not a resource request."""
    query = query or {}
    if isinstance(query, str):
        query = {k: v[-1] for k, v in parse_qs(query).items()}
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    watching = str(query.get("watch", "")).lower() in ("true", "1")
    if rest[:1] == ["watch"]:  # the old /api/v1/watch/... form
        watching, rest = True, rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":  # /namespaces/<ns>/<resource>...
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""
    if name:
        verb = {"GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete", "POST": "create"}.get(method)
        if watching and method == "GET":
            verb = "watch"
    else:
        verb = {"GET": "list", "HEAD": "list", "POST": "create", "DELETE": "deletecollection"}.get(method)
        if watching and method == "GET":
            verb = "watch"
        # A list or watch filtered to one name is authorized as a request for that name.
        if verb in ("list", "watch"):
            for term in str(query.get("fieldSelector", "")).split(","):
                key, _, value = term.replace("==", "=").partition("=")
                if "!" not in key and key.strip() == "metadata.name":
                    name = value.strip()
    if subresource in CONNECT_SUBRESOURCES:
        verb = {"GET": "get", "POST": "create"}.get(method, verb)
    return {
        "verb": verb,
        "apiGroup": group,
        "namespace": namespace,
        "resource": resource,
        "subresource": subresource,
        "name": name,
    }


def verb_matches(rule, verb):
    return any(v in ("*", verb) for v in rule.get("verbs") or [])


def group_matches(rule, group):
    return any(g in ("*", group) for g in rule.get("apiGroups") or [])


def resource_matches(rule, resource, subresource):
    combined = f"{resource}/{subresource}" if subresource else resource
    for allowed in rule.get("resources") or []:
        if allowed in ("*", combined):
            return True
        if subresource and allowed == f"*/{subresource}":
            return True
    return False


def name_matches(rule, name):
    names = rule.get("resourceNames") or []
    return not names or name in names


def rule_allows(rule, attributes):
    return (
        verb_matches(rule, attributes["verb"])
        and group_matches(rule, attributes["apiGroup"])
        and resource_matches(rule, attributes["resource"], attributes["subresource"])
        and name_matches(rule, attributes["name"])
    )


def allows(rules, attributes):
    return any(rule_allows(rule, attributes) for rule in rules)


def subject_matches(subject, namespace, service_account):
    return (
        subject.get("kind") == "ServiceAccount"
        and subject.get("name") == service_account
        and (subject.get("namespace") or namespace) == namespace
    )


def rules_for(objects, namespace, service_account):
    """The rules of the Roles in `namespace` that RoleBindings there give the service account."""
    roles = {
        o["metadata"]["name"]: o
        for o in objects
        if o["kind"] == "Role" and o["metadata"].get("namespace", namespace) == namespace
    }
    rules = []
    for binding in objects:
        if binding["kind"] != "RoleBinding" or binding["metadata"].get("namespace", namespace) != namespace:
            continue
        if not any(subject_matches(s, namespace, service_account) for s in binding.get("subjects") or []):
            continue
        ref = binding["roleRef"]
        if ref.get("kind") == "Role" and ref.get("name") in roles:
            rules += roles[ref["name"]].get("rules") or []
    return rules


def forbidden_message(attributes, user):
    """The API server's 403 message, worded as Kubernetes words it."""
    resource = attributes["resource"] + (f"/{attributes['subresource']}" if attributes["subresource"] else "")
    what = f'{resource} "{attributes["name"]}"' if attributes["name"] else resource
    where = f' in the namespace "{attributes["namespace"]}"' if attributes["namespace"] else " at the cluster scope"
    return (
        f'{what} is forbidden: User "{user}" cannot {attributes["verb"]} resource "{resource}"'
        f' in API group "{attributes["apiGroup"]}"{where}'
    )
