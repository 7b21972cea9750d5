"""The way people run the template: `cookiecutter <template>` in a terminal, answering questions.

Each test drives the real `cookiecutter` command through a pseudo-terminal (pexpect), with
colours on as in a real terminal, from a clean copy of the template, with its own HOME
(a ~/.cookiecutterrc naming its own replay_dir and cookiecutters_dir) and its own TMPDIR.
"""

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from conftest import ROOT, TEMPLATE, clean_template
from support.bakery import EXTERNAL_USER_NAMES, NAMED_ADMIN
from support.reading import reading_stdin, signal_state, wait_until_reading_stdin

COOKIECUTTER = str(Path(sys.executable).parent / "cookiecutter")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# One question, as cookiecutter 2.7 prints it through rich: "[3/22] prompt (default): ",
# with colour codes around the counter and the default; choice questions span lines.
QUESTION = re.compile(
    r"\[(\d+)/(\d+)\](?:\x1b\[[0-9;]*m)*\s(.*?)(?:\x1b\[[0-9;]*m)*\(([^()\r\n]*)\)(?:\x1b\[[0-9;]*m)*: ",
    re.DOTALL,
)
CHOICES = re.compile(r"Choose from \[([0-9/]+)\]")
ASKED = [name for name in TEMPLATE if not name.startswith("_")]


def plain(text):
    return ANSI.sub("", text).replace("\r\n", "\n")


class Terminal:
    """One interactive cookiecutter run in a pseudo-terminal."""

    def __init__(self, tmp_path, *args, environ=None):
        self.home = tmp_path / "home"
        self.out = tmp_path / "out"
        tmp = tmp_path / "tmp"
        for directory in (self.home, self.out, tmp):
            directory.mkdir()
        self.replay_dir = tmp_path / "replay"
        (self.home / ".cookiecutterrc").write_text(
            f"replay_dir: {self.replay_dir}\ncookiecutters_dir: {tmp_path / 'cookiecutters'}\n"
        )
        env = {k: v for k, v in os.environ.items() if k not in ("SESSION_NAMESPACE", "INGRESS_DOMAIN", "REGISTRY_HOST", "COOKIECUTTER_CONFIG")}
        env.update(
            HOME=str(self.home),
            TMPDIR=str(tmp),
            PWD=str(self.out),
            KUBECONFIG=str(tmp_path / "no-kubeconfig"),
            TERM="xterm-256color",
            COLUMNS="1000",  # rich takes the width from here first: no prompt is wrapped
            LINES="50",
        )
        for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
            env.pop(name, None)  # a terminal as people have it, whatever the CI machine sets
        env.update(environ or {})
        self.env = env
        self.child = pexpect.spawn(
            COOKIECUTTER,
            [str(clean_template()), *args],
            cwd=str(self.out),
            env=env,
            encoding="utf-8",
            timeout=90,
            dimensions=(50, 1000),
            # A terminal's Ctrl-C interrupts: whatever started the tests (a job in the
            # background of a script ignores SIGINT, and children inherit that) does not.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.transcript = ""

    def question(self):
        """The next question as (number, total, prompt, default), or None when cookiecutter ended."""
        index = self.child.expect([QUESTION, pexpect.EOF])
        self.transcript += self.child.before + (self.child.after if index == 0 else "")
        if index == 1:
            return None
        number, total, prompt, default = self.child.match.groups()
        return int(number), int(total), plain(prompt).strip(), default

    def answer(self, text=""):
        self.child.sendline(text)

    def finish(self):
        """Enter at every remaining question; the exit status."""
        while self.question():
            self.answer()
        self.child.close()
        return self.child.exitstatus

    def text(self):
        return plain(self.transcript)


def name_of(prompt):
    """Which variable a question asks for, from the prompts of cookiecutter.json."""
    for name, text in TEMPLATE["__prompts__"].items():
        text = text["__prompt__"] if isinstance(text, dict) else text
        if prompt.startswith(text):
            return name
    raise AssertionError(f"unknown question: {prompt!r}")


def digest_tree(path):
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "hub-secrets.env"  # random by design
    }


def readme():
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_enter_at_every_question_generates_the_default_project(tmp_path):
    term = Terminal(tmp_path)
    asked = []
    while question := term.question():
        number, total, prompt, _ = question
        asked.append(name_of(prompt))
        assert number == len(asked) and total == len(ASKED), question
        term.answer()
    term.child.close()
    text = term.text()
    assert term.child.exitstatus == 0, text
    assert "Traceback" not in text and "Error" not in text, text
    assert asked == ASKED
    assert "Next steps" in text and "skaffold run" in text
    project = term.out / "jupyterhub-deploy"
    assert (project / "skaffold.yaml").exists()

    # The same project as `--no-input`: Enter takes exactly the defaults.
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    subprocess.run(
        [COOKIECUTTER, "--no-input", str(clean_template()), "-o", str(quiet)],
        env=term.env, cwd=quiet, check=True, capture_output=True, timeout=120,
    )
    assert digest_tree(project) == digest_tree(quiet / "jupyterhub-deploy")

    # The README's session is this session.
    session = re.search(r"<!-- session -->\n```\n(.*?)```", readme(), re.DOTALL)
    assert session, "README.md has no interactive session between <!-- session --> and ```"
    for line in session.group(1).splitlines():
        if line.strip() and line.strip() != "...":
            assert line.rstrip() in text, f"README session line not in a real run: {line!r}"


def test_readme_states_the_number_of_questions():
    stated = re.findall(r"asks (\d+) questions", readme())
    assert stated, "README.md does not say how many questions the default path asks"
    assert {int(n) for n in stated} == {len(ASKED)}


CHOICE_NAMES = [name for name in ASKED if isinstance(TEMPLATE[name], list)]
MOST_OPTIONS = max(len(TEMPLATE[name]) for name in CHOICE_NAMES)


@pytest.mark.parametrize("option", range(2, MOST_OPTIONS + 1))
def test_every_option_of_every_choice_generates(tmp_path, option):
    """Run k picks option k of every choice question (or its last); run 1 is the default run above."""
    term = Terminal(tmp_path)
    picked = {}
    while question := term.question():
        _, _, prompt, _ = question
        name = name_of(prompt)
        offered = CHOICES.search(prompt)
        if offered:
            count = len(offered.group(1).split("/"))
            assert count == len(TEMPLATE[name])
            picked[name] = TEMPLATE[name][min(option, count) - 1]
            term.answer(str(min(option, count)))
        elif name == "admin_user" and picked.get("authenticator") in EXTERNAL_USER_NAMES:
            term.answer(NAMED_ADMIN)  # user names from outside the hub: "admin" is refused
        else:
            term.answer()
    term.child.close()
    text = term.text()
    assert term.child.exitstatus == 0, text
    assert "Traceback" not in text and "Next steps" in text, text
    assert set(picked) == set(CHOICE_NAMES)
    replayed = json.loads((term.replay_dir / "template.json").read_text())["cookiecutter"]
    assert {name: replayed[name] for name in picked} == picked


def test_the_runs_cover_every_option():
    runs = range(1, MOST_OPTIONS + 1)
    for name in CHOICE_NAMES:
        assert {TEMPLATE[name][min(k, len(TEMPLATE[name])) - 1] for k in runs} == set(TEMPLATE[name])


def test_environment_fills_the_defaults_shown(tmp_path):
    term = Terminal(
        tmp_path,
        environ={
            "SESSION_NAMESPACE": "ws-7",
            "INGRESS_DOMAIN": "training.example.net",
            "REGISTRY_HOST": "registry.example.net:5000",
        },
    )
    shown = {}
    while question := term.question():
        shown[name_of(question[2])] = question[3]
        term.answer()
    term.child.close()
    assert term.child.exitstatus == 0, term.text()
    assert shown["namespace"] == "ws-7"
    assert shown["ingress_domain"] == "training.example.net"
    assert shown["hostname"] == "ws-7-jupyterhub.training.example.net"
    assert shown["registry"] == "registry.example.net:5000"
    assert 'image: "registry.example.net:5000/jupyterhub"' in (term.out / "jupyterhub-deploy/skaffold.yaml").read_text()


def test_bad_answer_one_line_nothing_written_and_the_retry_command_works(tmp_path):
    term = Terminal(tmp_path)
    while question := term.question():
        term.answer("Bad_NS" if name_of(question[2]) == "namespace" else "")
    term.child.close()
    text = term.text()
    assert term.child.exitstatus != 0
    ours = text.split("ERROR: Stopping generation")[0]  # cookiecutter's own traceback follows
    assert "Traceback" not in ours, text
    errors = [line for line in ours.splitlines() if re.match(r"error: \w+=", line)]
    assert len(errors) == 1 and errors[0].startswith('error: namespace="Bad_NS" must be an RFC 1123 label'), ours
    assert list(term.out.iterdir()) == []

    # Where the answers were saved: the replay_dir of the user's ~/.cookiecutterrc.
    saved = re.search(r"Your answers are saved in (\S+) ", ours)
    assert saved and Path(saved.group(1)) == term.replay_dir / "template.json", ours
    assert json.loads(Path(saved.group(1)).read_text())["cookiecutter"]["namespace"] == "Bad_NS"

    # The command, with the bad value fixed, generates the project.
    command = re.search(r"^  (cookiecutter --no-input .*)$", ours, re.MULTILINE).group(1)
    assert command.endswith("  # fix: namespace"), command
    words = shlex.split(command, comments=True)
    assert "namespace=Bad_NS" in words
    assert not any(w.startswith(("hostname=", "registry=")) for w in words)  # they follow namespace
    words = [COOKIECUTTER] + [("namespace=lab-ns-1" if w == "namespace=Bad_NS" else w) for w in words[1:]]
    result = subprocess.run(words, cwd=term.out, env=term.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    project = term.out / "jupyterhub-deploy"
    assert 'namespace: "lab-ns-1"' in (project / "k8s/overlays/development/kustomization.yaml").read_text()
    assert '- host: "lab-ns-1-jupyterhub.127.0.0.1.nip.io"' in (project / "k8s/base/hub-ingress.yaml").read_text()


def test_github_with_the_default_admin_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    """Users of github log in with their GitHub login: Enter at the admin's question (the
    default, "admin") would make whoever owns the GitHub login "admin" the hub's admin."""
    term = Terminal(tmp_path)
    (term.out / "notes.txt").write_text("mine\n")  # the output directory holds something already
    before = digest_tree(term.out)
    offered = None
    while question := term.question():
        name = name_of(question[2])
        if name == "authenticator":
            offered = [line.split(" - ", 1)[1].split(":", 1)[0] for line in re.findall(r"\d+ - [^\r\n]+", plain(question[2]))]
            term.answer(str(offered.index("github") + 1))
        else:
            term.answer()  # Enter: admin_user stays "admin"
    term.child.close()
    text = term.text()
    assert offered and term.child.exitstatus != 0, text
    ours = text.split("ERROR: Stopping generation")[0]  # cookiecutter's own traceback follows
    assert "Traceback" not in ours, text
    errors = [line for line in ours.splitlines() if re.match(r"error: \w+=", line)]
    assert errors == [
        'error: admin_user="admin" is a placeholder, and with authenticator=github user names come from outside the hub:'
        " whoever owns that name there would be the hub's admin; give the GitHub login of the person deploying"
    ], ours
    assert digest_tree(term.out) == before and sorted(p.name for p in term.out.iterdir()) == ["notes.txt"]

    # The retry command, with the admin named, generates the project.
    command = re.search(r"^  (cookiecutter --no-input .*)$", ours, re.MULTILINE).group(1)
    assert command.endswith("  # fix: admin_user"), command
    words = shlex.split(command, comments=True)
    assert "authenticator=github" in words and words[-1] == "admin_user=admin"
    words = [COOKIECUTTER] + words[1:-1] + ["admin_user=ada-lovelace"]
    result = subprocess.run(words, cwd=term.out, env=term.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    config = (term.out / "jupyterhub-deploy/hub-config/jupyterhub_config.py").read_text()
    assert 'ADMIN_USER = "ada-lovelace"' in config


@pytest.mark.parametrize("at", ["namespace", "authenticator"])
def test_ctrl_c_at_a_question_leaves_nothing(tmp_path, at):
    term = Terminal(tmp_path)
    while question := term.question():
        if name_of(question[2]) == at:
            # As a person would: once cookiecutter waits for the answer (support/reading.py
            # says why typing ^C the instant the prompt appears can be lost).
            wait_until_reading_stdin(term.child.pid)
            term.child.sendintr()
            break
        term.answer()
    try:
        term.child.expect(pexpect.EOF)
    except pexpect.TIMEOUT:
        raise AssertionError(f"cookiecutter went on after ^C: {signal_state(term.child.pid)}") from None
    term.transcript += term.child.before
    term.child.close()
    text = term.text()
    assert term.child.exitstatus == 1, text
    assert "Traceback" not in text and "Aborted!" in text, text
    assert list(term.out.iterdir()) == []
    assert not term.replay_dir.exists()
    assert [p.name for p in term.home.iterdir()] == [".cookiecutterrc"]
    # What cookiecutter itself leaves behind, as the README says: its copy of the template.
    assert all(p.name.startswith("cookiecutter") for p in (term.home.parent / "tmp").iterdir())


def test_reading_stdin_tells_a_wait_for_input_from_work():
    """The helper the Ctrl-C test waits with: true in read(0), false while computing."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.PIPE)
    waiting = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        wait_until_reading_stdin(waiting.pid, timeout=30)
        assert reading_stdin(waiting.pid)
        assert not any(reading_stdin(busy.pid) for _ in range(20))
        with pytest.raises(AssertionError, match="did not wait in read"):
            wait_until_reading_stdin(busy.pid, timeout=0.5)
    finally:
        busy.kill()
        waiting.kill()
        busy.wait()
        waiting.wait()
