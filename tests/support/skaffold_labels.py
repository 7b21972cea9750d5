"""What `skaffold run` adds to the manifests it deploys, modelled on Skaffold's source (v2).

- `pkg/skaffold/deploy/label/labeller.go`: the labels are `skaffold.dev/run-id=<run ID>`
  (a new UUID per run, `runcontext.GetRunContext`) plus the `--label` flags, which win over
  the run ID (`Labels()` sets the run ID first, then each custom label).
- `cmd/skaffold/app/cmd/cmd.go`: `skaffold.env` in the working directory is loaded into the
  environment (values already set are kept), and every flag can be given as
  `SKAFFOLD_<FLAG>`: `SKAFFOLD_LABEL=k=v` is `--label k=v` (a string slice: commas separate).
- `pkg/skaffold/kubernetes/manifest/visitor.go` and `labels.go`: for the kinds in
  `TransformAllowlist` with `Labels: [".*"]` (Pod, Service, Deployment, ...), the visitor walks
  the object recursively and sets the labels on every `metadata` map it meets: the object's
  own and a Deployment's `spec.template.metadata` alike. An existing label is kept, except
  `skaffold.dev/run-id`, which is always overwritten.

So without a fixed run ID, every run changes the hub's pod template, and the Deployment
rolls it. `labels_for_run(env_file_text, environ)` gives the labels of one run;
`apply(objects, labels)` what Skaffold deploys.
"""

import copy
import uuid

RUN_ID_LABEL = "skaffold.dev/run-id"
# TransformAllowlist's kinds whose labels Skaffold sets everywhere (".*"), by (group, kind).
LABELLED = {
    ("", "Pod"), ("", "Service"), ("apps", "DaemonSet"), ("apps", "Deployment"), ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"), ("batch", "CronJob"), ("batch", "Job"),
}  # fmt: skip
# TransformDenylist: label paths Skaffold leaves alone.
DENIED = {("apps", "StatefulSet"): ".spec.volumeClaimTemplates.metadata", ("batch", "Job"): ".spec.template.metadata"}


def parse_env_file(text):
    """godotenv's format as skaffold.env uses it: KEY=value lines, # comments, blank lines."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip().removeprefix("export ").strip()] = value.strip().strip('"').strip("'")
    return values


def labels_for_run(env_file_text=None, environ=None, run_id=None):
    """The labels one `skaffold run` sets: its run ID, then the --label values (from the
    environment, after skaffold.env was loaded into it without overriding)."""
    environ = dict(environ or {})
    for key, value in parse_env_file(env_file_text or "").items():
        environ.setdefault(key, value)
    labels = {RUN_ID_LABEL: run_id or str(uuid.uuid4())}
    for item in filter(None, environ.get("SKAFFOLD_LABEL", "").split(",")):
        key, _, value = item.partition("=")
        labels[key] = value
    return labels


def _group_kind(obj):
    api_version = obj.get("apiVersion", "")
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return group, obj.get("kind")


def _visit(node, path, labels, denied):
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}"
            if key == "metadata" and isinstance(value, dict) and child != denied:
                existing = value.setdefault("labels", {})
                for name, label in labels.items():
                    if name not in existing or name == RUN_ID_LABEL:
                        existing[name] = label
                continue  # the labels are set; Skaffold does not descend into metadata
            _visit(value, child, labels, denied)
    elif isinstance(node, list):
        for item in node:
            _visit(item, path, labels, denied)


def apply(objects, labels):
    """The objects as Skaffold deploys them with these labels."""
    result = []
    for obj in copy.deepcopy(objects):
        group_kind = _group_kind(obj)
        if group_kind in LABELLED:
            _visit(obj, "", labels, DENIED.get(group_kind))
        result.append(obj)
    return result
