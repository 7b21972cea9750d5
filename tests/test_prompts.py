"""Every question cookiecutter asks reads exactly as written in cookiecutter.json.

cookiecutter 2.7 prints its questions through rich, which reads `[...]` as markup:
`host[:port][/path]` in a prompt crashed the interactive run with a MarkupError, and
`[bold]` would silently vanish. These tests run cookiecutter's own prompting code
(cookiecutter.prompt.prompt_for_config, which builds the markup around each prompt and
hands it to rich.prompt) with a recording console and Enter as every answer, then look
for each prompt text, verbatim, in what the terminal would have shown.
"""

import copy
import io
import json

import pytest
import rich
import rich.prompt
from cookiecutter.prompt import prompt_for_config
from rich.console import Console

from conftest import ROOT

TEMPLATE = json.loads((ROOT / "cookiecutter.json").read_text(encoding="utf-8"))


def prompt_texts(template):
    """Every string of __prompts__: questions, choice questions (__prompt__) and choice labels."""
    texts = []
    for name, prompt in template.get("__prompts__", {}).items():
        if isinstance(prompt, dict):
            texts += [(f"{name}.{key}", text) for key, text in prompt.items()]
        else:
            texts.append((name, prompt))
    return texts


def shown_by_cookiecutter(template, monkeypatch):
    """The plain text a terminal shows while cookiecutter asks every question, Enter at each.

    Raises rich's MarkupError where the real interactive run would crash.
    """
    console = Console(file=io.StringIO(), width=100_000, color_system=None, record=True)
    monkeypatch.setattr(rich, "_console", console)

    def enter(cls, console, prompt, password, stream=None):
        console.print(prompt)
        return ""

    monkeypatch.setattr(rich.prompt.PromptBase, "get_input", classmethod(enter))
    prompt_for_config({"cookiecutter": copy.deepcopy(template)}, no_input=False)
    return console.export_text()


def unreadable_prompts(template, monkeypatch):
    """The prompt strings that do not reach the terminal as written."""
    shown = shown_by_cookiecutter(template, monkeypatch)
    return [(where, text) for where, text in prompt_texts(template) if text not in shown]


def test_every_prompt_renders_verbatim(monkeypatch):
    assert unreadable_prompts(TEMPLATE, monkeypatch) == []


def test_every_question_is_asked_with_its_prompt(monkeypatch):
    """A prompt for a variable that is not asked (renamed, made private) would be dead text."""
    asked = [name for name in TEMPLATE if not name.startswith("_")]
    assert set(TEMPLATE["__prompts__"]) <= set(asked)


@pytest.mark.parametrize(
    "where,planted",
    [
        ("registry", "Registry (host[:port][/path])"),  # the crash of issue 8
        ("namespace", "Namespace [/x]"),
        ("project", "Directory [bold]name[/bold]"),  # rich would swallow the tags
        ("authenticator.__prompt__", "How users log in [dim]"),
        ("tls.yes", "yes: TLS [red]now[/]"),
        ("kaniko_credentials.none", "none: anonymous\\"),  # escapes cookiecutter's own [/]
    ],
)
def test_a_planted_markup_fault_is_caught(monkeypatch, where, planted):
    """The check above can fail: plant markup in one prompt and watch it object."""
    from rich.errors import MarkupError

    template = copy.deepcopy(TEMPLATE)
    name, _, key = where.partition(".")
    if key:
        template["__prompts__"][name][key] = planted
    else:
        template["__prompts__"][name] = planted
    try:
        bad = unreadable_prompts(template, monkeypatch)
    except MarkupError:
        return
    assert (where, planted) in bad
