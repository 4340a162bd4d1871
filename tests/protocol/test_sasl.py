"""Tests for mailwright.protocol.sasl: known vectors, both roles against each other, fuzzing."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mailwright.protocol.sasl as sasl_pkg
from mailwright.protocol.events import AuthAttempt
from mailwright.protocol.reply import R, SMTPError
from mailwright.protocol.sasl import (
    MAX_FIELD,
    SERVER_MECHANISMS,
    Challenge,
    ClientMechanism,
    Credentials,
    ServerMechanism,
    client_mechanism,
    decode_response,
    error_challenge,
    server_mechanism,
)

HOST = "mx.example.test"
NONCE = "1896.697170952"


def server(name: str) -> ServerMechanism:
    return server_mechanism(name, hostname=HOST, nonce=NONCE)


def wire_exchange(client: ClientMechanism, srv: ServerMechanism, *, use_initial: bool = True) -> Credentials:
    """Drive both sides through base64 lines, as the engine would."""
    initial = client.initial() if use_initial else None
    line = None if initial is None else (base64.b64encode(initial) or b"=")
    result = srv.start(None if line is None else decode_response(line))
    for _ in range(5):
        if isinstance(result, Credentials):
            return result
        challenge = base64.b64decode(base64.b64encode(result.data))
        answer = base64.b64encode(client.respond(challenge))
        result = srv.step(decode_response(answer + b"\r\n"))
    raise AssertionError("exchange did not finish")


def expect_501(call: object, *args: object) -> SMTPError:
    assert callable(call)
    with pytest.raises(SMTPError) as info:
        call(*args)
    assert info.value.reply.code == 501
    assert info.value.reply.enhanced == "5.5.2"
    return info.value


# --- decode_response -------------------------------------------------------------------


def test_decode_response_plain_base64_and_crlf() -> None:
    assert decode_response(b"dGVzdAB0ZXN0ADEyMzQ=") == b"test\x00test\x001234"
    assert decode_response(b"dGVzdAB0ZXN0ADEyMzQ=\r\n") == b"test\x00test\x001234"


def test_decode_response_equals_and_empty_mean_empty() -> None:
    assert decode_response(b"=") == b""
    assert decode_response(b"") == b""
    assert decode_response(b"\r\n") == b""


def test_decode_response_star_cancels() -> None:
    with pytest.raises(SMTPError) as info:
        decode_response(b"*")
    assert info.value.reply == R.AUTH_CANCELLED


@pytest.mark.parametrize(
    "line",
    [
        b"dGVzdA",
        b"dGVz dA==",
        b"dGVzdA==x",
        b"=dGVzdA==",
        b"dGVzdA===",
        b"d\xffVzdA==",
        b"!!!!",
        b"dGVzdA==\n",
    ],
)
def test_decode_response_is_strict(line: bytes) -> None:
    with pytest.raises(SMTPError) as info:
        decode_response(line)
    assert info.value.reply == R.AUTH_BAD_BASE64


@given(st.binary(max_size=64))
def test_decode_response_raises_only_smtp_error(data: bytes) -> None:
    try:
        out = decode_response(data)
    except SMTPError as exc:
        assert exc.reply in (R.AUTH_BAD_BASE64, R.AUTH_CANCELLED)
    else:
        assert isinstance(out, bytes)


@given(st.binary(max_size=200))
def test_decode_response_inverts_b64encode(data: bytes) -> None:
    assert decode_response(base64.b64encode(data)) == data


# --- PLAIN ------------------------------------------------------------------------------


def test_plain_rfc4954_example_initial_response() -> None:
    creds = server("PLAIN").start(decode_response(b"dGVzdAB0ZXN0ADEyMzQ="))
    assert creds == Credentials("PLAIN", "test", "test", password="1234")


def test_plain_rfc4616_examples() -> None:
    creds = server("PLAIN").start(b"\x00tim\x00tanstaaftanstaaf")
    assert isinstance(creds, Credentials)
    assert (creds.authcid, creds.authzid, creds.password) == ("tim", None, "tanstaaftanstaaf")
    creds = server("PLAIN").start(b"Ursel\x00Kurt\x00xipj3plmq")
    assert isinstance(creds, Credentials)
    assert (creds.authzid, creds.authcid, creds.password) == ("Ursel", "Kurt", "xipj3plmq")


@pytest.mark.parametrize("initial", [None, b""])
def test_plain_without_or_with_empty_initial_gets_empty_challenge(initial: bytes | None) -> None:
    mech = server("PLAIN")
    assert mech.start(initial) == Challenge(b"")
    creds = mech.step("\x00jos\u00e9\x00p\u00e4ss word".encode())
    assert creds == Credentials("PLAIN", "jos\u00e9", None, password="p\u00e4ss word")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"tim\x00tanstaaf", "two NULs"),
        (b"\x00tim\x00pass\x00word", "two NULs"),
        (b"", "two NULs"),
        (b"\x00\x00secret", "empty user name"),
        (b"\x00tim\x00", "empty password"),
        (b"\x00tim\xff\x00secret", "UTF-8"),
        (b"\x00tim\x00sec\xc3", "UTF-8"),
        (b"\x00t\rim\x00secret", "control"),
        (b"\x00" + b"u" * (MAX_FIELD + 1) + b"\x00secret", "longer"),
        (b"\x00tim\x00" + b"p" * (MAX_FIELD + 1), "longer"),
        (b"a" * (MAX_FIELD + 1) + b"\x00tim\x00secret", "longer"),
    ],
)
def test_plain_malformed(message: bytes, reason: str) -> None:
    mech = server("PLAIN")
    mech.start(None)
    err = expect_501(mech.step, message)
    assert reason in err.reply.text
    assert err.reply.text.startswith("PLAIN")


def test_plain_huge_initial_response_rejected_before_parsing() -> None:
    mech = server("PLAIN")
    expect_501(mech.start, b"\x00" * 100_000)
    with pytest.raises(RuntimeError):
        mech.step(b"\x00a\x00b")


# --- LOGIN ------------------------------------------------------------------------------


def test_login_prompts_username_then_password() -> None:
    mech = server("LOGIN")
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.step(b"alice") == Challenge(b"Password:")
    assert mech.step(b"s3cret") == Credentials("LOGIN", "alice", password="s3cret")


def test_login_initial_response_is_the_username() -> None:
    mech = server("LOGIN")
    assert mech.start(b"alice@example.test") == Challenge(b"Password:")
    assert mech.step(b"pw") == Credentials("LOGIN", "alice@example.test", password="pw")


def test_login_malformed() -> None:
    expect_501(server("LOGIN").start, b"")
    mech = server("LOGIN")
    mech.start(None)
    expect_501(mech.step, b"\xff\xfe")
    mech = server("LOGIN")
    mech.start(b"alice")
    expect_501(mech.step, b"pass\x00word")
    mech = server("LOGIN")
    mech.start(b"alice")
    expect_501(mech.step, b"")


# --- CRAM-MD5 ---------------------------------------------------------------------------


def test_cram_md5_rfc2195_vector() -> None:
    mech = server_mechanism("CRAM-MD5", hostname="postoffice.reston.mci.net", nonce="1896.697170952")
    challenge = mech.start(None)
    assert challenge == Challenge(b"<1896.697170952@postoffice.reston.mci.net>")
    assert base64.b64encode(challenge.data) == b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
    creds = mech.step(decode_response(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"))
    assert isinstance(creds, Credentials)
    assert creds.authcid == "tim"
    assert creds.cram_digest == "b913a602c7eda7a495b4e6e7334d3890"
    assert creds.verify_cram("tanstaaftanstaaf")
    assert not creds.verify_cram("tanstaaftanstaaF")


def test_cram_md5_client_matches_rfc2195_vector() -> None:
    client = client_mechanism("CRAM-MD5", username="tim", password="tanstaaftanstaaf")
    assert client.initial() is None
    answer = client.respond(b"<1896.697170952@postoffice.reston.mci.net>")
    assert answer == b"tim b913a602c7eda7a495b4e6e7334d3890"


def test_cram_md5_uppercase_digest_and_spaces_in_user() -> None:
    mech = server("CRAM-MD5")
    mech.start(None)
    creds = mech.step(b"john smith B913A602C7EDA7A495B4E6E7334D3890")
    assert isinstance(creds, Credentials)
    assert creds.authcid == "john smith"
    assert creds.cram_digest == "b913a602c7eda7a495b4e6e7334d3890"


def test_cram_md5_verify_without_digest_is_false() -> None:
    assert not Credentials("PLAIN", "tim", password="x").verify_cram("x")


@pytest.mark.parametrize(
    "response", [b"tim", b"tim b913a602", b" b913a602c7eda7a495b4e6e7334d3890", b"tim " + b"g" * 32, b""]
)
def test_cram_md5_malformed(response: bytes) -> None:
    mech = server("CRAM-MD5")
    mech.start(None)
    expect_501(mech.step, response)


def test_cram_md5_refuses_initial_response() -> None:
    expect_501(server("CRAM-MD5").start, b"tim b913a602c7eda7a495b4e6e7334d3890")


@pytest.mark.parametrize(("hostname", "nonce"), [("mx.test", "a b"), ("mx>.test", "1.2"), ("mx.test", "")])
def test_cram_md5_rejects_unsafe_nonce_or_hostname(hostname: str, nonce: str) -> None:
    with pytest.raises(ValueError):
        server_mechanism("CRAM-MD5", hostname=hostname, nonce=nonce)


# --- XOAUTH2 / OAUTHBEARER --------------------------------------------------------------

GOOGLE_XOAUTH2 = (
    b"dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZ"
    b"Mjl0Q2cBAQ=="
)


def test_xoauth2_google_documented_example() -> None:
    creds = server("XOAUTH2").start(decode_response(GOOGLE_XOAUTH2))
    assert creds == Credentials(
        "XOAUTH2", "someuser@example.com", token="ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    )


def test_xoauth2_client_produces_google_example() -> None:
    client = client_mechanism(
        "XOAUTH2", username="someuser@example.com", token="ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    )
    initial = client.initial()
    assert initial is not None
    assert base64.b64encode(initial) == GOOGLE_XOAUTH2


def test_oauthbearer_rfc7628_example() -> None:
    message = (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
        b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
    )
    mech = server("OAUTHBEARER")
    assert mech.start(None) == Challenge(b"")
    creds = mech.step(message)
    assert creds == Credentials(
        "OAUTHBEARER", "user@example.com", token="vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
    )


def test_oauthbearer_gs2_escapes() -> None:
    creds = server("OAUTHBEARER").start(b"n,a=odd=2Cname=3Dx,\x01auth=bearer t0k\x01\x01")
    assert isinstance(creds, Credentials)
    assert creds.authcid == "odd,name=x"
    client = client_mechanism("OAUTHBEARER", username="odd,name=x", token="t0k")
    initial = client.initial()
    assert initial == b"n,a=odd=2Cname=3Dx,\x01auth=Bearer t0k\x01\x01"


@pytest.mark.parametrize(
    "message",
    [
        b"user=a\x01auth=Bearer tok\x01",
        b"user=a\x01auth=Bearer tok",
        b"user=a\x01\x01",
        b"auth=Bearer tok\x01\x01",
        b"user=a\x01auth=Basic dG9r\x01\x01",
        b"user=a\x01auth=Bearer to k\x01\x01",
        b"user=a\x01auth=Bearer \x01\x01",
        b"user=a\x01user=b\x01auth=Bearer tok\x01\x01",
        b"user=a\x01auth=Bearer tok\x01extra=1\x01\x01",
        b"user=\x01auth=Bearer tok\x01\x01",
        b"user=a\x01auth=Bearer t\xc3\xa9\x01\x01",
        b"user=a\x01auth=Bearer " + b"t" * 20000 + b"\x01\x01",
    ],
)
def test_xoauth2_malformed(message: bytes) -> None:
    expect_501(server("XOAUTH2").start, message)


@pytest.mark.parametrize(
    "message",
    [
        b"n,,\x01auth=Bearer tok\x01\x01",
        b"p=tls-unique,a=u,\x01auth=Bearer tok\x01\x01",
        b"n,a=u\x01auth=Bearer tok\x01\x01",
        b"n,a=u=2X,\x01auth=Bearer tok\x01\x01",
        b"n,a=u,\x01host=x\x01\x01",
        b"n,a=u,\x01auth=Bearer tok\x01",
        b"n,a=u,",
        b"n,a=u,\x011=2\x01auth=Bearer tok\x01\x01",
    ],
)
def test_oauthbearer_malformed(message: bytes) -> None:
    expect_501(server("OAUTHBEARER").start, message)


@pytest.mark.parametrize(("name", "after_error"), [("XOAUTH2", b""), ("OAUTHBEARER", b"\x01")])
def test_token_error_dance(name: str, after_error: bytes) -> None:
    srv = server(name)
    client = client_mechanism(name, username="u@example.test", token="bad.token")
    creds = wire_exchange(client, srv)
    assert creds.token == "bad.token"
    challenge = error_challenge(srv, scope="https://mail.example.test/")
    assert challenge is not None
    body = json.loads(challenge.data)
    assert body["scope"] == "https://mail.example.test/"
    assert body["status"] == ("401" if name == "XOAUTH2" else "invalid_token")
    assert client.respond(challenge.data) == after_error
    assert json.loads(getattr(client, "error")) == body  # noqa: B009
    with pytest.raises(SMTPError):
        client.respond(challenge.data)


@pytest.mark.parametrize("name", ["PLAIN", "LOGIN", "CRAM-MD5", "plain"])
def test_no_error_challenge_for_password_mechanisms(name: str) -> None:
    assert error_challenge(name) is None


# --- both roles, registry, sequencing --------------------------------------------------


@pytest.mark.parametrize("name", SERVER_MECHANISMS)
@pytest.mark.parametrize("use_initial", [True, False])
def test_client_and_server_agree(name: str, use_initial: bool) -> None:
    client = client_mechanism(
        name, username="j\u00f6rg@example.test", password="p\u00e4ss:w0rd", token="abc.DEF-1"
    )
    creds = wire_exchange(client, server(name), use_initial=use_initial)
    assert creds.mechanism == name
    assert creds.authcid == "j\u00f6rg@example.test"
    if name in ("PLAIN", "LOGIN"):
        assert creds.password == "p\u00e4ss:w0rd"
    elif name == "CRAM-MD5":
        assert creds.verify_cram("p\u00e4ss:w0rd")
        assert not creds.verify_cram("other")
    else:
        assert creds.token == "abc.DEF-1"


def test_plain_authzid_round_trip() -> None:
    client = client_mechanism("PLAIN", username="admin", password="pw", authzid="bob")
    assert wire_exchange(client, server("PLAIN")).authzid == "bob"


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f"),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60)
@given(user=_TEXT.filter(lambda s: s.strip(" ") == s), secret=_TEXT)
def test_password_mechanisms_round_trip_any_text(user: str, secret: str) -> None:
    for name in ("PLAIN", "LOGIN", "CRAM-MD5"):
        if name == "CRAM-MD5" and " " in user[-1:]:
            continue
        creds = wire_exchange(client_mechanism(name, username=user, password=secret), server(name))
        assert creds.authcid == user
        assert creds.password == secret or creds.verify_cram(secret)


@settings(max_examples=150)
@given(
    name=st.sampled_from(SERVER_MECHANISMS),
    initial=st.none() | st.binary(max_size=80),
    responses=st.lists(st.binary(max_size=80), max_size=4),
)
def test_server_mechanisms_raise_only_smtp_error(
    name: str, initial: bytes | None, responses: list[bytes]
) -> None:
    mech = server(name)
    try:
        result = mech.start(initial)
        for response in responses:
            if isinstance(result, Credentials):
                break
            result = mech.step(response)
    except SMTPError as exc:
        assert exc.reply.code == 501
        return
    assert isinstance(result, Challenge | Credentials)


@settings(max_examples=150)
@given(
    name=st.sampled_from(SERVER_MECHANISMS),
    fields=st.lists(
        st.sampled_from(
            [b"\x00", b"\x01", b"=", b",", b"user=", b"auth=Bearer ", b"n,a=", b"u", b"\xff", b" "]
        ),
        max_size=12,
    ),
)
def test_server_mechanisms_structured_fuzz(name: str, fields: list[bytes]) -> None:
    # Builds inputs from the mechanisms' own delimiters so the deeper parse paths are reached.
    mech = server(name)
    data = b"".join(fields)
    try:
        result = mech.start(None)
        result = mech.step(data)
    except SMTPError as exc:
        assert exc.reply.code == 501
        return
    assert isinstance(result, Challenge | Credentials)


def test_step_after_completion_is_a_caller_bug() -> None:
    mech = server("PLAIN")
    mech.start(b"\x00a\x00b")
    with pytest.raises(RuntimeError):
        mech.step(b"\x00a\x00b")
    mech = server("PLAIN")
    with pytest.raises(RuntimeError):
        mech.step(b"\x00a\x00b")
    mech = server("PLAIN")
    mech.start(None)
    with pytest.raises(SMTPError):
        mech.step(b"bad")
    with pytest.raises(RuntimeError):
        mech.step(b"\x00a\x00b")


def test_registry_names() -> None:
    assert server_mechanism("cram-md5", hostname=HOST, nonce=NONCE).name == "CRAM-MD5"
    with pytest.raises(KeyError):
        server_mechanism("GSSAPI", hostname=HOST, nonce=NONCE)
    with pytest.raises(KeyError):
        client_mechanism("SCRAM-SHA-1", username="u", password="p")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("PLAIN", {"username": "u"}),
        ("PLAIN", {"username": "u", "password": "a\x00b"}),
        ("LOGIN", {"username": "", "password": "p"}),
        ("LOGIN", {"username": "u", "password": "p", "authzid": "x"}),
        ("CRAM-MD5", {"username": "u"}),
        ("XOAUTH2", {"username": "u"}),
        ("XOAUTH2", {"username": "u", "token": "a\x01b"}),
        ("OAUTHBEARER", {"username": "u", "token": "a b"}),
    ],
)
def test_client_rejects_unencodable_arguments(name: str, kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        client_mechanism(name, **kwargs)


def test_client_cancels_unexpected_challenges() -> None:
    plain = client_mechanism("PLAIN", username="u", password="p")
    plain.initial()
    with pytest.raises(SMTPError) as info:
        plain.respond(b"")
    assert info.value.reply.code == R.AUTH_CANCELLED.code
    login = client_mechanism("LOGIN", username="u", password="p")
    assert login.respond(b"Username:") == b"u"
    assert login.respond(b"Password:") == b"p"
    with pytest.raises(SMTPError):
        login.respond(b"Password:")
    cram = client_mechanism("CRAM-MD5", username="u", password="p")
    with pytest.raises(SMTPError):
        cram.respond(b"")


def test_login_client_honours_password_prompt() -> None:
    login = client_mechanism("LOGIN", username="u", password="p")
    assert login.respond(b"UGFzc3dvcmQ6 ignored".lower()) == b"u"
    assert login.respond(b"password:") == b"p"


def test_sasl_package_imports_no_io_modules() -> None:
    forbidden = {"asyncio", "socket", "ssl", "time", "logging", "random", "os", "secrets"}
    folder = Path(sasl_pkg.__file__).parent
    files = sorted(folder.glob("*.py"))
    assert len(files) >= 4
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


def test_credentials_repr_leaves_out_every_secret() -> None:
    # An event or Credentials formatted into a log line or an exception text carries no secret.
    for creds in (
        server("PLAIN").start(b"\0alice@example.org\0s3cret-password"),
        Credentials(
            "CRAM-MD5", "alice", cram_challenge=b"<1.2@x>", cram_digest="b913a602c7eda7a495b4e6e7334d3890"
        ),
        Credentials("XOAUTH2", "alice", token="ya29.secret-token"),
    ):
        assert isinstance(creds, Credentials)
        shown = repr(AuthAttempt(creds))
        assert "alice" in shown
        for secret in ("s3cret-password", "b913a602c7eda7a495b4e6e7334d3890", "ya29.secret-token"):
            assert secret not in shown
