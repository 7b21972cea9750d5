"""Pod Security admission, as the API server applies it to a pod in a labelled namespace.

The checks follow the Pod Security Standards document (kubernetes.io/docs/concepts/security/
pod-security-standards, the "latest" version of each level) control by control, with the
field paths it lists; the messages are worded as the pod-security-admission library words
them (`violates PodSecurity "restricted:latest": <check> (<detail>), ...`), so what a test
prints is what a user of a real cluster would read.

`violations(pod, level)` returns the failed checks as (name, detail) pairs, in the order
the document lists the controls; `admission_error(pod, name, level)` the refusal message, or
None. The level of a namespace comes from its `pod-security.kubernetes.io/enforce` label.
Only `enforce` refuses: `warn` and `audit` never stop a pod, and are not emulated.
"""

LEVELS = ("privileged", "baseline", "restricted")
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"

# Baseline, "Capabilities": what a container may add beyond the runtime's default set.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
# Baseline, "Sysctls": the safe set.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
# Baseline, "SELinux": the types a pod may ask for.
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Restricted, "Volume Types": the only volume sources allowed.
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")


def level_of(namespace_labels):
    """The enforced level of a namespace; privileged (nothing refused) without the label."""
    level = (namespace_labels or {}).get(ENFORCE_LABEL, "privileged")
    if level not in LEVELS:
        raise ValueError(f"{ENFORCE_LABEL}={level!r} is not a Pod Security level")
    return level


def _containers(spec):
    return [(kind, c) for kind in CONTAINER_KINDS for c in spec.get(kind) or []]


def _quoted(names):
    return ", ".join(f'"{n}"' for n in names)


def _containers_phrase(names):
    return f'container {_quoted(names)}' if len(names) == 1 else f"containers {_quoted(names)}"


def baseline_violations(pod):
    spec = pod.get("spec") or {}
    pod_context = spec.get("securityContext") or {}
    containers = _containers(spec)
    found = []

    # HostProcess: Windows host processes.
    host_process = [c["name"] for _, c in containers if ((c.get("securityContext") or {}).get("windowsOptions") or {}).get("hostProcess")]
    if (pod_context.get("windowsOptions") or {}).get("hostProcess") or host_process:
        found.append(("hostProcess", "pod or containers must not set securityContext.windowsOptions.hostProcess=true"))
    # Host Namespaces.
    shared = [f"{field}=true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    if shared:
        found.append(("host namespaces", ", ".join(shared)))
    # Privileged Containers.
    privileged = [c["name"] for _, c in containers if (c.get("securityContext") or {}).get("privileged")]
    if privileged:
        found.append(("privileged", f"{_containers_phrase(privileged)} must not set securityContext.privileged=true"))
    # Capabilities: nothing added beyond the default set.
    added = {}
    for _, c in containers:
        extra = [cap for cap in ((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or [] if cap not in BASELINE_CAPABILITIES]
        if extra:
            added[c["name"]] = extra
    if added:
        caps = sorted({cap for extra in added.values() for cap in extra})
        found.append(("non-default capabilities", f"{_containers_phrase(list(added))} must not include {_quoted(caps)} in securityContext.capabilities.add"))
    # HostPath Volumes.
    host_paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_paths:
        found.append(("hostPath volumes", f"volumes {_quoted(host_paths)}" if len(host_paths) > 1 else f'volume "{host_paths[0]}"'))
    # Host Ports.
    host_ports = [str(p["hostPort"]) for _, c in containers for p in c.get("ports") or [] if p.get("hostPort")]
    if host_ports:
        found.append(("hostPort", f"hostPorts {', '.join(host_ports)}" if len(host_ports) > 1 else f"hostPort {host_ports[0]}"))
    # AppArmor: RuntimeDefault or Localhost, never Unconfined (fields and the old annotations).
    apparmor = []
    for where, context in [("pod", pod_context)] + [(c["name"], c.get("securityContext") or {}) for _, c in containers]:
        if (context.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            apparmor.append(where)
    for key, value in ((pod.get("metadata") or {}).get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            apparmor.append(key.rsplit("/", 1)[1])
    if apparmor:
        found.append(("forbidden AppArmor profile", f"{', '.join(apparmor)} must not use an unconfined AppArmor profile"))
    # SELinux: a type from the allowed list, no user or role.
    selinux = []
    for where, context in [("pod", pod_context)] + [(c["name"], c.get("securityContext") or {}) for _, c in containers]:
        options = context.get("seLinuxOptions") or {}
        if options.get("type", "") not in SELINUX_TYPES or options.get("user") or options.get("role"):
            selinux.append(where)
    if selinux:
        found.append(("seLinuxOptions", f"{', '.join(selinux)} set forbidden securityContext.seLinuxOptions"))
    # /proc Mount Type.
    proc_mounts = [c["name"] for _, c in containers if (c.get("securityContext") or {}).get("procMount", "Default") != "Default"]
    if proc_mounts:
        found.append(("procMount", f"{_containers_phrase(proc_mounts)} must not set securityContext.procMount"))
    # Seccomp: never Unconfined.
    unconfined = ["pod"] if (pod_context.get("seccompProfile") or {}).get("type") == "Unconfined" else []
    unconfined += [c["name"] for _, c in containers if ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type") == "Unconfined"]
    if unconfined:
        found.append(("seccompProfile", f"{', '.join(unconfined)} must not set securityContext.seccompProfile.type to \"Unconfined\""))
    # Sysctls: the safe set only.
    unsafe = [s["name"] for s in pod_context.get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]
    if unsafe:
        found.append(("forbidden sysctls", ", ".join(unsafe)))
    return found


def restricted_violations(pod):
    spec = pod.get("spec") or {}
    pod_context = spec.get("securityContext") or {}
    containers = _containers(spec)
    found = []
    # Volume Types.
    bad_volumes = [v["name"] for v in spec.get("volumes") or [] if not (set(v) - {"name"}) <= RESTRICTED_VOLUME_TYPES]
    if bad_volumes:
        found.append(("restricted volume types", f"volumes {_quoted(bad_volumes)}" if len(bad_volumes) > 1 else f'volume "{bad_volumes[0]}"'))
    # Privilege Escalation: allowPrivilegeEscalation=false on every container.
    escalating = [c["name"] for _, c in containers if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False]
    if escalating:
        found.append(("allowPrivilegeEscalation != false", f"{_containers_phrase(escalating)} must set securityContext.allowPrivilegeEscalation=false"))
    # Capabilities: drop ALL, add at most NET_BIND_SERVICE.
    not_dropping = [c["name"] for _, c in containers if "ALL" not in (((c.get("securityContext") or {}).get("capabilities") or {}).get("drop") or [])]
    adding = [c["name"] for _, c in containers if set(((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}]
    if not_dropping or adding:
        details = []
        if not_dropping:
            details.append(f'{_containers_phrase(not_dropping)} must set securityContext.capabilities.drop=["ALL"]')
        if adding:
            details.append(f'{_containers_phrase(adding)} must not include capabilities other than "NET_BIND_SERVICE" in securityContext.capabilities.add')
        found.append(("unrestricted capabilities", "; ".join(details)))
    # Running as Non-root: the pod says true (containers may leave it out), or every container does; false nowhere.
    pod_non_root = pod_context.get("runAsNonRoot")
    explicit_false = [c["name"] for _, c in containers if (c.get("securityContext") or {}).get("runAsNonRoot") is False]
    unset = [c["name"] for _, c in containers if (c.get("securityContext") or {}).get("runAsNonRoot") is None]
    if pod_non_root is False or explicit_false or (pod_non_root is not True and unset):
        names = explicit_false or unset
        found.append(("runAsNonRoot != true", f"pod or {_containers_phrase(names)} must set securityContext.runAsNonRoot=true" if names else "pod must not set securityContext.runAsNonRoot=false"))
    # Running as Non-root user: runAsUser never 0.
    root_users = (["pod"] if pod_context.get("runAsUser") == 0 else []) + [
        c["name"] for _, c in containers if (c.get("securityContext") or {}).get("runAsUser") == 0
    ]
    if root_users:
        found.append(("runAsUser=0", f"{', '.join(root_users)} must not set runAsUser=0"))
    # Seccomp: RuntimeDefault or Localhost on the pod, or on every container that does not inherit it.
    allowed = ("RuntimeDefault", "Localhost")
    pod_type = (pod_context.get("seccompProfile") or {}).get("type")
    missing = []
    for _, c in containers:
        own = ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
        if own is None and pod_type in allowed:
            continue
        if own not in allowed and own != "Unconfined":  # Unconfined: baseline's message says it
            missing.append(c["name"])
    if missing:
        found.append(("seccompProfile", f'pod or {_containers_phrase(missing)} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"'))
    return found


def violations(pod, level):
    """The checks of `level` the pod fails, as (check, detail) pairs: [] when it is admitted."""
    if level == "privileged":
        return []
    found = baseline_violations(pod)
    if level == "restricted":
        found += restricted_violations(pod)
    return found


def admission_error(pod, name, level):
    """The API server's refusal of a pod in a namespace enforcing `level`, or None."""
    found = violations(pod, level)
    if not found:
        return None
    detail = ", ".join(f"{check} ({why})" for check, why in found)
    return f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": {detail}'
