"""What a kubelet makes of a pod's spec before it starts a container: pure functions, so that
the emulated kubelet (tests/support/kubelet.py), the hub tests that load the configuration in
process, and their unit tests all read a pod the same way.

- `environment(...)`: the container's environment, in the kubelet's order: the image's
  variables, the service links (unless enableServiceLinks is false), envFrom, env, with
  `$(NAME)` expanded against what was defined before, and `valueFrom` resolved (the
  downward API's fieldRef and resourceFieldRef, secretKeyRef, configMapKeyRef).
- `command(...)`: the argv, from the image's ENTRYPOINT and CMD and the container's
  command and args, as Kubernetes combines them.
- `identity(...)`: the user, group and supplementary groups the container runs with
  (runAsUser, runAsGroup, fsGroup, supplementalGroups over the image's USER), or the
  error the kubelet reports instead (runAsNonRoot with a root or non-numeric user).

A missing Secret, ConfigMap or key is a `ConfigError`: the kubelet shows it as the
container's `CreateContainerConfigError` and tries again later, as a kubelet does.
"""

import base64
import re


class ConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError."""


EXPANSION = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def expand(text, env):
    """Kubernetes' $(NAME) expansion: defined names are replaced, $$ is a literal $, the rest stays."""

    def replace(match):
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return EXPANSION.sub(replace, text)


def quantity(text):
    match = QUANTITY.fullmatch(str(text))
    if not match or match.group(2) not in SUFFIX:
        raise ValueError(f"not a quantity: {text!r}")
    return float(match.group(1)) * SUFFIX[match.group(2)]


def field_ref(pod, path, node):
    """The downward API's fieldRef values, as the kubelet resolves them."""
    meta, status = pod["metadata"], pod.get("status") or {}
    label = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if label:
        return (meta.get(label.group(1)) or {}).get(label.group(2), "")
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": node["name"],
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.hostIP": node["ip"],
        "status.hostIPs": node["ip"],
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(p["ip"] for p in status.get("podIPs") or []),
    }
    if path not in values:
        raise ConfigError(f"fieldRef {path!r} is not supported by the downward API")
    return values[path]


def resource_field_ref(container, ref, node):
    """limits.* and requests.* of a container (a limit left out: the node's allocatable)."""
    part, _, resource = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(part) or {}).get(resource)
    if value is None:
        value = node["allocatable"][resource] if part == "limits" else 0
    divisor = quantity(ref.get("divisor", "1"))
    amount = quantity(value) / divisor
    return str(int(-(-amount // 1)))  # rounded up, as the kubelet does


def decoded(secret):
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def source_data(store, kind, name, optional):
    """The key/value data of a Secret or ConfigMap of the pod's namespace; None if optional and absent."""
    obj = store.get((kind, name))
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    return decoded(obj) if kind == "Secret" else dict(obj.get("data") or {})


def service_links(services):
    """The Docker-links style variables the kubelet sets for every Service of the namespace."""
    env = {}
    for service in sorted(services, key=lambda s: s["metadata"]["name"]):
        ip = service["spec"].get("clusterIP")
        if not ip or ip == "None":
            continue
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        ports = service["spec"].get("ports") or []
        env[f"{prefix}_SERVICE_HOST"] = ip
        if not ports:
            continue
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        first = ports[0]
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            protocol = port.get("protocol", "TCP")
            base = f"{prefix}_PORT_{port['port']}_{protocol}"
            env[base] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[f"{base}_PROTO"] = protocol.lower()
            env[f"{base}_PORT"] = str(port["port"])
            env[f"{base}_ADDR"] = ip
    return env


def environment(pod, container, image_env, store, services, node):
    """The container's environment, as the kubelet builds it (dict, in definition order).

    store: {(kind, name): object} of the pod's namespace (Secrets, ConfigMaps);
    services: the namespace's Services (the `kubernetes` one included, if any);
    node: {"name", "ip", "allocatable": {"cpu", "memory"}}.
    """
    env = {}
    for item in image_env:
        name, _, value = item.partition("=")
        env[name] = value
    if pod["spec"].get("enableServiceLinks", True):
        env.update(service_links(services))
    else:
        env.update({k: v for k, v in service_links(services).items() if k.startswith("KUBERNETES_")})
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                ref = source[key]
                data = source_data(store, kind, ref["name"], ref.get("optional", False))
                for name, value in (data or {}).items():
                    if ENV_NAME.fullmatch(prefix + name):  # invalid names are skipped (an event, on a cluster)
                        env[prefix + name] = value
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_ref(pod, source["fieldRef"]["fieldPath"], node)
        elif "resourceFieldRef" in source:
            env[name] = resource_field_ref(container, source["resourceFieldRef"], node)
        else:
            kind, key = ("Secret", "secretKeyRef") if "secretKeyRef" in source else ("ConfigMap", "configMapKeyRef")
            ref = source[key]
            data = source_data(store, kind, ref["name"], ref.get("optional", False))
            if data is None:
                continue
            if ref["key"] not in data:
                if ref.get("optional", False):
                    continue
                raise ConfigError(f"couldn't find key {ref['key']} in {kind} {pod['metadata']['namespace']}/{ref['name']}")
            env[name] = data[ref["key"]]
    return env


def command(container, image_config, env):
    """argv: Kubernetes' rule for command/args over the image's ENTRYPOINT/CMD, then $(NAME)."""
    entrypoint = list(image_config.get("Entrypoint") or [])
    cmd = list(image_config.get("Cmd") or [])
    if container.get("command"):
        argv = list(container["command"]) + list(container.get("args") or [])
    elif container.get("args"):
        argv = entrypoint + list(container["args"])
    else:
        argv = entrypoint + cmd
    if not argv:
        raise ConfigError("no command specified")
    return [expand(str(a), env) for a in argv]


def security_contexts(pod, container):
    return pod["spec"].get("securityContext") or {}, container.get("securityContext") or {}


def identity(pod, container, image_user, passwd, group_file):
    """(uid, gid, groups) of the container; ConfigError where the kubelet refuses to start it.

    image_user: the image's USER ("", "1000", "1000:100", "jovyan"); passwd, group_file:
    the image's /etc/passwd and /etc/group lines (for a user name and the user's groups).
    """
    pod_context, context = security_contexts(pod, container)
    user, _, group = (image_user or "").partition(":")
    uid = context.get("runAsUser", pod_context.get("runAsUser"))
    gid = context.get("runAsGroup", pod_context.get("runAsGroup"))
    users = {}
    for line in passwd:
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit():
            users[fields[0]] = (int(fields[2]), int(fields[3]))
    non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
    if uid is None:
        if user == "":
            uid = 0
        elif user.isdigit():
            uid = int(user)
        else:
            if non_root:
                raise ConfigError(f"container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root")
            if user not in users:
                raise ConfigError(f"unable to find user {user}: no matching entries in passwd file")
            uid = users[user][0]
    if non_root and uid == 0:
        raise ConfigError(
            f'container has runAsNonRoot and image will run as root (pod: "{pod["metadata"]["name"]}", container: {container["name"]})'
        )
    if gid is None:
        if group.isdigit():
            gid = int(group)
        else:
            gid = next((g for u, g in users.values() if u == uid), 0)
    name = next((n for n, (u, _) in users.items() if u == uid), None)
    groups = [gid]
    for line in group_file:
        fields = line.split(":")
        if name and len(fields) >= 4 and fields[2].isdigit() and name in fields[3].split(","):
            groups.append(int(fields[2]))
    if pod_context.get("fsGroup") is not None:
        groups.append(pod_context["fsGroup"])
    groups += list(pod_context.get("supplementalGroups") or [])
    return uid, gid, sorted(set(groups))


def home(env, uid, passwd):
    """HOME as the runtime sets it when neither image nor pod does: the user's, else /."""
    if env.get("HOME"):
        return env["HOME"]
    for line in passwd:
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5]
    return "/"


def container_port(pod, port):
    """A container port of the pod, by number or name; None if it declares no such name."""
    if isinstance(port, int):
        return port
    if str(port).isdigit():
        return int(port)
    for container in pod["spec"].get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == port:
                return declared["containerPort"]
    return None
