"""A NetworkPolicy evaluator for one render (a list of objects from `kubectl kustomize`):
who may reach the hub and the user pods, on which ports, and where they may go.
Each check returns a list of problems, empty when all is well."""

import ipaddress

from support.labels import selects

KUBESPAWNER_PORT = 8888  # KubeSpawner.__init__ sets it when Spawner.port is left at 0
KUBESPAWNER_PORT_NAME = "notebook-port"  # the name make_pod gives it; NetworkPolicies use the name
PRIVATE_NETWORKS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment_of(docs, component):
    """The Deployment whose pods are labelled with this component (None if there is none)."""
    found = [
        d for d in docs
        if d["kind"] == "Deployment" and d["spec"]["template"]["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]  # fmt: skip
    assert len(found) <= 1, f"expected at most one {component} Deployment, found {len(found)}"
    return found[0] if found else None


def pod_of(docs, component):
    """The pod template of the Deployment whose pods are labelled with this component."""
    deployment = deployment_of(docs, component)
    return deployment["spec"]["template"] if deployment else None


def hub_deployment(docs):
    deployment = deployment_of(docs, "hub")
    assert deployment is not None, "no hub Deployment in the render"
    return deployment


def hub_pod(docs):
    pod = pod_of(docs, "hub")
    assert pod is not None, "no hub Deployment in the render"
    return pod


def proxy_pod(docs):
    """configurable-http-proxy's pod: its own Deployment's (proxy=separate) or the hub's."""
    return pod_of(docs, "proxy") or hub_pod(docs)


def separate_proxy(docs):
    return pod_of(docs, "proxy") is not None


def container_port(pod, port):
    """The number of a container port of the pod, by number or name; None if it has no such port."""
    for container in pod["spec"]["containers"]:
        for declared in container.get("ports") or []:
            if port in (declared.get("name"), declared["containerPort"]):
                return declared["containerPort"]
    return None


def public_port(docs):
    """The proxy container port the Ingress reaches: Ingress backend -> Service port -> targetPort."""
    pod = proxy_pod(docs)
    ports = set()
    for ingress in (d for d in docs if d["kind"] == "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = one(docs, "Service", backend["name"])
                wanted = backend["port"].get("name", backend["port"].get("number"))
                for port in service["spec"]["ports"]:
                    if wanted in (port.get("name"), port["port"]):
                        ports.add(container_port(pod, port.get("targetPort", port["port"])))
    assert len(ports) == 1, f"the Ingress should reach exactly one proxy port, reaches {ports}"
    return ports.pop()


def rule_ports(rule, pod=None):
    """(number or name resolved through the pod, protocol) of each port of a policy rule."""
    ports = []
    for port in rule.get("ports") or []:
        number = port.get("port")
        if pod is not None and isinstance(number, str):
            number = container_port(pod, number)
        ports.append((number, port.get("protocol", "TCP")))
    return ports


def only_pods(peers, labels, not_labels):
    """Every peer is a same-namespace podSelector that selects labels and not not_labels."""
    return bool(peers) and all(
        set(peer) == {"podSelector"} and selects(peer["podSelector"], labels) and not selects(peer["podSelector"], not_labels)
        for peer in peers
    )


def is_dns_rule(rule):
    return bool(rule.get("ports")) and {port for port, _ in rule_ports(rule)} == {53}


def dns_protocols(rules):
    return {protocol for rule in rules if is_dns_rule(rule) for _, protocol in rule_ports(rule)}


def user_pod_ports(port):
    """A user pod as far as named ports go: the one container port KubeSpawner declares."""
    return {"spec": {"containers": [{"ports": [{"name": KUBESPAWNER_PORT_NAME, "containerPort": port}]}]}}


def egress_problems(policy, where, allowed, what):
    """Every egress rule of the policy is DNS or one that an allowed(rule, peers) predicate
    accepts (what: the sentence naming them), and DNS is open over UDP and TCP."""
    problems = []
    egress = policy["spec"].get("egress") or []
    for index, rule in enumerate(egress):
        if not is_dns_rule(rule) and not any(ok(rule, rule.get("to") or []) for ok in allowed):
            problems.append(f"{where} egress rule {index}: allows {rule}, which is neither DNS, {what}")
    if dns_protocols(egress) != {"UDP", "TCP"}:
        problems.append(f"{where}: DNS egress on 53 allows {sorted(dns_protocols(egress))}, expected UDP and TCP")
    return problems


def check_hub_network_policy(docs, user_labels, ingress_namespace, hub_api_port, user_server_port=KUBESPAWNER_PORT):
    problems = []
    pod = hub_pod(docs)
    hub_labels = pod["metadata"]["labels"]
    # With proxy=separate the proxy pod is the hub's only client besides user pods.
    proxy_labels = proxy_pod(docs)["metadata"]["labels"] if separate_proxy(docs) else None
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and selects(d["spec"]["podSelector"], hub_labels)]
    if len(policies) != 1:
        return [f"expected one NetworkPolicy selecting the hub pod, found {len(policies)}"]
    policy = policies[0]
    where = f"NetworkPolicy/{policy['metadata']['name']}"
    if selects(policy["spec"]["podSelector"], user_labels):
        problems.append(f"{where}: selects user pods too")
    if set(policy["spec"].get("policyTypes") or []) != {"Ingress", "Egress"}:
        problems.append(f"{where}: policyTypes {policy['spec'].get('policyTypes')}, expected Ingress and Egress")
    proxy_port = None if proxy_labels else public_port(docs)
    for index, rule in enumerate(policy["spec"].get("ingress") or []):
        at = f"{where} ingress rule {index}"
        ports = {port for port, _ in rule_ports(rule, pod)}
        peers = rule.get("from") or []
        if not rule.get("ports"):
            problems.append(f"{at}: no ports (all ports)")
        elif None in ports:
            problems.append(f"{at}: names a port the hub container does not have")
        elif ports == {proxy_port}:
            wanted = {"kubernetes.io/metadata.name": ingress_namespace} if ingress_namespace else None
            for peer in peers or [{}]:
                selector = peer.get("namespaceSelector")
                if set(peer) != {"namespaceSelector"} or (
                    selector != ({"matchLabels": wanted} if wanted else {})
                ):
                    problems.append(
                        f"{at}: lets {peer or 'anyone'} reach the proxy port; expected the ingress controller's"
                        f" namespace ({ingress_namespace or 'any namespace, as none was given'})"
                    )
        elif ports == {hub_api_port}:
            if not (only_pods(peers, user_labels, hub_labels) or (proxy_labels and only_pods(peers, proxy_labels, hub_labels))):
                problems.append(f"{at}: lets {peers or 'anyone'} reach the hub API; expected user pods (and a separate proxy) only")
        else:
            needed = sorted(p for p in (proxy_port, hub_api_port) if p)
            problems.append(f"{at}: opens ports {sorted(ports, key=str)}, only {needed} are needed")
    def ports_of(rule, pod):
        return {port for port, _ in rule_ports(rule, pod)}

    egress = policy["spec"].get("egress") or []
    problems += egress_problems(policy, where, [
        # the API server (and OAuth providers), whose addresses differ between clusters
        lambda rule, _: bool(rule.get("ports")) and ports_of(rule, None) <= {443, 6443, 8443, 16443} and {p for _, p in rule_ports(rule)} == {"TCP"},
        # the proxy forwards to user servers; the hub waits for them to answer
        lambda rule, peers: ports_of(rule, user_pod_ports(user_server_port)) == {user_server_port} and only_pods(peers, user_labels, hub_labels),
        # a separate proxy's API
        lambda rule, peers: bool(proxy_labels) and ports_of(rule, proxy_pod(docs)) == {container_port(proxy_pod(docs), "api")}
        and only_pods(peers, proxy_labels, hub_labels),
    ], "the API server, user servers nor the proxy's API")  # fmt: skip
    if not any(443 in {p for p, _ in rule_ports(rule)} or 6443 in {p for p, _ in rule_ports(rule)} for rule in egress):
        problems.append(f"{where}: no egress to the API server (443/6443)")
    return problems


def check_singleuser_network_policy(docs, user_labels, user_server_port, hub_api_port):
    problems = []
    hub_labels = hub_pod(docs)["metadata"]["labels"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and selects(d["spec"]["podSelector"], user_labels)]
    if len(policies) != 1:
        return [f"expected one NetworkPolicy selecting user pods, found {len(policies)}"]
    policy = policies[0]
    where = f"NetworkPolicy/{policy['metadata']['name']}"
    if selects(policy["spec"]["podSelector"], hub_labels):
        problems.append(f"{where}: selects the hub pod too")
    if set(policy["spec"].get("policyTypes") or []) != {"Ingress", "Egress"}:
        problems.append(f"{where}: policyTypes {policy['spec'].get('policyTypes')}, expected Ingress and Egress")
    proxy_labels = proxy_pod(docs)["metadata"]["labels"]
    for index, rule in enumerate(policy["spec"].get("ingress") or []):
        at = f"{where} ingress rule {index}"
        peers = rule.get("from") or []
        if not peers or not all(only_pods([peer], hub_labels, user_labels) or only_pods([peer], proxy_labels, user_labels) for peer in peers):
            problems.append(f"{at}: lets {rule.get('from') or 'anyone'} in; expected the hub and proxy pods only")
        if rule_ports(rule, user_pod_ports(user_server_port)) != [(user_server_port, "TCP")]:
            problems.append(f"{at}: ports {rule_ports(rule)}, expected the user server's {user_server_port}/TCP")
    problems += egress_problems(policy, where, [
        lambda rule, peers: rule_ports(rule, hub_pod(docs)) == [(hub_api_port, "TCP")] and only_pods(peers, hub_labels, user_labels),
        lambda _, peers: bool(peers) and all(p.get("ipBlock") and internet_only(p["ipBlock"]) for p in peers),
    ], "the hub API nor the internet")  # fmt: skip
    return problems


def internet_only(block):
    """An ipBlock that leaves out the private networks and the cloud metadata address."""
    network = ipaddress.ip_network(block["cidr"])
    excepted = [ipaddress.ip_network(e) for e in block.get("except") or []]
    for private in map(ipaddress.ip_network, PRIVATE_NETWORKS):
        if private.version == network.version and private.overlaps(network):
            if not any(private.subnet_of(e) for e in excepted if e.version == private.version):
                return False
    return True


def check_proxy_network_policy(docs, ingress_namespace):
    """proxy=separate: the proxy pod lets in the ingress controller on its public port and the
    hub alone on its API, and goes out to DNS, the hub's port and user servers only."""
    if not separate_proxy(docs):
        return []
    problems = []
    pod, hub = proxy_pod(docs), hub_pod(docs)
    labels, hub_labels = pod["metadata"]["labels"], hub["metadata"]["labels"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and selects(d["spec"]["podSelector"], labels)]
    if len(policies) != 1:
        return [f"expected one NetworkPolicy selecting the proxy pod, found {len(policies)}"]
    [policy] = policies
    where = f"NetworkPolicy/{policy['metadata']['name']}"
    if selects(policy["spec"]["podSelector"], hub_labels):
        problems.append(f"{where}: selects the hub pod too")
    if set(policy["spec"].get("policyTypes") or []) != {"Ingress", "Egress"}:
        problems.append(f"{where}: policyTypes {policy['spec'].get('policyTypes')}, expected Ingress and Egress")
    public, api = public_port(docs), container_port(pod, "api")
    wanted = {"kubernetes.io/metadata.name": ingress_namespace} if ingress_namespace else None
    for index, rule in enumerate(policy["spec"].get("ingress") or []):
        at = f"{where} ingress rule {index}"
        ports = {port for port, _ in rule_ports(rule, pod)}
        peers = rule.get("from") or []
        if not rule.get("ports") or None in ports:
            problems.append(f"{at}: all ports, or a port the proxy container does not have")
        elif ports == {public}:
            if not peers or any(set(p) != {"namespaceSelector"} or p["namespaceSelector"] != ({"matchLabels": wanted} if wanted else {}) for p in peers):
                problems.append(f"{at}: lets {peers or 'anyone'} reach the public port; expected the ingress controller's namespace")
        elif ports == {api}:
            if not only_pods(peers, hub_labels, labels):
                problems.append(f"{at}: lets {peers or 'anyone'} reach the proxy's API; expected the hub pod only")
        else:
            problems.append(f"{at}: opens ports {sorted(ports, key=str)}, only {public} and {api} are needed")
    problems += egress_problems(policy, where, [
        lambda rule, peers: rule_ports(rule, hub) == [(container_port(hub, "hub"), "TCP")] and only_pods(peers, hub_labels, labels),
        lambda rule, peers: [p for p, _ in rule_ports(rule, user_pod_ports(KUBESPAWNER_PORT))] == [KUBESPAWNER_PORT] and bool(peers)
        and all(set(p) == {"podSelector"} and p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "singleuser-server" for p in peers),
    ], "the hub nor user servers")  # fmt: skip
    return problems


def check_policy_ports_exist(docs):
    """Ports the policies name for the hub pod (and a separate proxy's) are ports its container declares."""
    problems = []
    for pod in {id(p): p for p in (hub_pod(docs), proxy_pod(docs))}.values():
        problems += _policy_ports_exist(docs, pod)
    return problems


def _policy_ports_exist(docs, pod):
    problems = []
    hub_labels = pod["metadata"]["labels"]
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        where = f"NetworkPolicy/{policy['metadata']['name']}"
        rules = []
        if selects(policy["spec"]["podSelector"], hub_labels):
            rules += policy["spec"].get("ingress") or []  # ports of the hub pod itself
        for rule in policy["spec"].get("egress") or []:
            if (rule.get("to") or []) and all(selects(p.get("podSelector"), hub_labels) for p in rule["to"]):
                rules.append(rule)  # ports of the hub pod as a destination
        for rule in rules:
            for port in rule.get("ports") or []:
                if container_port(pod, port["port"]) is None:
                    problems.append(f"{where}: port {port['port']!r} is no port of the {hub_labels.get('app.kubernetes.io/component')} container")
    return problems
