"""Where `skaffold run` and `skaffold render` put the tags they built, modelled on Skaffold's source (v2).

- `pkg/skaffold/kubernetes/manifest/visitor.go`: `TransformAllowlist` (the kinds Skaffold
  transforms, and for each the paths of the fields it may rewrite: `Image`), and the visitor:
  for an allowed kind it walks the whole object; `navpath` is the dotted path of map keys from
  the object's top, lists adding nothing (`.spec.template.spec.containers.image` for every
  container's image). A kind not allowed is only looked at on its top level.
- `pkg/skaffold/kubernetes/manifest/images.go`: `allowByNavpath` lets a field be rewritten
  when its key is `image` and the kind's `Image` list holds ".*", or when its navpath equals
  one of that list's paths, whatever its key; `imageReplacer.Visit` then parses the value as
  an image reference (`docker.ParseReference`: distribution's `reference.Parse`, not
  normalised, so the name stays as written) and, unless it names a digest already
  (`selectLocalManifestImages`), replaces a value whose name equals a built artifact's
  `image` with the build's tag (`<name>:<tag>@<digest>` for a pushed build). A value that
  does not parse (a URL) is left alone.
- `pkg/skaffold/render/renderer/util/util.go`: `ConsolidateTransformConfiguration`: the
  defaults, then each `resourceSelector.allow` entry of skaffold.yaml REPLACES the default
  entry of its kind (and removes the kind from the denylist); `ConvertJSONPathIndex` drops
  every ".*" from a path other than ".*" itself (`.spec.template.spec.containers.*.env.*.value`
  becomes `.spec.template.spec.containers.env.value`).
- The same code in v2.12.0 (the oldest Skaffold the generated skaffold.yaml is written for).

`replace_images(objects, builds, config)`: the objects as Skaffold deploys them, for builds
[{"imageName", "tag"}] (its --file-output) and the skaffold.yaml config.
"""

import copy
import re

IMAGE_FIELD = "image"
EVERYWHERE = ".*"

# TransformAllowlist's kinds of core Kubernetes, by "Kind.group" (all: Image, Labels and
# PodSpec [".*"]); the custom resources' entries are left out (none is deployed here).
DEFAULT_ALLOW = {
    group_kind: {"groupKind": group_kind, "image": [EVERYWHERE], "labels": [EVERYWHERE], "podSpec": [EVERYWHERE]}
    for group_kind in (
        "Pod", "Service", "DaemonSet.apps", "Deployment.apps", "ReplicaSet.apps", "StatefulSet.apps",
        "CronJob.batch", "Job.batch", "DaemonSet.extensions", "Deployment.extensions", "ReplicaSet.extensions",
    )
}  # fmt: skip
DEFAULT_DENY = {
    "StatefulSet.apps": {"groupKind": "StatefulSet.apps", "labels": [".spec.volumeClaimTemplates.metadata.labels"]},
    "Job.batch": {"groupKind": "Job.batch", "labels": [".spec.template.metadata.labels"]},
}

# github.com/distribution/reference's grammar (regexp.go), as reference.Parse uses it.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"
REFERENCE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
# SanitizeImageName lower-cases the name part (matched case-insensitively) before parsing.
_REFERENCE_ANY_CASE = re.compile(REFERENCE.pattern, re.I)


def sanitize(image):
    match = _REFERENCE_ANY_CASE.match(image)
    return image.replace(match.group(1), match.group(1).lower(), 1) if match else image


def parse(image):
    """(name, tag, digest) as docker.ParseReference gives them, or None where it fails."""
    match = REFERENCE.match(sanitize(image))
    if not match or len(match.group(1)) > 255:
        return None
    return match.group(1), match.group(2), match.group(3)


def _convert(entry):
    """ConvertJSONPathIndex."""
    return {
        key: [path if path == EVERYWHERE else path.replace(EVERYWHERE, "") for path in value] if isinstance(value, list) else value
        for key, value in entry.items()
    }


def consolidate(config):
    """(allowlist, denylist) by "Kind.group": ConsolidateTransformConfiguration for skaffold.yaml's config."""
    allow = {k: _convert(v) for k, v in DEFAULT_ALLOW.items()}
    deny = {k: _convert(v) for k, v in DEFAULT_DENY.items()}
    selector = (config or {}).get("resourceSelector") or {}
    for entry in selector.get("allow") or []:
        allow[entry["groupKind"]] = _convert(entry)
        deny.pop(entry["groupKind"], None)
    for entry in selector.get("deny") or []:
        deny[entry["groupKind"]] = _convert(entry)
        allow.pop(entry["groupKind"], None)
    return allow, deny


def group_kind(obj):
    api_version = obj.get("apiVersion", "")
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return f"{obj.get('kind', '')}.{group}" if group else obj.get("kind", "")


def _allowed_kind(kind, allow, deny):
    """allowByGroupKind (for images)."""
    if kind not in allow:
        return False
    denied = deny.get(kind, {})
    return EVERYWHERE not in denied.get("labels", []) and EVERYWHERE not in denied.get("image", [])


def _allowed_path(kind, navpath, key, allow, deny):
    """allowByNavpath."""
    for path in deny.get(kind, {}).get("image", []):
        if path in (EVERYWHERE, navpath):
            return False
    for path in allow.get(kind, {}).get("image", []):
        if (path == EVERYWHERE and key == IMAGE_FIELD) or path == navpath:
            return True
    return False


def replace_images(objects, builds, config=None):
    """The objects with the built tags where Skaffold puts them (ReplaceImages)."""
    allow, deny = consolidate(config)
    tags = {sanitize(b["imageName"]): b["tag"] for b in builds}

    def visit(kind, navpath, parent, key, value, recursive):
        """imageReplacer.Visit; True: walk on into the value."""
        if not _allowed_path(kind, navpath, key, allow, deny) or not isinstance(value, str):
            return True
        parsed = parse(value)
        if parsed is None:
            return False
        name, _tag, digest = parsed
        if not digest and name in tags:
            parent[key] = tags[name]
        return False

    def visit_fields(kind, navpath, node, recursive):
        if isinstance(node, list):
            for item in node:
                visit_fields(kind, navpath, item, recursive)
        elif isinstance(node, dict):
            for key, value in list(node.items()):
                if visit(kind, f"{navpath}.{key}", node, key, value, recursive) and recursive:
                    visit_fields(kind, f"{navpath}.{key}", value, recursive)

    result = []
    for obj in objects:
        obj = copy.deepcopy(obj)
        kind = group_kind(obj)
        visit_fields(kind, "", obj, _allowed_kind(kind, allow, deny))
        result.append(obj)
    return result
