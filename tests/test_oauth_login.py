"""Who may log in with github and generic-oauth: the generated configuration in a real hub,
against a real OAuth provider.

Each hub is the baked project's development overlay on the emulated cluster, as in
tests/test_hub.py (real JupyterHub 5.5, OAuthenticator 17.4 and configurable-http-proxy in
the hub's pod). The provider is tests/support/fake_oauth_provider.py: an HTTPS server on the
cluster's node address, port 443 (the port the hub's NetworkPolicy lets it reach), with
its own CA. A requests session plays the browser, signed in at the provider as one user:
it opens /hub/oauth_login, follows the hub to the provider's authorization endpoint and
the provider back to the hub's callback; the hub exchanges the code at the token endpoint
(client secret, PKCE), reads the user at the user-info endpoint (and, for github, asks
the membership endpoint), and lets the user in or answers 403. Nothing inside JupyterHub
or OAuthenticator is replaced.

Pointing the hub at the provider, without changing the product:
- generic-oauth: its URLs are answers to the template (`__oauth_authorize_url`,
  `__oauth_token_url`, `__oauth_userdata_url`); the project is baked with the provider's.
- github: the generated config leaves GitHubOAuthenticator's `github_url` at its default,
  which the authenticator takes from `GITHUB_URL` (the documented way to use GitHub
  Enterprise Server); the test's Secret gives it, as an operator's hub-secrets.env would.
  Every rule about who may log in is the generated config's, unchanged.
- The hub verifies the provider's certificate (OAuthenticator's default): the stand-in
  image's system trust store holds the provider's CA as well, as an image built for a
  provider with a private CA would. The browser trusts the same CA.

Proven, for each authenticator: the admin gets in as an admin; a user the admin added at
/hub/admin gets in (and was refused before being added); a user the provider knows and the
hub does not is refused, after the hub has read who they are. github: with
GITHUB_ALLOWED_ORGANIZATIONS, members of those organizations get in and members of others
do not; without it, no membership lets anyone in. generic-oauth: OAUTH_ALLOW_ALL=true lets
everyone in; `false`, an empty value and a value that is not `true` do not (and the
documented value is the only one of many that the config reads as true). As README-login
says, who got in once (by a membership, or while OAUTH_ALLOW_ALL was true) stays a user
after leaving the organization or after OAUTH_ALLOW_ALL=false, until the admin deletes them. Faults planted in
the generated authenticator_config.py (every account allowed, OAUTH_ALLOW_ALL read loosely,
the admin's additions ignored) change who gets in, and the same checks see it. And the
provider refuses what a real one refuses (a wrong secret, a replayed code, a PKCE verifier
that does not match), so that the hub's side of the flow is checked too.
"""

import contextlib
import os
import re
import shutil
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from conftest import need_tool
from hubrunner import (
    CHP_BIN,
    HubDeployment,
    free_port,
    hub_container,
    hub_standin_image,
    install_config,
    load_config,
    local_environment,
    pod_environment,
    render,
    with_secrets,
)
from journey import api
from support.fake_oauth_provider import FakeOAuthProvider, pkce_challenge

ADMIN = "hubadmin"  # not the template's default, so that the test sees it is used
ADDED = "alice"  # the admin adds her at /hub/admin
STRANGER = "mallory"  # the provider knows her; the hub does not
CLIENT = {"OAUTH_CLIENT_ID": "test-client-id", "OAUTH_CLIENT_SECRET": "test-client-secret"}
HOSTNAME = "hub.example.org"  # the development overlay's: dev-hub.example.org

# Users of the provider (login -> GitHub organizations).
PROVIDER_USERS = {
    ADMIN: (),
    ADDED: (),
    STRANGER: ("elsewhere",),
    "ourmember": ("our-org",),
    "partnermember": ("partner-org", "elsewhere"),
}


def need_hub_tools():
    """What booting a hub on the emulated cluster needs (tests/test_hub.py, `chp`)."""
    need_tool("node")
    need_tool("tini")
    if not (CHP_BIN / "configurable-http-proxy").exists():
        pytest.skip(f"{CHP_BIN / 'configurable-http-proxy'} is missing: run scripts/install-test-tools")
    if os.geteuid() != 0:
        pytest.skip("the emulated cluster needs root (namespaces, mounts, a bridge)")


def bake_for(bake, authenticator, provider_url):
    if authenticator == "github":
        return bake(authenticator="github", admin_user=ADMIN, hostname=HOSTNAME, idle_culling="no", user_storage="no")
    return bake(
        authenticator="generic-oauth",
        admin_user=ADMIN,
        hostname=HOSTNAME,
        idle_culling="no",
        user_storage="no",
        __oauth_authorize_url=f"{provider_url}/oauth2/authorize",
        __oauth_token_url=f"{provider_url}/oauth2/token",
        __oauth_userdata_url=f"{provider_url}/oauth2/userinfo",
    )


def trusting(image, ca_file, workdir):
    """The stand-in image with ca_file added to the system's trust store (the file OpenSSL
    reads by default, which libcurl on Debian reads too)."""
    store = Path(ssl.get_default_verify_paths().openssl_cafile).resolve()
    bundle = Path(workdir) / "ca-certificates.crt"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_text((store.read_text() if store.is_file() else "") + Path(ca_file).read_text())
    image.files[str(store)] = (bundle, 0o644, 0, 0)
    return image


def planted_copy(project, workdir, change):
    """A copy of the project whose hub-config/authenticator_config.py is change(text)."""
    copy = Path(workdir) / "planted-project"
    shutil.copytree(project, copy)
    config = copy / "hub-config" / "authenticator_config.py"
    text = config.read_text(encoding="utf-8")
    changed = change(text)
    assert changed != text, "the planted change does not apply to the generated authenticator_config.py"
    config.write_text(changed, encoding="utf-8")
    return copy


@contextlib.contextmanager
def oauth_hub(bake, workdir, authenticator, secrets, plant=None):
    """(hub, provider): the provider on the cluster's node address, the project baked (for
    generic-oauth) with its URLs, and its hub running with the Secret CLIENT + secrets (for
    github, GITHUB_URL the provider's). plant: a change to authenticator_config.py."""
    from emulated_cluster import Cluster

    need_hub_tools()
    workdir = Path(workdir)
    with contextlib.ExitStack() as stack:
        cluster = Cluster(workdir / "cluster")
        stack.callback(cluster.stop)
        cluster.start()
        node = cluster.network.node_ip
        project = bake_for(bake, authenticator, f"https://{node}")
        if plant is not None:
            project = planted_copy(project, workdir, plant)
        objects = render(project)
        callback = pod_environment(objects, secrets={})["JUPYTERHUB_PUBLIC_URL"] + "/hub/oauth_callback"
        provider = stack.enter_context(
            FakeOAuthProvider(node, workdir / "provider", CLIENT["OAUTH_CLIENT_ID"], CLIENT["OAUTH_CLIENT_SECRET"], [callback])
        )
        for login, orgs in PROVIDER_USERS.items():
            provider.add_user(login, orgs)
        given = dict(CLIENT, **secrets)
        if authenticator == "github":
            # GitHubOAuthenticator's own setting for a GitHub other than github.com (its
            # github_url default reads it): it moves the endpoints, and nothing else. The
            # generated config never sets github_url, so the rules under test (admin,
            # allow_existing_users, allowed_organizations) are the ones a deployment runs.
            given["GITHUB_URL"] = provider.url
        # The hub checks the provider's certificate as it would GitHub's: against the
        # image's trust store, which holds the provider's CA too (verification stays on).
        image = trusting(hub_standin_image(project, hub_container(objects)["image"], workdir / "hub"), provider.ca_file, workdir / "image")
        hub = stack.enter_context(HubDeployment(project, workdir / "hub", image=image, secrets=given, objects=objects, cluster=cluster))
        try:
            yield hub, provider
        except AssertionError as error:
            raise AssertionError(f"{error}\n{hub.log_tail(60)}") from None


# --- The browser ----------------------------------------------------------------------


def public_url(hub):
    """The address users open, as the overlay's Deployment gives it to the hub."""
    return pod_environment(hub.objects, secrets={})["JUPYTERHUB_PUBLIC_URL"]


def hub_user(session, hub):
    """The hub's model of the session's user, or None when the session is not logged in."""
    resp = session.get(f"{hub.url}/hub/api/user", timeout=10, allow_redirects=False)
    if resp.status_code == 200:
        return resp.json()
    assert resp.status_code in (401, 403), f"/hub/api/user: {resp.status_code} {resp.text[:200]}"
    return None


def oauth_login(hub, provider, login):
    """A browser signed in at the provider as login clicks the hub's sign-in button; the hub
    decides. ("admin" | "user" | "refused", the browser's session)."""
    session = requests.Session()
    # Per request: a session's own `verify` loses to REQUESTS_CA_BUNDLE where that is set.
    trust = str(provider.ca_file)
    resp = session.post(f"{provider.url}/session", data={"login": login}, timeout=10, verify=trust)
    assert resp.status_code == 204, f"signing in at the provider as {login}: {resp.status_code}"

    resp = session.get(f"{hub.url}/hub/oauth_login", timeout=10, allow_redirects=False)
    assert resp.status_code == 302, f"/hub/oauth_login: {resp.status_code}"
    authorize = resp.headers["Location"]
    assert authorize.startswith(provider.url + "/"), f"the hub sent the browser to {authorize}, not to the provider"

    resp = session.get(authorize, timeout=10, allow_redirects=False, verify=trust)
    assert resp.status_code == 302, f"the provider's authorization endpoint: {resp.status_code} {resp.text[:300]}"
    callback = urlsplit(resp.headers["Location"])
    public = urlsplit(public_url(hub))
    assert (callback.scheme, callback.netloc, callback.path) == (public.scheme, public.netloc, "/hub/oauth_callback"), callback
    # The browser finds the hub's public host at the Ingress: here, its relay.
    before = {kind: len(provider.asked(kind, login)) for kind in ("token", "userinfo")}
    resp = session.get(f"{hub.url}{callback.path}?{callback.query}", timeout=30, allow_redirects=False)
    exchanged, read = ([r["status"] for r in provider.asked(kind, login)[before[kind]:]] for kind in ("token", "userinfo"))
    # Either way, the hub exchanged this code and read who the user is: a refusal is the
    # hub's decision about this user, not a failed exchange.
    assert exchanged == [200] and read == [200], (
        f"{login}: callback {resp.status_code}; token endpoint {exchanged}, user info {read}\n{resp.text[-500:]}"
    )
    model = hub_user(session, hub)
    if resp.status_code == 403:
        assert model is None, f"{login} was refused, yet the session is logged in: {model}"
        return "refused", session
    assert resp.status_code == 302, f"/hub/oauth_callback as {login}: {resp.status_code} {resp.text[-500:]}"
    assert model and model["name"] == login, f"{login} came back from the callback as {model}"
    return ("admin" if model["admin"] else "user"), session


def admin_adds(hub, admin, name):
    """The admin adds a user, as the admin page does (POST /hub/api/users)."""
    page = admin.get(f"{hub.url}/hub/admin", timeout=10)  # the page; it sets the _xsrf cookie
    assert page.status_code == 200, f"/hub/admin as the admin: {page.status_code}"
    resp = api(admin, hub, "POST", "/users", json={"usernames": [name]})
    assert resp.status_code == 201, f"adding {name}: {resp.status_code} {resp.text[:300]}"


def admin_deletes(hub, admin, name):
    """The admin deletes a user, as the admin page does (DELETE /hub/api/users/<name>)."""
    page = admin.get(f"{hub.url}/hub/admin", timeout=10)
    assert page.status_code == 200, f"/hub/admin as the admin: {page.status_code}"
    resp = api(admin, hub, "DELETE", f"/users/{name}")
    assert resp.status_code == 204, f"deleting {name}: {resp.status_code} {resp.text[:300]}"


def who_gets_in(hub, provider, others=()):
    """Logins in this order: a stranger, ADDED before anyone added her, the admin (who then
    adds ADDED), ADDED, then others. {step: "admin" | "user" | "refused"}."""
    outcomes = {
        STRANGER: oauth_login(hub, provider, STRANGER)[0],
        f"{ADDED} before the admin adds her": oauth_login(hub, provider, ADDED)[0],
    }
    outcomes[ADMIN], admin = oauth_login(hub, provider, ADMIN)
    # A user who got in is a user of the hub already: there is nothing to add.
    if outcomes[ADMIN] == "admin" and outcomes[f"{ADDED} before the admin adds her"] == "refused":
        admin_adds(hub, admin, ADDED)
    outcomes[ADDED] = oauth_login(hub, provider, ADDED)[0]
    for login in others:
        outcomes[login] = oauth_login(hub, provider, login)[0]
    return outcomes


ONLY_THE_ADMINS_CHOICE = {STRANGER: "refused", f"{ADDED} before the admin adds her": "refused", ADMIN: "admin", ADDED: "user"}
EVERYONE = {STRANGER: "user", f"{ADDED} before the admin adds her": "user", ADMIN: "admin", ADDED: "user"}


# --- github ---------------------------------------------------------------------------


@pytest.mark.slow
def test_github_lets_in_the_admin_and_the_users_the_admin_adds(bake, tmp_path):
    """GITHUB_ALLOWED_ORGANIZATIONS empty (as post_gen_project leaves hub-secrets.env): the
    admin and the users the admin adds get in, nobody else; a membership counts for
    nothing, and the hub does not ask about any."""
    with oauth_hub(bake, tmp_path, "github", {"GITHUB_ALLOWED_ORGANIZATIONS": ""}) as (hub, provider):
        outcomes = who_gets_in(hub, provider, others=["ourmember"])
        assert outcomes == dict(ONLY_THE_ADMINS_CHOICE, ourmember="refused"), f"who got in: {outcomes}"
        assert provider.asked("membership") == [], provider.asked("membership")
        assert provider.asked("unknown") == [], f"the hub asked for endpoints GitHub does not have: {provider.asked('unknown')}"


@pytest.mark.slow
def test_github_lets_in_members_of_the_allowed_organizations(bake, tmp_path):
    """GITHUB_ALLOWED_ORGANIZATIONS="our-org, partner-org": members of either get in (the
    hub asked GitHub, with the user's own token, about exactly those organizations); a
    member of another organization does not; the admin and the users the admin adds still
    do. The hub asks for read:org, without which GitHub shows only public memberships."""
    secrets = {"GITHUB_ALLOWED_ORGANIZATIONS": "our-org, partner-org"}
    with oauth_hub(bake, tmp_path, "github", secrets) as (hub, provider):
        outcomes = who_gets_in(hub, provider, others=["ourmember", "partnermember"])
        assert outcomes == dict(ONLY_THE_ADMINS_CHOICE, ourmember="user", partnermember="user"), f"who got in: {outcomes}"
        asked = {(r["path"], r["user"], r["status"]) for r in provider.asked("membership")}
        # The stranger is asked about both (a member of neither), ourmember about our-org
        # at least; each question carried the token of the user it asks about.
        assert {
            (f"/api/v3/orgs/{org}/members/{STRANGER}", STRANGER, 404) for org in ("our-org", "partner-org")
        } <= asked, asked
        assert ("/api/v3/orgs/our-org/members/ourmember", "ourmember", 204) in asked, asked
        assert all(path.split("/")[4] in ("our-org", "partner-org") for path, _, _ in asked), asked
        assert provider.asked("unknown") == [], provider.asked("unknown")
        location = requests.get(f"{hub.url}/hub/oauth_login", timeout=10, allow_redirects=False).headers["Location"]
        assert re.search(r"[?&]scope=read%3Aorg(&|$)", location), location

        # README-login: who got in by a membership stays a user after leaving the
        # organization, until the admin deletes them.
        provider.leave_organization("ourmember", "our-org")
        assert oauth_login(hub, provider, "ourmember")[0] == "user", "leaving the organization locked the user out"
        admin_deletes(hub, oauth_login(hub, provider, ADMIN)[1], "ourmember")
        assert oauth_login(hub, provider, "ourmember")[0] == "refused", "a deleted former member got in again"


# --- generic-oauth ----------------------------------------------------------------------

# OAUTH_ALLOW_ALL in the Secret -> who gets in. `true` is what README-secrets and
# hub-secrets.env.example document; `false` is the example's value.
NOT_TRUE_IN_A_HUB = ["false", "", "yes-please"]


@pytest.mark.slow
@pytest.mark.parametrize("allow_all", NOT_TRUE_IN_A_HUB)
def test_generic_oauth_lets_in_only_the_admins_choice_unless_oauth_allow_all_is_true(bake, tmp_path, allow_all):
    """OAUTH_ALLOW_ALL not `true` (the example's `false`, empty, something else): the admin
    and the users the admin adds get in, nobody else."""
    with oauth_hub(bake, tmp_path, "generic-oauth", {"OAUTH_ALLOW_ALL": allow_all}) as (hub, provider):
        outcomes = who_gets_in(hub, provider)
        assert outcomes == ONLY_THE_ADMINS_CHOICE, f"who got in: {outcomes}"
        assert provider.asked("unknown") == [], provider.asked("unknown")


@pytest.mark.slow
def test_generic_oauth_lets_everyone_in_with_oauth_allow_all_true(bake, tmp_path):
    """OAUTH_ALLOW_ALL=true: everyone the provider authenticates gets in (the admin still as
    the admin). Then `false` in the Secret and a rollout restart: a newcomer is refused, and
    (README-login) who got in meanwhile stays a user until the admin deletes them."""
    with oauth_hub(bake, tmp_path, "generic-oauth", {"OAUTH_ALLOW_ALL": "true"}) as (hub, provider):
        outcomes = who_gets_in(hub, provider)
        assert outcomes == EVERYONE, f"who got in: {outcomes}"

        hub.cluster.apply(with_secrets(hub.objects, dict(CLIENT, OAUTH_ALLOW_ALL="false")))
        hub.restart()
        assert oauth_login(hub, provider, "ourmember")[0] == "refused", "a newcomer got in after OAUTH_ALLOW_ALL=false"
        assert oauth_login(hub, provider, STRANGER)[0] == "user", "OAUTH_ALLOW_ALL=false locked out a user of the hub"
        admin_deletes(hub, oauth_login(hub, provider, ADMIN)[1], STRANGER)
        assert oauth_login(hub, provider, STRANGER)[0] == "refused", "a deleted user got in again"
        assert provider.asked("unknown") == [], provider.asked("unknown")


def documented_true_values(project):
    """The values of OAUTH_ALLOW_ALL that the generated README's Secrets table says let
    everyone in (the backquoted words of its row, but the name)."""
    readme = (project / "README.md").read_text(encoding="utf-8")
    secrets = readme.split("\n## Secrets\n", 1)[1].split("\n## ", 1)[0]  # Day two names the key again
    [row] = [line for line in secrets.splitlines() if line.startswith("| `OAUTH_ALLOW_ALL` |")]
    return set(re.findall(r"`([^`]+)`", row)) - {"OAUTH_ALLOW_ALL"}


NOT_TRUE = ["false", "", "yes-please", "yes", "1", "on", "no", "0", " true", "true,"]


def test_oauth_allow_all_is_true_only_for_the_documented_value(bake, tmp_path):
    """The configuration as the hub loads it (in this process): GenericOAuthenticator.allow_all
    is True for the value the README documents, False for every other value tried (the
    common spellings of "yes" included: they leave the hub closed, not open), and False when
    the variable is not set at all."""
    project = bake_for(bake, "generic-oauth", "https://idp.example.org")
    documented = documented_true_values(project)
    assert documented == {"true"}, documented
    objects = render(project)
    config_file = install_config(project, tmp_path, objects)
    read = {}
    for value in [*sorted(documented), *NOT_TRUE, None]:
        secrets = CLIENT if value is None else dict(CLIENT, OAUTH_ALLOW_ALL=value)
        env = local_environment(project, tmp_path, objects, secrets)
        read[value] = load_config(config_file, env).GenericOAuthenticator.allow_all
    assert read == {value: value in documented for value in read}, read


# --- Faults planted in the generated authenticator_config.py ----------------------------

PLANTED = {
    # Every GitHub account gets in.
    "github: allow_all": (
        "github",
        {"GITHUB_ALLOWED_ORGANIZATIONS": ""},
        lambda text: text + "\nc.GitHubOAuthenticator.allow_all = True  # planted by test_oauth_login.py\n",
        {STRANGER: "user", f"{ADDED} before the admin adds her": "user"},
    ),
    # OAUTH_ALLOW_ALL read loosely: any value but an empty one opens the hub.
    "generic-oauth: OAUTH_ALLOW_ALL any non-empty value": (
        "generic-oauth",
        {"OAUTH_ALLOW_ALL": "yes-please"},
        lambda text: text.replace('os.environ.get("OAUTH_ALLOW_ALL", "").lower() == "true"', 'bool(os.environ.get("OAUTH_ALLOW_ALL", ""))'),
        {STRANGER: "user", f"{ADDED} before the admin adds her": "user"},
    ),
    # The rule that lets in the users the admin adds, gone.
    "generic-oauth: no allow_existing_users": (
        "generic-oauth",
        {"OAUTH_ALLOW_ALL": "false"},
        lambda text: text.replace("c.GenericOAuthenticator.allow_existing_users = True\n", ""),
        {ADDED: "refused"},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(PLANTED))
def test_login_checks_catch_planted_faults(bake, tmp_path, fault):
    """The logins of the tests above, against a hub whose authenticator_config.py was changed
    the wrong way: who gets in differs from what those tests expect, exactly as the fault
    says."""
    authenticator, secrets, plant, differs = PLANTED[fault]
    with oauth_hub(bake, tmp_path, authenticator, secrets, plant=plant) as (hub, provider):
        outcomes = who_gets_in(hub, provider)
    changed = {step: outcome for step, outcome in outcomes.items() if ONLY_THE_ADMINS_CHOICE[step] != outcome}
    assert changed == differs, f"{fault}: {outcomes}"


# --- The provider's own negative controls -------------------------------------------------


def test_the_fake_provider_refuses_what_a_provider_refuses(tmp_path):
    """The provider the tests above log in at is as strict as a real one, so that a hub that
    sent the wrong secret, lost the PKCE verifier or replayed a code would fail there: each
    departure from the flow is refused, and the flow itself succeeds (the control)."""
    callback = "http://hub.example.org/hub/oauth_callback"
    verifier = "a-code-verifier-of-the-hub-that-is-long-enough-0123456789"
    with FakeOAuthProvider("127.0.0.1", tmp_path, "client", "secret", [callback], port=free_port()) as provider:
        provider.add_user("alice", ["our-org"])
        trust = str(provider.ca_file)
        browser = requests.Session()

        def authorize(**changes):
            query = dict(client_id="client", redirect_uri=callback, response_type="code", state="s",
                         code_challenge=pkce_challenge(verifier), code_challenge_method="S256", scope="openid")  # fmt: skip
            query.update(changes)
            resp = browser.get(f"{provider.url}/oauth2/authorize", params=query, verify=trust, allow_redirects=False, timeout=10)
            if resp.status_code != 302:
                return resp.status_code, None
            location = urlsplit(resp.headers["Location"])
            assert f"{location.scheme}://{location.netloc}{location.path}" == callback, location
            return 302, dict(pair.split("=", 1) for pair in location.query.split("&"))

        def token(code, **changes):
            form = dict(grant_type="authorization_code", code=code, redirect_uri=callback, client_id="client",
                        client_secret="secret", code_verifier=verifier)  # fmt: skip
            form.update(changes)
            resp = requests.post(f"{provider.url}/oauth2/token", data=form, verify=trust, timeout=10)
            return resp.status_code, resp.json()

        assert authorize()[0] == 401, "authorized a browser nobody signed in with"
        assert browser.post(f"{provider.url}/session", data={"login": "nobody"}, verify=trust, timeout=10).status_code == 401
        assert browser.post(f"{provider.url}/session", data={"login": "alice"}, verify=trust, timeout=10).status_code == 204
        assert authorize(client_id="other")[0] == 400
        assert authorize(redirect_uri="http://evil.example.org/hub/oauth_callback")[0] == 400
        assert authorize(response_type="token")[0] == 400
        assert authorize(code_challenge_method="plain")[0] == 400

        refused = {
            "wrong client secret": dict(client_secret="guess"),
            "another client": dict(client_id="other"),
            "another redirect_uri": dict(redirect_uri="http://evil.example.org/hub/oauth_callback"),
            "wrong PKCE verifier": dict(code_verifier="not-" + verifier),
            "no PKCE verifier": dict(code_verifier=""),
            "another grant type": dict(grant_type="password"),
        }
        for what, changes in refused.items():
            status, query = authorize()
            assert status == 302 and query["state"] == "s", (what, status, query)
            status, body = token(query["code"], **changes)
            assert status in (400, 401) and "access_token" not in body, (what, status, body)

        status, query = authorize()
        status, body = token(query["code"])  # the control: the flow as the hub runs it
        assert status == 200 and body["token_type"] == "bearer", body
        assert token(query["code"])[0] == 400, "a code was exchanged twice"

        def get(path, access_token):
            headers = {"Authorization": f"Bearer {access_token}"}
            return requests.get(f"{provider.url}{path}", headers=headers, verify=trust, timeout=10)

        assert get("/oauth2/userinfo", body["access_token"]).json()["preferred_username"] == "alice"
        assert get("/api/v3/user", body["access_token"]).json()["login"] == "alice"
        assert get("/oauth2/userinfo", "not-a-token").status_code == 401
        assert get("/api/v3/orgs/our-org/members/alice", body["access_token"]).status_code == 204
        assert get("/api/v3/orgs/other-org/members/alice", body["access_token"]).status_code == 404
        assert get("/api/v3/orgs/our-org/members/alice", "not-a-token").status_code == 401
        assert get("/api/v3/users/alice", body["access_token"]).status_code == 404
        assert [r["path"] for r in provider.asked("unknown")] == ["/api/v3/users/alice"]
