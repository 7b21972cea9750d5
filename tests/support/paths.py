"""The needed-paths table (tests/needed_paths.yaml), evaluated against a render, as a
NetworkPolicy engine decides a connection: in both directions.

A packet from a pod is allowed out when no policy of its namespace selects it for Egress,
or a rule of one that does allows it; it is allowed in when no policy of the destination's
namespace selects the destination for Ingress, or a rule of one that does allows it. A
rule allows it when one of its ports matches (a number, with endPort; or a name, resolved
on the destination pod's container ports; the protocol, TCP unless given) and one of its
peers matches (podSelector in the policy's namespace; namespaceSelector, with a
podSelector if given; ipBlock by address, minus its exceptions). An empty list of ports
or peers matches everything; a policy of that type with no rules matches nothing.

`endpoints(...)` builds the table's endpoints from the render, the hub's configuration and
the answers; `evaluate(...)` says, per row, which connections are not as the table wants.
"""

import copy
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from support import fast_yaml
from support.labels import selects

TABLE = Path(__file__).resolve().parent.parent / "needed_paths.yaml"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def table():
    return fast_yaml.load(TABLE.read_text(encoding="utf-8"))


@dataclass
class Endpoint:
    """A pod (labels set) or an address outside the cluster (labels None)."""

    name: str
    ip: str
    namespace: str = None
    labels: dict = None
    ports: dict = field(default_factory=dict)  # container port name -> number
    port: int = None  # the port this variant listens on, for rows that name none

    @property
    def namespace_labels(self):
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


def container_ports(pod_template):
    return {p["name"]: p["containerPort"] for c in pod_template["spec"]["containers"] for p in c.get("ports") or [] if "name" in p}


def url_ports(urls):
    ports = set()
    for url in urls:
        parsed = urlparse(url)
        ports.add(parsed.port or (443 if parsed.scheme == "https" else 80))
    return ports


def endpoints(docs, hub_config, case, user_labels, user_port, template_defaults):
    """{table endpoint name: [Endpoint variants]} for one render and its answers."""
    deployments = {d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component"): d for d in docs if d["kind"] == "Deployment"}
    deployment = deployments["hub"]
    namespace = deployment["metadata"]["namespace"]
    template = deployment["spec"]["template"]
    # The proxy: a pod of its own with proxy=separate, else the hub's pod (it runs there).
    proxy = deployments.get("proxy", deployment)["spec"]["template"]
    ingress_namespace = case.get("ingress_controller_namespace") or ""
    controller = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}
    found = {
        "hub": [Endpoint("hub", "10.244.1.10", namespace, template["metadata"]["labels"], container_ports(template))],
        "proxy": [Endpoint("proxy", "10.244.1.11" if proxy is not template else "10.244.1.10", namespace, proxy["metadata"]["labels"], container_ports(proxy))],
        "user-server": [Endpoint("user-server", "10.244.1.31", namespace, user_labels, {"notebook-port": user_port})],
        "ingress-controller": [Endpoint("ingress-controller", "10.244.2.5", ingress_namespace, controller)]
        if ingress_namespace
        else [Endpoint("ingress-controller", "10.244.2.5", "ingress-nginx", controller),
              Endpoint("ingress-controller", "10.244.0.9", "kube-system", {"app.kubernetes.io/name": "traefik"})],  # fmt: skip
        "other-namespace": [Endpoint("other-namespace", "10.244.3.7", "other-team", {"app": "something"})],
        "same-namespace-pod": [Endpoint("same-namespace-pod", "10.244.1.20", namespace, {"app": "something-else"})],
        "dns": [Endpoint("dns", "10.244.0.3", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53, "dns-tcp": 53})],
        # The API server as policy engines see it, after the `kubernetes` Service's translation.
        "api-server": [
            Endpoint("api-server (managed: GKE, EKS, AKS)", "34.118.224.1", port=443),
            Endpoint("api-server (kind)", "172.18.0.2", port=6443),
            Endpoint("api-server (k3s)", "192.168.1.10", port=6443),
            Endpoint("api-server (minikube)", "192.168.49.2", port=8443),
            Endpoint("api-server (MicroK8s)", "10.0.2.15", port=16443),
        ],
        "internet": [Endpoint("internet (IPv4)", "151.101.0.223"), Endpoint("internet (IPv6)", "2a04:4e42::223")],
        "private-address": [
            Endpoint("metadata service", "169.254.169.254"),
            Endpoint("a private address", "10.0.0.1"),
            Endpoint("AWS metadata over IPv6", "fd00:ec2::254"),
        ],
    }
    authenticator = case.get("authenticator")
    if authenticator == "github":
        found["oauth-provider"] = [Endpoint("oauth-provider (api.github.com)", "140.82.112.6", port=443)]
    elif authenticator == "generic-oauth":
        urls = [case.get(n, template_defaults[n]) for n in ("__oauth_token_url", "__oauth_userdata_url")]
        urls = [u for u in urls if "{{" not in u] or ["https://idp.example.org/token"]
        found["oauth-provider"] = [Endpoint(f"oauth-provider port {p}", "203.0.113.50", port=p) for p in sorted(url_ports(urls))]
    found["hub-loopback"] = [Endpoint("hub-loopback", "127.0.0.1", namespace, template["metadata"]["labels"], container_ports(template))]
    # pre_puller=yes: the DaemonSet's pod (its containers declare no ports).
    for daemonset in (d for d in docs if d["kind"] == "DaemonSet"):
        labels = daemonset["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") == "pre-puller":
            found["pre-puller"] = [Endpoint("pre-puller", "10.244.1.40", daemonset["metadata"]["namespace"], labels, container_ports(daemonset["spec"]["template"]))]
    return found


def applies(row, case, defaults=None):
    """Whether a row applies to these answers (a variable not given has its default from
    cookiecutter.json: the first of its choices)."""
    for name, values in (row.get("when") or {}).items():
        default = (defaults or {}).get(name, "")
        value = case.get(name, default[0] if isinstance(default, list) else default)
        if "<any given>" in values:
            if not value:
                return False
        elif value not in values:
            return False
    return True


# --- The engine ---------------------------------------------------------------------------------


def policy_types(policy):
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def port_matches(rule_port, port, protocol, destination):
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    number = rule_port.get("port")
    if number is None:
        return True
    if isinstance(number, str) and not number.isdigit():
        return destination.labels is not None and destination.ports.get(number) == port
    number = int(number)
    return number <= port <= rule_port.get("endPort", number)


def peer_matches(peer, endpoint, policy_namespace):
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address, network = ipaddress.ip_address(endpoint.ip), ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(
            address in ipaddress.ip_network(e) for e in block.get("except") or [] if ipaddress.ip_network(e).version == address.version
        )
    if endpoint.labels is None:  # an address outside the cluster is no pod
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], endpoint.namespace_labels):
            return False
    elif endpoint.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], endpoint.labels)


def rule_allows(rule, direction, peer, port, protocol, destination, policy_namespace):
    peers = rule.get("to" if direction == "Egress" else "from")
    ports_ok = not rule.get("ports") or any(port_matches(p, port, protocol, destination) for p in rule["ports"])
    peers_ok = not peers or any(peer_matches(p, peer, policy_namespace) for p in peers)
    return ports_ok and peers_ok


def selecting(docs, direction, subject):
    return [
        d for d in docs
        if d["kind"] == "NetworkPolicy" and d["metadata"].get("namespace") == subject.namespace
        and direction in policy_types(d) and selects(d["spec"].get("podSelector") or {}, subject.labels)
    ]  # fmt: skip


def allowing_rules(docs, direction, subject, peer, port, protocol):
    """[(policy name, index)] of the rules that let this connection through in one direction;
    None when no policy selects the subject for it (everything is let through)."""
    if subject.labels is None:
        return None
    policies = selecting(docs, direction, subject)
    if not policies:
        return None
    destination = peer if direction == "Egress" else subject
    key = "egress" if direction == "Egress" else "ingress"
    return [
        (policy["metadata"]["name"], index)
        for policy in policies
        for index, rule in enumerate(policy["spec"].get(key) or [])
        if rule_allows(rule, direction, peer, port, protocol, destination, policy["metadata"]["namespace"])
    ]


def connection_open(docs, source, destination, port, protocol):
    for direction, subject, peer in (("Egress", source, destination), ("Ingress", destination, source)):
        rules = allowing_rules(docs, direction, subject, peer, port, protocol)
        if rules is not None and not rules:
            return False
    return True


def connections(row, found, hub_config):
    """(source, destination, port, protocol) of every variant the row stands for."""
    for source in found[row["from"]]:
        for destination in found[row["to"]]:
            ports = [destination.port] if "port" not in row else [row["port"]]
            for port in ports:
                if isinstance(port, str):
                    port = destination.ports.get(port)
                for protocol in row.get("protocols") or ["TCP"]:
                    yield source, destination, port, protocol


def culler_url(hub_config):
    """Where the idle culler calls the hub API: its --url, or else JupyterHub.hub_connect_url
    (which JupyterHub gives hub-managed services as JUPYTERHUB_API_URL)."""
    for service in hub_config.JupyterHub.get("services", []):
        if service.get("name") == "idle-culler":
            for arg in service.get("command", []):
                if arg.startswith("--url="):
                    return urlparse(arg[len("--url="):])
    return urlparse(hub_config.JupyterHub.get("hub_connect_url", "http://hub:8081"))


def loopback_row_open(hub_config, docs, found):
    """The culler reaches the hub over loopback (no policy sees it), or else through the
    Service, i.e. from the hub's pod to the hub's pod."""
    url = culler_url(hub_config)
    if url.hostname in LOOPBACK:
        return True
    [hub] = found["hub"]
    return connection_open(docs, hub, hub, url.port or 8081, "TCP")


def row_problems(row, docs, found, hub_config, want_open):
    if row["to"] == "hub-loopback":
        is_open = loopback_row_open(hub_config, docs, found)
        return [] if is_open == want_open else [f"{row['name']}: {'closed' if want_open else 'open'} (hub_connect_url)"]
    missing = [end for end in (row["from"], row["to"]) if end not in found]
    if missing:
        return [f"{row['name']}: the render has no {', '.join(missing)}"]
    problems = []
    for source, destination, port, protocol in connections(row, found, hub_config):
        if port is None:
            problems.append(f"{row['name']}: {destination.name} has no port {row.get('port')!r}")
            continue
        if connection_open(docs, source, destination, port, protocol) != want_open:
            problems.append(
                f"{row['name']}: {source.name} -> {destination.name} {destination.ip}:{port}/{protocol} is "
                + ("closed by the NetworkPolicies" if want_open else "open")
            )
    return problems


def evaluate(docs, hub_config, case, user_labels, user_port, template_defaults, paths=None):
    """Every way the render differs from the table, as sentences ([] when it matches)."""
    paths = paths or table()
    found = endpoints(docs, hub_config, case, user_labels, user_port, template_defaults)
    problems = []
    for row in paths["needed"]:
        if applies(row, case, template_defaults):
            problems += row_problems(row, docs, found, hub_config, want_open=True)
    for row in paths["closed"]:
        if applies(row, case, template_defaults):
            problems += row_problems(row, docs, found, hub_config, want_open=False)
    return problems


def rules_carrying(row, docs, found, hub_config):
    """{(policy name, direction, index)} of the rules that let any connection of the row through."""
    carrying = set()
    for source, destination, port, protocol in connections(row, found, hub_config):
        for direction, subject, peer in (("Egress", source, destination), ("Ingress", destination, source)):
            for name, index in allowing_rules(docs, direction, subject, peer, port, protocol) or []:
                carrying.add((name, direction, index))
    return carrying


def without_rules(docs, rules):
    """The render with these policy rules taken out."""
    docs = copy.deepcopy(docs)
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        for direction, key in (("Egress", "egress"), ("Ingress", "ingress")):
            doomed = {i for name, d, i in rules if name == policy["metadata"]["name"] and d == direction}
            if doomed:
                policy["spec"][key] = [r for i, r in enumerate(policy["spec"].get(key) or []) if i not in doomed]
    return docs
