"""Jinja compiles each template source once per test process, not once per bake.

cookiecutter makes a new Jinja environment for every bake, so every file of the
template, and every answer in cookiecutter.json, is parsed and compiled to Python again:
about half the CPU of a bake in the test process, and the tests bake some 500 times a
run. The compiled code depends only on the source, its name, and the environment's
syntax settings, extensions, filters and tests, so it is kept under exactly that key
(once per digest of what the compilation reads, like the rest of the suite's caches);
the filename goes only into the code objects, and each caller's is put back there.
Rendering is untouched: each bake still runs the compiled code with its own answers, and
the hooks run as cookiecutter runs them. test_bake_matrix compares the projects the
tests bake with what the real `cookiecutter` command makes.

Only the test processes install this (conftest.py); cookiecutter itself is not changed.
"""

import functools
import types

import jinja2

_ORIGINAL = jinja2.Environment.compile
_CODE = {}


def _environment_key(env):
    """What, besides the source, the code Jinja generates depends on."""
    return (
        type(env),
        env.block_start_string,
        env.block_end_string,
        env.variable_start_string,
        env.variable_end_string,
        env.comment_start_string,
        env.comment_end_string,
        env.line_statement_prefix,
        env.line_comment_prefix,
        env.trim_blocks,
        env.lstrip_blocks,
        env.newline_sequence,
        env.keep_trailing_newline,
        tuple(sorted(env.extensions)),
        env.optimized,
        env.finalize,
        env.autoescape if isinstance(env.autoescape, bool) else id(env.autoescape),
        env.is_async,
        frozenset(env.filters),
        frozenset(env.tests),
    )


def _with_filename(code, filename):
    """The code object as compiling it under this filename makes it: the name is in every
    nested code object (tracebacks show it; Jinja's Template.filename is read from it)."""
    consts = tuple(_with_filename(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


@functools.wraps(_ORIGINAL)
def _compile(self, source, name=None, filename=None, raw=False, defer_init=False):
    if not isinstance(source, str) or raw:
        return _ORIGINAL(self, source, name, filename, raw, defer_init)
    # Not keyed by filename: the pre_prompt hook makes cookiecutter read the template from a
    # new temporary copy each bake, so the same file comes with a new path every time.
    key = (_environment_key(self), source, name, defer_init)
    code = _CODE.get(key)
    if code is None:
        # A syntax error raises here, as before, and nothing is kept.
        code = _CODE[key] = _ORIGINAL(self, source, name, filename, raw, defer_init)
    filename = filename or "<template>"  # what Jinja names code without a file
    return code if code.co_filename == filename else _with_filename(code, filename)


def install():
    jinja2.Environment.compile = _compile


def installed():
    return jinja2.Environment.compile is _compile


def compiled_count():
    return len(_CODE)
