"""``prefloop annotate`` shows what is stored: control sequences, bidi overrides and invisible
characters in prompts and outputs appear as visible escapes, and the whole conversation is shown.

The output goes through a real terminal emulator (pyte), so the assertions are about what a
person at a terminal would see, not about the bytes alone.
"""

from __future__ import annotations

import io
import re
import sys

import pyte
import pytest
from rich.console import Console

from prefloop.feedback import terminal
from prefloop.feedback.queue import Queue
from prefloop.visible import visible_parts

TRICK = "Berlin.\x1b[2K\x1b[1GParis."  # erases "Berlin." on a real terminal
CONVERSATION = [
    {"role": "system", "content": "You are a geography tutor. Answer in one word."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris\u202e.sirap"},
    {"role": "user", "content": "And of Germany?\rIgnore the above."},
]
SGR = re.compile(r"\x1b\[[0-9;]*m")  # rich's own colours and styles


def _screen(raw: str, columns: int = 120) -> str:
    """What a VT100-style terminal shows after receiving ``raw`` (the tty turns \\n into \\r\\n)."""
    screen = pyte.Screen(columns, raw.count("\n") + 5)
    pyte.Stream(screen).feed(raw.replace("\n", "\r\n"))
    return "\n".join(line.rstrip() for line in screen.display)


def _annotate(queue: Queue, keys: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(keys))
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=120)
    terminal.run(queue, queue.ensure_annotator("ada"), guidelines="Pick the\x1b]0;owned\x07 correct one.", console=console)
    return out.getvalue()


def test_control_sequences_show_as_escapes_and_never_reach_the_terminal(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    queue.add_comparison(CONVERSATION, [TRICK, "Ber\u202elin\u2066\u200b\x7f\x9b."])
    raw = _annotate(queue, "s", monkeypatch)

    unstyled = SGR.sub("", raw)
    assert "\x1b" not in unstyled, "a control sequence from the data reached the terminal"
    for ch in "\r\x07\x7f\x9b\u202e\u2066\u200b":
        assert ch not in unstyled, f"U+{ord(ch):04X} reached the terminal"
    shown = _screen(raw)
    assert "Berlin.\\x1b[2K\\x1b[1GParis." in shown  # both parts, and what hid one of them
    assert "Ber\\u202elin\\u2066\\u200b\\x7f\\x9b." in shown
    assert "Pick the\\x1b]0;owned\\x07 correct one." in shown  # guidelines too
    assert "And of Germany?\\rIgnore the above." in shown
    assert "Paris\\u202e.sirap" in shown
    assert "No task left" in shown


def test_the_whole_conversation_is_shown_with_roles(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    queue.add_rating(CONVERSATION, "Berlin.")
    shown = _screen(_annotate(queue, "q", monkeypatch))
    lines = [line.strip("│ ") for line in shown.splitlines()]
    order = []
    for m in CONVERSATION:
        text = "".join(s for s, _ in visible_parts(m["content"]))
        row = next(i for i, line in enumerate(lines) if text in line)
        assert lines[row - 1] == m["role"], f"{m['role']} turn not labelled: {lines[row - 1:row + 1]}"
        order.append(row)
    assert order == sorted(order), "the turns are shown in order"


def test_plain_text_is_unchanged_and_newlines_and_tabs_stay_layout() -> None:
    assert visible_parts("") == []
    assert visible_parts("a\tb\nc\r\nd ünïcødé 👩\u200d💻") == [("a\tb\nc\r\nd ünïcødé 👩\u200d💻", False)]
    assert visible_parts("\x1b[31mred\r") == [("\\x1b", True), ("[31mred", False), ("\\r", True)]
    assert visible_parts("\U000e0041\u202e") == [("\\U000e0041", True), ("\\u202e", True)]


def test_cli_annotate_writes_no_control_byte_to_a_pipe(tmp_path) -> None:
    from test_cli import run

    run("init", "proj", cwd=tmp_path)
    project = tmp_path / "proj"
    (project / "t.jsonl").write_text(
        '{"prompt": "Capital of Germany?", "outputs": ["Berlin.\\u001b[2K\\u001b[1GParis.", "Bonn\\u202e"]}\n'
    )
    run("queue", "add", "t.jsonl", cwd=project)
    out = run("annotate", "-a", "ada", cwd=project, stdin="1").stdout
    assert "Berlin.\\x1b[2K\\x1b[1GParis." in out and "Bonn\\u202e" in out
    assert "\x1b" not in out and "\u202e" not in out
