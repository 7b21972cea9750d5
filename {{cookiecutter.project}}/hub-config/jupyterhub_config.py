"""JupyterHub configuration: the hub and its proxy; users get pods from KubeSpawner.

proxy=in-hub, inside the hub container:

    Ingress --> :PROXY_PUBLIC_PORT configurable-http-proxy (started by the hub, a child process)
                  |  /hub/...    --> 127.0.0.1:HUB_PORT  the hub (loopback: no hairpin through the Service)
                  |  /user/...   --> the user's pod
                  API on 127.0.0.1:PROXY_API_PORT (only the hub talks to it)
    user pods --> hub.<namespace>.svc:HUB_PORT  the hub API, through the Service

proxy=separate: the proxy is a Deployment of its own (k8s/components/separate-proxy), which
sends /hub/ to the hub's Service; the hub changes its routes through the proxy's Service.

How users log in is configured in authenticator_config.py, loaded at the end.
What both files share is in hub_helpers.py, which lies next to them.
"""

import os
import sys
from pathlib import Path

# The helpers next to this file (Zero to JupyterHub loads its z2jh.py the same way).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_helpers import install_staged_restore, load_profiles, require_env, resource_problem  # noqa: E402

# --- Chosen when this repository was generated ---------------------------------
ADMIN_USER = {{ cookiecutter.admin_user | tojson }}
{%- if cookiecutter.build_user_image == "yes" %}
# The users' image is built here (user-image/, skaffold.yaml): its overlay names it, and
# `skaffold run` adds the digest it built (k8s/components/user-image says how).
USER_IMAGE = require_env("USER_IMAGE", "the overlay names the image built from user-image/ (k8s/components/user-image)")
# Its tags (development, production) move with every build; a digest never does.
USER_IMAGE_TAG_MOVES = "@sha256:" not in USER_IMAGE
{%- else %}
USER_IMAGE = {{ cookiecutter.user_image | tojson }}
USER_IMAGE_TAG_MOVES = False  # a pinned tag (Renovate moves it, in a pull request)
{%- endif %}
USER_STORAGE = {{ "True" if cookiecutter.user_storage == "yes" else "False" }}
USER_STORAGE_SIZE = {{ cookiecutter.user_storage_size | tojson }}
STORAGE_CLASS = {{ cookiecutter.storage_class | tojson }}  # empty: the cluster's default
IMAGE_PULL_SECRET = {{ cookiecutter.__image_pull_secret | tojson }}  # empty: public images
IDLE_CULLING = {{ "True" if cookiecutter.idle_culling == "yes" else "False" }}
IDLE_TIMEOUT_SECONDS = {{ cookiecutter.idle_timeout | int }}
# Users choose an environment from profiles.yaml, next to this file (True), or all get the one below.
PROFILES = {{ "True" if cookiecutter.profiles == "profile_list" else "False" }}
# Users may run named servers besides their default one, at most this many each.
NAMED_SERVERS = {{ "True" if cookiecutter.named_servers == "yes" else "False" }}
NAMED_SERVER_LIMIT = {{ cookiecutter.named_server_limit | int }}
# Whether the hub starts the proxy in its own container ("in-hub") or a Deployment of its
# own runs it ("separate", k8s/components/separate-proxy).
PROXY = {{ cookiecutter.proxy | tojson }}

# The ports: the hub API's, the proxy's public one (both declared in
# k8s/base/hub-deployment.yaml, which names them hub and http), and the proxy's API,
# which stays inside the pod.
HUB_PORT = 8081
PROXY_PUBLIC_PORT = 8000
PROXY_API_PORT = 8001

# Where the hub keeps its state: the PersistentVolumeClaim mounted at /srv/jupyterhub.
STATE_DIR = Path(os.environ.get("JUPYTERHUB_STATE_DIR", "/srv/jupyterhub"))
# A backup that `scripts/hub-db restore` staged there replaces the database and the cookie
# secret now, before JupyterHub opens them (nothing happens when none is staged).
install_staged_restore(STATE_DIR)

# The pod's own namespace, from the downward API (POD_NAMESPACE in hub-deployment.yaml).
NAMESPACE = require_env(
    "POD_NAMESPACE", "the Deployment sets it from the downward API (fieldRef metadata.namespace)"
)

# Which hub this is: each overlay is a hub of its own, and says so in its Deployment.
INSTANCE = require_env("HUB_INSTANCE", "each overlay names its hub (k8s/overlays/*/hub-deployment-patch.yaml)")
# The Service in front of this pod, by the name its overlay gives it (hub, hub-dev, ...).
HUB_SERVICE_NAME = require_env(
    "HUB_SERVICE_NAME", "each overlay's kustomization copies its Service's name into the Deployment"
)
# What the names of this hub's user pods and claims start with, so that two hubs in one
# namespace never share one: empty for production, which keeps KubeSpawner's own names
# (jupyter-<user>, claim-<user>, as projects generated before the overlays became separate
# hubs used), "dev-" for development. A name starting with "dev-" can equal neither.
USER_OBJECT_PREFIX = os.environ.get("HUB_USER_OBJECT_PREFIX")
if USER_OBJECT_PREFIX is None:
    sys.exit("HUB_USER_OBJECT_PREFIX is not set: each overlay sets it in its Deployment (it may be empty)")

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)
# INFO unless the Deployment says otherwise (the development overlay asks for DEBUG).
c.Application.log_level = os.environ.get("JUPYTERHUB_LOG_LEVEL", "INFO")

if PROXY == "in-hub":
    # --- The proxy, started and stopped by the hub --------------------------------
    # Where the proxy's pid file goes: set by the Deployment, next to the volume it is on.
    PROXY_PID_FILE = require_env(
        "JUPYTERHUB_PROXY_PID_FILE", "the Deployment sets it to a path in the pod's emptyDir"
    )
    c.JupyterHub.bind_url = f"http://:{PROXY_PUBLIC_PORT}"  # the public port, all interfaces
    c.ConfigurableHTTPProxy.should_start = True
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PROXY_API_PORT}"  # loopback only
    # The proxy's pid file, in the pod's emptyDir (hub-deployment.yaml says where).
    # The proxy is this container's child and dies with it, so a pid file found at
    # start is always stale (the emptyDir outlives container restarts) and JupyterHub
    # would signal whatever process has that pid now: remove it. Only this path is
    # touched: loading this file anywhere else leaves that machine's files alone.
    Path(PROXY_PID_FILE).unlink(missing_ok=True)
    c.ConfigurableHTTPProxy.pid_file = PROXY_PID_FILE
    # The proxy reaches the hub over loopback, in the same container.
    c.JupyterHub.hub_connect_url = f"http://127.0.0.1:{HUB_PORT}"
else:
    # --- The proxy, in a Deployment of its own ------------------------------------
    # The hub neither starts nor stops it: it keeps users connected while the hub restarts,
    # and the hub puts its routes back (and adds any it lost) when it starts.
    PROXY_SERVICE_NAME = require_env(
        "PROXY_SERVICE_NAME", "each overlay's kustomization copies the proxy Service's name into the Deployment"
    )
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = f"http://{PROXY_SERVICE_NAME}.{NAMESPACE}.svc:{PROXY_API_PORT}"
    # The proxy's token, which the proxy's Deployment takes from the same Secret.
    c.ConfigurableHTTPProxy.auth_token = require_env(
        "CONFIGPROXY_AUTH_TOKEN", "the hub's Secret holds it (README.md, Secrets); the proxy reads the same key"
    )
    # The proxy sends /hub/ to the hub's Service (it is in another pod).
    c.JupyterHub.hub_connect_url = f"http://{HUB_SERVICE_NAME}.{NAMESPACE}.svc:{HUB_PORT}"

# How often the hub asks the proxy for each route's last activity, and compares the proxy's
# routes with its own (Zero to JupyterHub's 60 s; JupyterHub's default is 300): the idle
# culler sees a user's activity at most this late, and a restarted separate proxy (new
# image, node drained) gets its routes back within this many seconds. At most a quarter of
# the idle timeout: were it as long as the timeout, the culler could take a user at work
# for an idle one (with a 60 s timeout, a server whose kernel answered every 100 ms was
# culled as "inactive for 00:01:01").
ACTIVITY_INTERVAL_SECONDS = min(60, max(10, IDLE_TIMEOUT_SECONDS // 4))
c.JupyterHub.last_activity_interval = ACTIVITY_INTERVAL_SECONDS

# --- The hub -------------------------------------------------------------------------
# Listen on all interfaces: user pods (and, with proxy=separate, the proxy) come in
# through the Service.
c.JupyterHub.hub_bind_url = f"http://:{HUB_PORT}"
c.JupyterHub.db_url = f"sqlite:///{STATE_DIR / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE_DIR / "jupyterhub_cookie_secret")
# A hub restart (new image, new config) leaves running user servers alone.
c.JupyterHub.cleanup_servers = False
c.Authenticator.admin_users = {ADMIN_USER}
# scripts/smoke-test's own user: for each run an admin creates it, with a token, starts its
# server, and deletes it (and its claim) at the end, so that the smoke test never touches a
# real user's server. Nobody logs in as it: not an account of that name at an OAuth provider
# (allow_existing_users would let it in while the user exists), nor anyone with dummy's
# shared password. The hook refuses it as the admin's name.
c.Authenticator.blocked_users = {"smoke-test"}

# --- User servers: one pod each, in this namespace ---------------------------------
if NAMED_SERVERS:
    # Besides the default server (/user/<name>/), servers of their own names
    # (/user/<name>/<server>/), each a pod (and with user storage a volume) of its own.
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = NAMED_SERVER_LIMIT
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.namespace = NAMESPACE
# User pods cannot use loopback: they reach the hub through its Service.
c.KubeSpawner.hub_connect_url = f"http://{HUB_SERVICE_NAME}.{NAMESPACE}.svc:{HUB_PORT}"
# This hub's users' pods: their names, and the label that the NetworkPolicies of this
# hub select them by (k8s/overlays/*/kustomization.yaml puts it on this hub's objects).
# {user_server} is KubeSpawner's safe slug of the user name, and for a named server
# <user>--<server> (hashed when long): every server is a pod of its own.
c.KubeSpawner.pod_name_template = USER_OBJECT_PREFIX + "jupyter-{user_server}"
c.KubeSpawner.extra_labels = {"app.kubernetes.io/instance": INSTANCE}
c.KubeSpawner.image = USER_IMAGE
# The server that talks to the hub, whatever the image's own command: k8s-singleuser-sample's
# is `jupyter lab`, which the hub would wait for in vain (Zero to JupyterHub's singleuser.cmd).
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
# A node's copy serves while the name cannot have moved; a moving tag (development's, after
# `skaffold build` then `kubectl apply -k`) is looked up in the registry at each start.
c.KubeSpawner.image_pull_policy = "Always" if USER_IMAGE_TAG_MOVES else "IfNotPresent"
if IMAGE_PULL_SECRET:
    # The users' image is in a private registry: the hub's pull Secret serves them too.
    c.KubeSpawner.image_pull_secrets = [IMAGE_PULL_SECRET]
c.KubeSpawner.start_timeout = 300  # a first pull of the user image can be slow
c.KubeSpawner.http_timeout = 120
# Each user's server: what the scheduler reserves on a node for it (guarantee) and what it
# may reach (limit; memory beyond it: the kernel kills the server's biggest process, so 2G
# would end a typical pandas session). A limit is at most OVERCOMMIT_RATIO (4) times its
# guarantee (hub_helpers.py), so that a node whose servers all reach their limits needs at
# most that many times what it has; the hub refuses to start otherwise. Profiles
# (profiles.yaml) override these, under the same rule.
USER_RESOURCES = {"cpu_guarantee": 0.5, "cpu_limit": 2, "mem_guarantee": "1G", "mem_limit": "4G"}
if resource_problem(USER_RESOURCES):
    sys.exit(f"jupyterhub_config.py: USER_RESOURCES: {resource_problem(USER_RESOURCES)}")
for name, value in USER_RESOURCES.items():
    setattr(c.KubeSpawner, name, value)
if PROFILES:
    # The environments users choose from: one readable file, checked here (one line naming the
    # profile and the rule, and no hub, when something is wrong with it).
    try:
        c.KubeSpawner.profile_list = load_profiles(str(Path(__file__).with_name("profiles.yaml")), USER_RESOURCES)
    except ValueError as error:
        sys.exit(str(error))
# Users' pods run as jovyan, never as root, and cannot gain privileges.
c.KubeSpawner.uid = 1000
c.KubeSpawner.gid = 100
c.KubeSpawner.fs_gid = 100
c.KubeSpawner.privileged = False
c.KubeSpawner.allow_privilege_escalation = False
c.KubeSpawner.container_security_context = {
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# User pods get no Kubernetes API token: they have no business with the API.
c.KubeSpawner.automount_service_account_token = False

if not USER_STORAGE:
    # No claims: deleting a user must not delete one either (KubeSpawner would try claim-<user>,
    # which the Role does not allow, and which may be another hub's in this namespace).
    c.KubeSpawner.delete_pvc = False
else:
    # One PersistentVolumeClaim per user, created by KubeSpawner, mounted as home.
    c.KubeSpawner.storage_pvc_ensure = True
    # Pinned (KubeSpawner 7's default, written out): were a KubeSpawner upgrade to change
    # its default, every user would get a new, empty volume and the old one would be orphaned.
    # A named server's claim is claim-<user>--<server> (below): a volume of its own, not the
    # user's default server's home.
    c.KubeSpawner.pvc_name_template = USER_OBJECT_PREFIX + "claim-{user_server}"
    if NAMED_SERVERS:
        # claim-<user>--<server> for a named server, and for a default one claim-<user> as
        # before (KubeSpawner drops the "--" of an empty server name; for a user name of more
        # than 46 characters {user_server} was hashed, but KubeSpawner 7 keeps the claim name
        # it used in the hub's database, remember_pvc_name, so no volume is detached).
        # Written with {servername} because KubeSpawner 7 deletes a named server's claim (when
        # the server or its user is deleted) only if the template names {servername}; with
        # {user_server} it takes the claim for the default server's, and leaves it behind.
        c.KubeSpawner.pvc_name_template = USER_OBJECT_PREFIX + "claim-{username}--{servername}"
    c.KubeSpawner.storage_capacity = USER_STORAGE_SIZE
    c.KubeSpawner.storage_access_modes = ["ReadWriteOnce"]
    c.KubeSpawner.storage_class = STORAGE_CLASS or None
    c.KubeSpawner.volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]
    c.KubeSpawner.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan"}]

if IDLE_CULLING:
    # How often the culler looks: Zero to JupyterHub's 10 minutes, or half the timeout when
    # that is shorter. So a server is stopped at most IDLE_TIMEOUT_SECONDS + CULL_EVERY_SECONDS
    # after its last activity (the README states it); the culler's own default, half the
    # timeout, let an idle server live half an hour more past an hour's timeout.
    CULL_EVERY_SECONDS = min(600, max(1, IDLE_TIMEOUT_SECONDS // 2))
    # The culler runs as a hub-managed service in this container, with only the
    # scopes it needs to find idle servers and stop them.
    c.JupyterHub.services = [
        {
            "name": "idle-culler",
            "command": [
                sys.executable,
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={IDLE_TIMEOUT_SECONDS}",
                f"--cull-every={CULL_EVERY_SECONDS}",
                # In this container: over loopback, not through the hub's Service.
                f"--url=http://127.0.0.1:{HUB_PORT}/hub/api",
            ],
        }
    ]
    c.JupyterHub.load_roles = [
        {
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }
    ]

load_subconfig(str(Path(__file__).with_name("authenticator_config.py")))  # noqa: F821
