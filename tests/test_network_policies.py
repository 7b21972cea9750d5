"""What the rendered NetworkPolicies let through, address by address and port by port.

For every combination of choices (and a few generic-oauth providers on their own
ports), both overlays:

- the hub reaches any address on TCP 443, 6443, 8443 and 16443 (the Kubernetes API
  server as policy engines see it: managed clusters, kind and k3s, minikube,
  MicroK8s) and on the ports generic-oauth's token and user-info URLs name;
  besides that only DNS and user servers, nothing else;
- user pods reach the internet over IPv4 and IPv6, but no private, unique-local
  or link-local address (the cloud metadata services included), on any port.

The policies are evaluated as a policy engine would: a rule lets a packet through
when one of its ports and one of its peers match; an ipBlock matches an address in
its cidr and in none of its exceptions.
"""

import copy
import ipaddress
import json
from urllib.parse import urlparse

import pytest

from conftest import MATRIX, OVERLAYS, combo_id
from support.labels import selects
from support import paths
from support.netpol import hub_pod, one
from test_security import CASES, user_pod_labels, user_port

API_SERVER_PORTS = {443, 6443, 8443, 16443}

# Addresses outside the cluster that the hub and user pods may reach.
PUBLIC = ["8.8.8.8", "203.0.113.7", "2001:4860:4860::8888", "2606:4700:4700::1111"]
# Addresses user pods must not reach: private, shared, unique-local, link-local.
PRIVATE = [
    "10.0.0.1", "10.96.0.1", "172.16.0.1", "172.31.255.254", "192.168.1.1",
    "169.254.169.254",  # the cloud metadata service (AWS, GCP, Azure, ...)
    "100.64.0.1",
    "fd00:ec2::254",  # AWS's metadata service over IPv6
    "fc00::1", "fd12:3456:789a::1", "fe80::1", "febf:ffff::1",
]  # fmt: skip
# Ports a probe tries besides those the policies name.
PROBE_PORTS = [22, 25, 53, 80, 443, 2379, 6443, 8080, 8443, 10250, 16443, 30000]

# generic-oauth providers on ports of their own: the hub must reach the token and
# user-info ports, and no more (the browser, not the hub, opens the authorize URL).
OAUTH_PROVIDERS = [
    dict(
        __oauth_authorize_url="https://sso.example.org:7443/auth",
        __oauth_token_url="https://sso.example.org:8444/token",
        __oauth_userdata_url="https://sso.example.org:9443/userinfo",
    ),
    dict(  # the port the API server rule opens already, and an explicit 443
        __oauth_authorize_url="https://login.example.org:8443/oauth2/authorize",
        __oauth_token_url="https://login.example.org:8443/oauth2/token",
        __oauth_userdata_url="https://api.example.org:443/me",
    ),
    dict(  # an IP address and localhost
        __oauth_authorize_url="https://192.0.2.10:4443/authorize",
        __oauth_token_url="https://192.0.2.10:4443/token",
        __oauth_userdata_url="https://localhost:10443/userinfo",
    ),
]
OAUTH_CASES = [
    dict(MATRIX[0], authenticator="generic-oauth", **provider) for provider in OAUTH_PROVIDERS
]  # fmt: skip


def oauth_ports(case):
    """The ports, other than 443, that the hub must reach the OAuth provider on."""
    if case["authenticator"] != "generic-oauth":
        return set()
    from conftest import TEMPLATE

    urls = [case.get(name, TEMPLATE[name]) for name in ("__oauth_token_url", "__oauth_userdata_url")]
    return {urlparse(url).port for url in urls if "{{" not in url and urlparse(url).port} - {443}


# --- The evaluator -------------------------------------------------------------------


def peer_matches(peer, address, labels):
    """Whether a NetworkPolicy peer matches an address (labels: the destination pod's, or None)."""
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(
            address in ipaddress.ip_network(e) for e in block.get("except") or [] if ipaddress.ip_network(e).version == address.version
        )
    if labels is None:  # an address outside the cluster is no pod
        return False
    return set(peer) == {"podSelector"} and selects(peer["podSelector"], labels)


def port_matches(rule_port, port, protocol, pod_ports=None):
    """pod_ports: {name: number} of the destination pod's containers; a named port only
    matches a pod that declares it (an address outside the cluster has no port names)."""
    number = rule_port.get("port")
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    if number is None:
        return True
    if isinstance(number, str):
        return pod_ports is not None and pod_ports.get(number) == port
    return number <= port <= rule_port.get("endPort", number)


def pod_port_names(pod):
    return {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or [] if "name" in p}


def egress_allows(policy, address, port, protocol="TCP", labels=None, pod_ports=None):
    address = ipaddress.ip_address(address)
    for rule in policy["spec"].get("egress") or []:
        ports_ok = not rule.get("ports") or any(port_matches(p, port, protocol, pod_ports) for p in rule["ports"])
        peers_ok = not rule.get("to") or any(peer_matches(p, address, labels) for p in rule["to"])
        if ports_ok and peers_ok:
            return True
    return False


def named_ports(policy):
    return {p["port"] for rule in policy["spec"].get("egress") or [] for p in rule.get("ports") or [] if isinstance(p.get("port"), int)}


def open_ports(policy, address, protocol="TCP"):
    """The ports of PROBE_PORTS and of the policy's own rules that reach address."""
    candidates = set(PROBE_PORTS) | named_ports(policy) | {1, 65535}
    return {port for port in candidates if egress_allows(policy, address, port, protocol)}


def policy_for(docs, labels):
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and selects(d["spec"]["podSelector"], labels)]
    assert len(policies) == 1, f"expected one NetworkPolicy for {labels}, found {len(policies)}"
    return policies[0]


# --- The checks: lists of problems --------------------------------------------------------


def check_hub_egress(docs, expected_oauth_ports):
    problems = []
    policy = policy_for(docs, hub_pod(docs)["metadata"]["labels"])
    if "Egress" not in policy["spec"].get("policyTypes", []):
        return ["the hub's policy does not restrict egress"]
    expected = API_SERVER_PORTS | expected_oauth_ports
    for address in PUBLIC:
        tcp = open_ports(policy, address, "TCP") - {53}
        udp = open_ports(policy, address, "UDP") - {53}
        if tcp != expected:
            problems.append(
                f"the hub reaches {address} on TCP {sorted(tcp)}, expected {sorted(expected)}"
                f" (API server {sorted(API_SERVER_PORTS)}, OAuth provider {sorted(expected_oauth_ports)})"
            )
        if udp:
            problems.append(f"the hub reaches {address} on UDP {sorted(udp)}")
        for protocol in ("UDP", "TCP"):
            if not egress_allows(policy, address, 53, protocol):
                problems.append(f"the hub cannot resolve names over {protocol} (53 to {address})")
    return problems


def check_singleuser_egress(docs, user_labels):
    problems = []
    policy = policy_for(docs, user_labels)
    if "Egress" not in policy["spec"].get("policyTypes", []):
        return ["the user pods' policy does not restrict egress"]
    for address in PUBLIC:
        for port in (80, 443, 22):
            if not egress_allows(policy, address, port):
                problems.append(f"user pods cannot reach {address} on TCP {port}")
    for address in PRIVATE:
        reached = open_ports(policy, address, "TCP") - {53}
        if reached:
            problems.append(f"user pods reach the private address {address} on TCP {sorted(reached)}")
        if open_ports(policy, address, "UDP") - {53}:
            problems.append(f"user pods reach the private address {address} over UDP")
    hub_labels = hub_pod(docs)["metadata"]["labels"]
    if not egress_allows(policy, "10.0.0.1", 8081, labels=hub_labels, pod_ports=pod_port_names(hub_pod(docs))):
        problems.append("user pods cannot reach the hub API (8081)")
    return problems


# --- The tests ----------------------------------------------------------------------


@pytest.fixture
def rendered(bakery):  # noqa: F811
    def _rendered(case, overlay):
        project = bakery.project(case)
        return bakery.render(project, overlay), bakery.hub_config(project, overlay)

    return _rendered


# The evaluations, once per distinct render and question: many combinations share a render
# (the bakery hands out one list per render), and each evaluation probes hundreds of ports.
_EVALUATED = {}


def once_per_render(check, docs, *args):
    key = (check.__name__, id(docs), json.dumps(args, sort_keys=True, default=sorted))
    if key not in _EVALUATED:
        _EVALUATED[key] = (docs, check(docs, *args))  # docs kept: its id stays unique
    return _EVALUATED[key][1]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("case", CASES + OAUTH_CASES, ids=combo_id)
def test_hub_reaches_api_server_and_oauth_ports_only(rendered, case, overlay):
    docs, _ = rendered(case, overlay)
    problems = once_per_render(check_hub_egress, docs, oauth_ports(case))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("case", CASES, ids=combo_id)
def test_user_pods_reach_the_internet_over_ipv4_and_ipv6_but_no_private_address(rendered, case, overlay):
    docs, hub_config = rendered(case, overlay)
    problems = once_per_render(check_singleuser_egress, docs, user_pod_labels(hub_config))
    assert not problems, "\n".join(problems)


def test_oauth_ports_come_from_the_token_and_userinfo_urls():
    assert oauth_ports(OAUTH_CASES[0]) == {8444, 9443}
    assert oauth_ports(OAUTH_CASES[1]) == {8443}
    assert oauth_ports(OAUTH_CASES[2]) == {4443, 10443}
    assert oauth_ports(dict(OAUTH_CASES[0], authenticator="github")) == set()


def test_checks_catch_policies_that_open_too_much_or_too_little(rendered):
    """Negative controls: each broken policy is caught by the checks above."""
    case = OAUTH_CASES[0]
    docs, hub_config = rendered(case, "production")  # the base's names: hub, singleuser
    users = user_pod_labels(hub_config)
    assert check_hub_egress(docs, oauth_ports(case)) == []
    assert check_singleuser_egress(docs, users) == []

    def broken(change):
        mutated = copy.deepcopy(docs)
        change(one(mutated, "NetworkPolicy", "hub"), one(mutated, "NetworkPolicy", "singleuser"))
        return mutated

    def api_rule(hub):
        return next(r for r in hub["spec"]["egress"] if {"port": 443, "protocol": "TCP"} in (r.get("ports") or []))

    def ipv6_block(users):
        return next(p["ipBlock"] for r in users["spec"]["egress"] for p in r.get("to") or [] if p.get("ipBlock", {}).get("cidr") == "::/0")

    hub_breaks = {
        "minikube's 8443 missing": lambda hub, _: api_rule(hub)["ports"].remove({"port": 8443, "protocol": "TCP"}),
        "MicroK8s' 16443 missing": lambda hub, _: api_rule(hub)["ports"].remove({"port": 16443, "protocol": "TCP"}),
        "port 80 opened": lambda hub, _: api_rule(hub)["ports"].append({"port": 80, "protocol": "TCP"}),
        "the OAuth rule gone": lambda hub, _: hub["spec"]["egress"].remove(
            next(r for r in hub["spec"]["egress"] if {"port": 8444, "protocol": "TCP"} in (r.get("ports") or []))
        ),
        "all ports": lambda hub, _: api_rule(hub).pop("ports"),
        "UDP 443": lambda hub, _: api_rule(hub)["ports"].append({"port": 443, "protocol": "UDP"}),
        "a port range": lambda hub, _: api_rule(hub)["ports"].append({"port": 8000, "endPort": 9000, "protocol": "TCP"}),
        "no DNS": lambda hub, _: hub["spec"]["egress"].pop(0),
    }
    for what, change in hub_breaks.items():
        assert check_hub_egress(broken(change), oauth_ports(case)), f"not caught: {what}"
    # The authorize URL's port (7443) is the browser's business, not the hub's.
    assert check_hub_egress(docs, oauth_ports(case) | {7443})

    user_breaks = {
        "no IPv6": lambda _, users: next(r for r in users["spec"]["egress"] if r.get("to") and "ipBlock" in r["to"][0])[
            "to"
        ].pop(1),
        "ULA open (fd00:ec2::254)": lambda _, users: ipv6_block(users)["except"].remove("fc00::/7"),
        "link-local open": lambda _, users: ipv6_block(users)["except"].remove("fe80::/10"),
        "metadata service open": lambda _, users: next(
            p["ipBlock"] for r in users["spec"]["egress"] for p in r.get("to") or [] if p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
        )["except"].remove("169.254.0.0/16"),
        "everything open": lambda _, users: users["spec"]["egress"].append({}),
    }
    for what, change in user_breaks.items():
        assert check_singleuser_egress(broken(change), users), f"not caught: {what}"


# --- The needed-paths table (tests/needed_paths.yaml), in both directions --------------------


def answers(case):
    """What the table's `when` and endpoints read of a combination."""
    from test_security import context_of

    keys = ("authenticator", "idle_culling", "ingress_controller_namespace", "__oauth_token_url", "__oauth_userdata_url", "proxy", "pre_puller")
    return {k: v for k, v in context_of(case).items() if k in keys}


def table_check(docs, hub_config, case):
    from conftest import TEMPLATE

    return paths.evaluate(docs, hub_config, case, user_pod_labels(hub_config), user_port(hub_config), TEMPLATE)


def planted_removal_check(docs, hub_config, case):
    """For each needed row: the rules that carry it, taken out, leave it closed; and no rule of
    the render carries no needed row (a rule nobody needs is a hole)."""
    from conftest import TEMPLATE

    table = paths.table()
    found = paths.endpoints(docs, hub_config, case, user_pod_labels(hub_config), user_port(hub_config), TEMPLATE)
    problems, carried = [], set()
    for row in (r for r in table["needed"] if paths.applies(r, case, TEMPLATE)):
        if row["to"] == "hub-loopback":
            planted = copy.deepcopy(hub_config)
            [culler] = [s for s in planted.JupyterHub.services if s["name"] == "idle-culler"]
            culler["command"] = [a for a in culler["command"] if not a.startswith("--url=")]
            planted.JupyterHub.hub_connect_url = "http://hub.namespace.svc:8081"
            if paths.loopback_row_open(planted, docs, found):
                problems.append(f"{row['name']}: still open with the culler calling the hub through the Service")
            continue
        rules = paths.rules_carrying(row, docs, found, hub_config)
        if not rules:
            problems.append(f"{row['name']}: no NetworkPolicy rule carries it (is the pod fenced at all?)")
            continue
        carried |= rules
        if not paths.row_problems(row, paths.without_rules(docs, rules), found, hub_config, want_open=True):
            problems.append(f"{row['name']}: still open without the rules {sorted(rules)}")
    every = {
        (p["metadata"]["name"], direction, index)
        for p in docs if p["kind"] == "NetworkPolicy"
        for direction, key in (("Egress", "egress"), ("Ingress", "ingress"))
        for index, _ in enumerate(p["spec"].get(key) or [])
    }  # fmt: skip
    for name, direction, index in sorted(every - carried):
        problems.append(f"NetworkPolicy/{name} {direction.lower()} rule {index} carries no needed path of the table")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("case", CASES + OAUTH_CASES, ids=combo_id)
def test_every_needed_path_is_open_and_the_others_closed(rendered, case, overlay):
    docs, hub_config = rendered(case, overlay)
    problems = once_per_render(table_check, docs, hub_config, answers(case))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("case", CASES + OAUTH_CASES, ids=combo_id)
def test_each_needed_path_closes_when_its_rules_are_removed(rendered, case, overlay):
    docs, hub_config = rendered(case, overlay)
    problems = once_per_render(planted_removal_check, docs, hub_config, answers(case))
    assert not problems, "\n".join(problems)


def test_the_table_catches_the_faults_a_cluster_would_show(rendered):
    """The planted faults of the review that found these holes: each is reported."""
    case = dict(CASES[0], ingress_controller_namespace="ingress-nginx")
    docs, hub_config = rendered(case, "production")  # the base's names: hub, singleuser
    assert table_check(docs, hub_config, answers(case)) == []

    def broken(change):
        mutated = copy.deepcopy(docs)
        change(one(mutated, "NetworkPolicy", "hub"), one(mutated, "NetworkPolicy", "singleuser"))
        return table_check(mutated, hub_config, answers(case))

    def rule(policy, key, port):
        return next(r for r in policy["spec"][key] if any(p.get("port") == port for p in r.get("ports") or []))

    faults = {
        "the proxy may not reach user servers": lambda hub, _: hub["spec"]["egress"].remove(rule(hub, "egress", "notebook-port")),
        "user servers do not let the proxy in": lambda _, users: users["spec"]["ingress"].clear(),
        "the Ingress may not reach the proxy": lambda hub, _: hub["spec"]["ingress"].remove(rule(hub, "ingress", "http")),
        "the hub API over UDP": lambda hub, _: rule(hub, "ingress", "hub")["ports"][0].update(protocol="UDP"),
        "the proxy port over UDP": lambda hub, _: rule(hub, "ingress", "http")["ports"][0].update(protocol="UDP"),
        "user servers may not reach the hub": lambda _, users: users["spec"]["egress"].remove(rule(users, "egress", "hub")),
        "the hub API from everyone": lambda hub, _: rule(hub, "ingress", "hub").pop("from"),
        "a range that misses 6443": lambda hub, _: hub["spec"]["egress"][1].update(ports=[{"port": 443, "endPort": 6000, "protocol": "TCP"}]),
        "no DNS over TCP": lambda hub, _: hub["spec"]["egress"][0]["ports"].remove({"port": 53, "protocol": "TCP"}),
        "the Ingress from any namespace": lambda hub, _: rule(hub, "ingress", "http")["from"][0].update(namespaceSelector={}),
    }
    for what, change in faults.items():
        assert broken(change), f"not caught: {what}"
    # endPort is honoured: a range that covers the API server's ports opens them.
    covered = copy.deepcopy(docs)
    one(covered, "NetworkPolicy", "hub")["spec"]["egress"][1]["ports"] = [{"port": 443, "endPort": 16443, "protocol": "TCP"}]
    assert not [p for p in table_check(covered, hub_config, answers(case)) if "API server" in p]


def test_the_table_lists_every_path_the_issue_names():
    names = {row["name"] for row in paths.table()["needed"]}
    for wanted in ("ingress controller to the proxy's public port", "proxy to the user servers", "user servers to the hub API",
                   "hub to the API server", "hub to DNS", "hub to the identity provider", "idle culler to the hub API"):
        assert wanted in names, wanted


def test_the_table_catches_a_pre_puller_that_talks(rendered):
    """pre_puller=yes: its pods talk to nothing; each way of opening them, or of losing them, is reported."""
    case = dict(CASES[0], pre_puller="yes")
    docs, hub_config = rendered(case, "production")
    assert table_check(docs, hub_config, answers(case)) == []

    def policy(d):
        return one(d, "NetworkPolicy", "pre-puller")["spec"]

    faults = {
        "no policy": lambda d: d.remove(one(d, "NetworkPolicy", "pre-puller")),
        "egress anywhere": lambda d: policy(d).update(egress=[{}]),
        "DNS": lambda d: policy(d).update(egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}]),
        "ingress from anyone": lambda d: policy(d).update(ingress=[{}]),
        "egress not restricted": lambda d: policy(d).update(policyTypes=["Ingress"]),
        "a selector that misses its pod": lambda d: policy(d)["podSelector"]["matchLabels"].update(
            {"app.kubernetes.io/component": "image-puller"}),
        "no pre-puller at all": lambda d: d.remove(one(d, "DaemonSet")),
    }  # fmt: skip
    for what, change in faults.items():
        mutated = copy.deepcopy(docs)
        change(mutated)
        assert table_check(mutated, hub_config, answers(case)), f"not caught: {what}"
