"""`dify-bridge redact`: admins try their rules on text from stdin."""

from __future__ import annotations

import io
import json
import sys

import pytest

from app.config.settings import RedactionConfig, RedactionMode
from app.redact import run_cli

ROUTES = {
    "support": RedactionConfig(mode=RedactionMode.PSEUDONYMIZE),
    "emails-only": RedactionConfig(entities=("EMAIL",)),
    "open": RedactionConfig(mode=RedactionMode.OFF),
}


def run(argv: list[str], stdin: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_cli(argv, routes=ROUTES, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_each_line_is_printed_as_it_would_be_sent() -> None:
    code, out, err = run([], "mail bob@example.com\n電話は090-1234-5678です\nhello\n")
    assert code == 0 and err == ""
    assert out == "mail [EMAIL]\n電話は[PHONE]です\nhello\n"


def test_json_output_gives_offsets_into_the_input_line() -> None:
    line = "電話は０９０－１２３４－５６７８、mail bob@example.com"
    code, out, _ = run(["--json"], line + "\r\n")
    assert code == 0
    obj = json.loads(out)
    assert obj["text"] == "電話は[PHONE]、mail [EMAIL]"
    spans = [(e["type"], line[e["start"] : e["end"]]) for e in obj["entities"]]
    assert spans == [("PHONE", "０９０－１２３４－５６７８"), ("EMAIL", "bob@example.com")]
    assert set(obj) == {"text", "entities"}


def test_route_rules_apply_entity_list_and_mode() -> None:
    assert run(["--route", "emails-only"], "bob@example.com 090-1234-5678\n")[1] == (
        "[EMAIL] 090-1234-5678\n"
    )
    assert run(["--route", "open"], "bob@example.com\n")[1] == "bob@example.com\n"
    # Pseudonymize numbers placeholders across lines, as one thread would; secrets are redacted.
    _, out, _ = run(
        ["--route", "support"], "a@example.com\nb@example.com a@example.com\npassword=x9y8z7\n"
    )
    assert out == "<EMAIL_1>\n<EMAIL_2> <EMAIL_1>\npassword=[SECRET]\n"


def test_unknown_route_is_an_error_naming_the_routes() -> None:
    code, out, err = run(["--route", "nope"], "x\n")
    assert code == 2 and out == ""
    assert "unknown route 'nope'" in err and "emails-only, open, support" in err


def test_bad_arguments_print_usage_and_exit_2() -> None:
    code, _, err = run(["--bogus"], "")
    assert code == 2 and "usage: dify-bridge redact" in err


def test_help_exits_0() -> None:
    assert run(["--help"], "")[0] == 0


def test_jsonl_mode_takes_whole_multi_line_messages() -> None:
    key = (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX\n"
        "-----END RSA PRIVATE KEY-----"
    )
    trace = 'Traceback (most recent call last):\n  File "app.py", line 3\nValueError: a@b.example'
    stdin = "\n".join(json.dumps(m) for m in (key + "\nwhy does this fail?", trace)) + "\n"
    code, out, err = run(["--jsonl"], stdin)
    assert code == 0 and err == ""
    assert [json.loads(line) for line in out.splitlines()] == [
        "[SECRET]\nwhy does this fail?",
        'Traceback (most recent call last):\n  File "app.py", line 3\nValueError: [EMAIL]',
    ]


def test_jsonl_mode_with_json_gives_offsets_into_each_message() -> None:
    message = "line one\nmail bob@example.com"
    code, out, _ = run(["--jsonl", "--json"], json.dumps({"text": message, "id": 7}) + "\n\n")
    assert code == 0
    obj = json.loads(out)
    assert obj["text"] == "line one\nmail [EMAIL]"
    spans = [message[e["start"] : e["end"]] for e in obj["entities"]]
    assert spans == ["bob@example.com"]


def test_jsonl_mode_names_the_line_that_is_not_a_message() -> None:
    code, out, err = run(["--jsonl"], '"ok bob@example.com"\nnot json\n"never reached"\n')
    assert code == 1
    assert out == '"ok [EMAIL]"\n'
    assert "line 2 is not a JSON string" in err


def test_a_routes_phone_regions_apply_in_the_cli() -> None:
    routes = {**ROUTES, "spain": RedactionConfig(phone_regions=("ES",))}
    out, err = io.StringIO(), io.StringIO()
    text = "cliente 612 34 56 78\n"
    assert run_cli([], routes=routes, stdin=io.StringIO(text), stdout=out, stderr=err) == 0
    assert out.getvalue() == text
    out = io.StringIO()
    run_cli(["--route", "spain"], routes=routes, stdin=io.StringIO(text), stdout=out, stderr=err)
    assert out.getvalue() == "cliente [PHONE]\n"


def test_the_dify_bridge_command_passes_jsonl_through(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.admin.cli import build_parser

    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps("a\nbob@example.com") + "\n"))
    args = build_parser().parse_args(["redact", "--jsonl"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out) == "a\n[EMAIL]"
