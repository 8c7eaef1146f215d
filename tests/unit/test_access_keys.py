"""The keys file: bare keys and `<name> <scope> <key>` lines, what a scope allows, and
errors that name the line but never the key."""

from __future__ import annotations

import pytest

from triggerd.domain.access import ApiKey, KeyFileError, Scope, env_keys, parse_keys_file

SECRET = "s3cr3t-Value-42"


def test_bare_and_named_keys_in_line_order() -> None:
    text = ("# the team's keys\n"
            "\n"
            f"{SECRET}\n"
            "grafana   read   k#with-hash  # the dashboard\n"
            "deploy-bot write k2\n")  # fmt: skip
    keys = parse_keys_file(text)
    assert [(k.name, k.scope, k.secret) for k in keys] == [
        ("key-3", Scope.WRITE, SECRET),
        ("grafana", Scope.READ, "k#with-hash"),  # a `#` inside a key is part of it
        ("deploy-bot", Scope.WRITE, "k2"),
    ]


def test_a_read_key_may_only_read() -> None:
    reader, writer = ApiKey("r", Scope.READ, "a"), ApiKey("w", Scope.WRITE, "b")
    assert reader.may("GET") and reader.may("HEAD")
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        assert not reader.may(method)
        assert writer.may(method)


def test_the_secret_is_never_in_a_repr() -> None:
    assert SECRET not in repr(ApiKey("x", Scope.READ, SECRET))
    assert SECRET not in repr(parse_keys_file(f"x read {SECRET}"))


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (f"ok\n\nname {SECRET}\n", 3, "has 2 fields"),
        (f"a read {SECRET} more\n", 1, "has 4 fields"),
        (f"name admin {SECRET}\n", 1, "scope (second field) must be read or write"),
        (f"name {SECRET} read\n", 1, "scope (second field)"),  # the key is not quoted
        (f"-x read {SECRET}\n", 1, "the name (first field)"),
        (f"{'n' * 65} read {SECRET}\n", 1, "the name (first field)"),
        (f"Anonymous read {SECRET}\n", 1, "reserved"),
        (f"system write {SECRET}\n", 1, "reserved"),
        (f"bot read k\xe9y{SECRET}\n", 1, "printable ASCII"),
        (f"a read {SECRET}\na write other\n", 2, "the name (first field) is already used (line 1)"),
        # Fields swapped, the key twice: the duplicate "name" is the key, never quoted.
        (f"{SECRET} write alice\n{SECRET} read bob\n", 2, "already used (line 1)"),
        (f"a read {SECRET}\nb write {SECRET}\n", 2, "the same key as line 1"),
        (f"{SECRET}\nkey-1 read other\n", 2, "already used (line 1)"),
    ],
)
def test_a_bad_line_is_named_by_number_and_never_quoted(
    text: str, line: int, says: str
) -> None:
    with pytest.raises(KeyFileError) as caught:
        parse_keys_file(text)
    message = str(caught.value)
    assert caught.value.line == line
    assert message.startswith(f"line {line}: ")
    assert says in message
    assert SECRET not in message


def test_env_keys_have_full_access_and_names_by_position() -> None:
    keys = env_keys(["a", "b"])
    assert [(k.name, k.scope) for k in keys] == [("env-key-1", "write"), ("env-key-2", "write")]
    with pytest.raises(KeyFileError, match=r"^line 1: the same key as env-key-2$"):
        parse_keys_file("ops read b", keys)
    with pytest.raises(KeyFileError, match=r"already used .env-key-1.$"):
        parse_keys_file("env-key-1 read c", keys)
    with pytest.raises(ValueError, match=r"^keys 1 and 3 are the same key$"):
        env_keys(["a", "b", "a"])
