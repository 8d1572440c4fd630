"""The local hub as a team server, run as an operator runs it: `hubtools hub serve` over HTTPS with a
throw-away CA, tokens from a tokens file and from `hubtools hub token add`, read and write scopes,
revocation on a running server, and no token on the command line, in the data folder or in any output.

The clients run in their own processes (the stock `huggingface_hub` and `hf` CLI), pointed at the CA with
``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE`` as a user would.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from certificates import make_tls_files
from hubtools.errors import HubError
from hubtools.localhub import serve_in_background
from hubtools.localhub.auth import Identity, TokenBook


def _hubtools(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hubtools", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def _add_token(data: Path, user: str, *flags: str) -> tuple[str, str]:
    """(token, token id) from `hubtools hub token add` as a user runs it."""
    result = _hubtools("hub", "token", "add", user, "--data", str(data), *flags, cwd=data.parent)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert re.fullmatch(r"hf_local_[A-Za-z0-9]{40}", token)
    token_id = re.search(r"token (\w+) for " + user, result.stderr).group(1)
    return token, token_id


def status(call) -> int:
    """The HTTP status a client call got: 200 when it went through."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        call()
    except HfHubHTTPError as error:
        return error.response.status_code
    return 200


def _stop(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover - only when the server hangs
        process.kill()
        return process.communicate()


# Runs in a fresh interpreter with HF_ENDPOINT, the CA and the tokens in its environment; prints one JSON.
CLIENT = textwrap.dedent('''
    import json, os
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = os.environ["HF_ENDPOINT"]
    api = {name: HfApi(endpoint=endpoint, token=os.environ.get(name.upper()) or False)
           for name in ("carol", "erin_write", "erin_read", "dave", "frank", "gina")}
    out = {}

    def attempt(key, call):
        try:
            value = call()
            out[key] = value if isinstance(value, (str, int, bool, type(None))) else "ok"
        except HfHubHTTPError as error:
            out[key] = error.response.status_code
            out.setdefault("messages", []).append(str(error))

    for step in os.environ["STEPS"].split(","):
        if step == "setup":
            api["carol"].create_repo("carol/team")
            api["carol"].upload_file(path_or_fileobj=b"# team model\\n", path_in_repo="README.md", repo_id="carol/team")
            api["carol"].upload_file(path_or_fileobj=bytes(range(256)) * 64, path_in_repo="w.safetensors",
                                     repo_id="carol/team")
            api["erin_write"].create_repo("erin/private", private=True)
            api["erin_write"].upload_file(path_or_fileobj=b"secret", path_in_repo="a.txt", repo_id="erin/private")
            attempt("erin_read_role", lambda: api["erin_read"].whoami(cache=False)["auth"]["accessToken"]["role"])
            attempt("erin_read_sees_own_private", lambda: api["erin_read"].model_info("erin/private").id)
            attempt("erin_read_sees_public", lambda: api["erin_read"].model_info("carol/team").id)
            attempt("erin_read_upload", lambda: api["erin_read"].upload_file(
                path_or_fileobj=b"x", path_in_repo="b.txt", repo_id="erin/private"))
            attempt("erin_read_create", lambda: api["erin_read"].create_repo("erin/new"))
            attempt("erin_read_delete", lambda: api["erin_read"].delete_repo("erin/private"))
            attempt("erin_read_branch", lambda: api["erin_read"].create_branch("erin/private", branch="b"))
            attempt("dave_sees_erin_private", lambda: api["dave"].model_info("erin/private").id)
            attempt("carol_writes_erin", lambda: api["carol"].create_repo("erin/carols"))
            attempt("gina_added_live", lambda: api["gina"].create_repo("gina/new").repo_id)
        if step == "after":
            attempt("erin_write_revoked", lambda: api["erin_write"].whoami(cache=False)["name"])
            attempt("erin_write_revoked_upload", lambda: api["erin_write"].upload_file(
                path_or_fileobj=b"x", path_in_repo="c.txt", repo_id="erin/private"))
            attempt("erin_read_still", lambda: api["erin_read"].model_info("erin/private").id)
            attempt("carol_removed_from_file", lambda: api["carol"].whoami(cache=False)["name"])
            attempt("frank_added_to_file", lambda: api["frank"].whoami(cache=False)["name"])
    print(json.dumps(out))
''')


def _client(url: str, ca: Path, steps: str, tokens: dict[str, str], cwd: Path) -> dict:
    env = dict(os.environ, HF_ENDPOINT=url, SSL_CERT_FILE=str(ca), REQUESTS_CA_BUNDLE=str(ca), STEPS=steps,
               **{name.upper(): token for name, token in tokens.items()})
    env.pop("HF_TOKEN", None)
    result = subprocess.run([sys.executable, "-c", CLIENT], capture_output=True, text=True, env=env, cwd=cwd,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_team_server_over_https_with_scoped_tokens(tmp_path):
    data = tmp_path / "data"
    tls = make_tls_files(tmp_path / "tls")
    carol = "carol-" + secrets.token_urlsafe(16)
    frank = "frank-" + secrets.token_urlsafe(16)
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(f"# team tokens\ncarol={carol} write\n")
    tokens_file.chmod(0o600)
    erin_write, erin_write_id = _add_token(data, "erin", "--write")
    erin_read, _ = _add_token(data, "erin", "--read", "--name", "laptop")
    dave, _ = _add_token(data, "dave")  # read is the default
    every_token = [carol, frank, erin_write, erin_read, dave]

    listed = _hubtools("hub", "token", "list", "--data", str(data), cwd=tmp_path)
    assert listed.returncode == 0 and erin_write_id in listed.stdout and "laptop" in listed.stdout

    process = subprocess.Popen(
        [sys.executable, "-m", "hubtools", "hub", "serve", "--data", str(data), "--port", "0",
         "--tokens-file", str(tokens_file), "--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:"), url
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes()  # what `ps` shows every local user
        assert not any(token.encode() in command_line for token in every_token)
        gina, _ = _add_token(data, "gina", "--write")  # added while the hub runs
        every_token.append(gina)

        tokens = {"carol": carol, "erin_write": erin_write, "erin_read": erin_read, "dave": dave, "frank": frank,
                  "gina": gina}
        first = _client(url, tls.ca_cert, "setup", tokens, tmp_path)
        assert first["erin_read_role"] == "read"
        assert first["erin_read_sees_own_private"] == "erin/private"
        assert first["erin_read_sees_public"] == "carol/team"
        for write in ("erin_read_upload", "erin_read_create", "erin_read_delete", "erin_read_branch"):
            assert first[write] == 403, (write, first)
        assert first["dave_sees_erin_private"] == 404
        assert first["carol_writes_erin"] == 403
        assert first["gina_added_live"] == "gina/new"

        # Revoked through the CLI and the tokens file edited, both while the server runs: effective at once.
        revoked = _hubtools("hub", "token", "revoke", erin_write_id, "--data", str(data), cwd=tmp_path)
        assert revoked.returncode == 0 and revoked.stdout.strip() == f"revoked token {erin_write_id} of erin"
        replacement = tmp_path / "tokens.new"
        replacement.write_text(f"frank={frank} read\n")
        replacement.chmod(0o600)
        replacement.replace(tokens_file)
        second = _client(url, tls.ca_cert, "after", tokens, tmp_path)
        assert second["erin_write_revoked"] == 401 and second["erin_write_revoked_upload"] == 401
        assert second["erin_read_still"] == "erin/private"
        assert second["carol_removed_from_file"] == 401
        assert second["frank_added_to_file"] == "frank"
        messages = "\n".join(first.get("messages", []) + second.get("messages", []))
        assert not any(token in messages for token in every_token)

        # The stock `hf` CLI over HTTPS, trusting the throw-away CA.
        env = dict(os.environ, HF_ENDPOINT=url, SSL_CERT_FILE=str(tls.ca_cert), REQUESTS_CA_BUNDLE=str(tls.ca_cert))
        env.pop("HF_TOKEN", None)
        hf = Path(sys.executable).with_name("hf")
        download = subprocess.run([str(hf), "download", "carol/team", "w.safetensors", "--local-dir",
                                   str(tmp_path / "dl")], capture_output=True, text=True, env=env, timeout=120)
        assert download.returncode == 0, download.stderr[-2000:]
        assert (tmp_path / "dl" / "w.safetensors").read_bytes() == bytes(range(256)) * 64
    finally:
        out, err = _stop(process)
    assert process.returncode == 0, err[-2000:]
    assert not any(token in out + err for token in every_token)
    for path in data.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(token.encode() in content for token in every_token), path


def test_serve_warns_beyond_loopback_without_tls_and_with_token_on_the_command_line(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "hubtools", "hub", "serve", "--data", str(tmp_path / "data"), "--port", "0",
         "--host", "0.0.0.0", "--token", "carol=demo-token"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        assert process.stdout.readline().startswith("http://0.0.0.0:")
    finally:
        out, err = _stop(process)
    assert "serving plain HTTP on 0.0.0.0" in err and "--tls-cert" in err
    assert "--token puts tokens on the command line" in err
    assert "demo-token" not in out + err


def test_bad_tokens_file_and_tls_files_are_one_line_without_the_token(tmp_path):
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("carol=fine-token\nbob=never-shown-token admin\n")
    result = _hubtools("hub", "serve", "--data", str(tmp_path / "data"), "--tokens-file", str(tokens_file),
                       cwd=tmp_path)
    assert result.returncode == 2
    assert f"{tokens_file}, line 2: the role after the token must be 'read' or 'write'." in result.stderr
    assert "never-shown-token" not in result.stderr and "Traceback" not in result.stderr

    (tmp_path / "cert.pem").write_text("not a certificate")
    result = _hubtools("hub", "serve", "--data", str(tmp_path / "data"), "--tls-cert", str(tmp_path / "cert.pem"),
                       "--tls-key", str(tmp_path / "cert.pem"), cwd=tmp_path)
    assert result.returncode == 2 and "--tls-cert/--tls-key: cannot load" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    env_file = tmp_path / "env-tokens.txt"
    env_file.write_text("carol\n")
    env = dict(os.environ, HUBTOOLS_HUB_TOKENS_FILE=str(env_file))
    result = subprocess.run([sys.executable, "-m", "hubtools", "hub", "serve", "--data", str(tmp_path / "data")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and f"{env_file}, line 1: expected USER=TOKEN" in result.stderr


def test_token_add_refuses_org_on_a_read_token_and_list_never_shows_tokens(tmp_path):
    data = tmp_path / "data"
    result = _hubtools("hub", "token", "add", "alice", "--org", "lab", "--data", str(data), cwd=tmp_path)
    assert result.returncode == 2 and "--org restricts where a write token writes: add --write" in result.stderr
    token, token_id = _add_token(data, "alice", "--write", "--org", "lab")
    listed = _hubtools("hub", "token", "list", "--data", str(data), cwd=tmp_path)
    assert token_id in listed.stdout and "lab" in listed.stdout and token not in listed.stdout
    result = _hubtools("hub", "token", "revoke", "deadbeef", "--data", str(data), cwd=tmp_path)
    assert result.returncode == 2 and "no token with id 'deadbeef'" in result.stderr


def test_one_server_per_data_folder(tmp_path):
    with serve_in_background(tmp_path / "data"):
        with pytest.raises(HubError, match="A local hub is already serving"):
            with serve_in_background(tmp_path / "data"):
                pass


def test_tokens_file_changes_apply_and_a_bad_edit_fails_closed(tmp_path, caplog):
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("carol=carol-file-token write\n")
    book = TokenBook(tokens_file=tokens_file)
    assert book.identify("carol-file-token") == Identity("carol", "write")
    tokens_file.write_text("carol=carol-file-token read\ndave=dave-file-token\n")
    assert book.identify("carol-file-token") == Identity("carol", "read")
    assert book.identify("dave-file-token") == Identity("dave", "write")
    # An edit that removes dave and breaks a line: dave's token must stop working, so none of the file's do.
    tokens_file.write_text("carol=carol-file-token read\nbroken-line-with-secret-in-it\n")
    assert book.identify("dave-file-token") is None and book.identify("carol-file-token") is None
    assert "line 2: expected USER=TOKEN" in caplog.text and "secret-in-it" not in caplog.text
    assert caplog.text.count("expected USER=TOKEN") == 1  # one line, not one per request
    tokens_file.write_text("carol=carol-file-token read\n")  # fixed: the file's tokens work again
    assert book.identify("carol-file-token") == Identity("carol", "read")
    tokens_file.unlink()
    assert book.identify("carol-file-token") is None and book.identify("dave-file-token") is None


def test_write_tokens_cover_the_users_organizations_and_org_restricts_them(tmp_path):
    from huggingface_hub import HfApi

    from hubtools.localhub.tokenstore import TokenStore

    data = tmp_path / "data"
    with serve_in_background(data, organizations={"lab": ["erin", "carol"]}) as hub:
        store = TokenStore(data / "hub.sqlite")
        tokens = {
            "erin": store.add("erin", "write")[0],
            "erin_lab_only": store.add("erin", "write", ("lab",))[0],
            "erin_read": store.add("erin", "read")[0],
            "dave_claims_lab": store.add("dave", "write", ("lab",))[0],
        }
        api = {name: HfApi(endpoint=hub.url, token=token) for name, token in tokens.items()}

        assert status(lambda: api["erin"].create_repo("erin/own")) == 200
        assert status(lambda: api["erin"].create_repo("lab/private-model", private=True)) == 200
        assert status(lambda: api["erin_lab_only"].upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="lab/private-model")) == 200
        assert status(lambda: api["erin_lab_only"].create_repo("erin/other")) == 403  # not in its namespaces
        assert api["erin_read"].model_info("lab/private-model").private  # reads what erin may see
        assert status(lambda: api["erin_read"].upload_file(
            path_or_fileobj=b"y", path_in_repo="y.txt", repo_id="lab/private-model")) == 403
        assert status(lambda: api["dave_claims_lab"].create_repo("lab/dave")) == 403  # --org grants nothing
        assert status(lambda: api["dave_claims_lab"].model_info("lab/private-model")) == 404
        whoami = api["erin_lab_only"].whoami(cache=False)
        assert [org["name"] for org in whoami["orgs"]] == ["lab"]


def test_a_read_token_changes_nothing_anywhere(tmp_path):
    """Likes, discussions, pull requests, moves and duplicates are writes too: a read token gets 403 on each,
    and nothing changes; the same user's write token may do them."""
    import httpx
    from huggingface_hub import HfApi

    from hubtools.localhub.tokenstore import TokenStore

    data = tmp_path / "data"
    with serve_in_background(data) as hub:
        store = TokenStore(data / "hub.sqlite")
        owner = HfApi(endpoint=hub.url, token=store.add("erin", "write")[0])
        reader_token = store.add("frank", "read")[0]
        reader = HfApi(endpoint=hub.url, token=reader_token)
        writer = HfApi(endpoint=hub.url, token=store.add("frank", "write")[0])
        owner.create_repo("erin/public-model")
        owner.upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id="erin/public-model")
        discussion = owner.create_discussion("erin/public-model", title="A question")

        attempts = {
            "open a discussion": lambda: reader.create_discussion("erin/public-model", title="Spam from a reader"),
            "comment": lambda: reader.comment_discussion("erin/public-model", discussion.num, "spam"),
            "open a pull request": lambda: reader.upload_file(
                path_or_fileobj=b"pr", path_in_repo="pr.txt", repo_id="erin/public-model", create_pr=True),
            "duplicate": lambda: reader.duplicate_repo("erin/public-model", "frank/copy"),
            "unlike": lambda: reader.unlike("erin/public-model"),
        }
        for what, call in attempts.items():
            assert status(call) == 403, what
        # huggingface_hub has no like(); the Hub's own endpoint, as its web page calls it.
        liked = httpx.post(f"{hub.url}/api/models/erin/public-model/like",
                           headers={"authorization": f"Bearer {reader_token}"})
        assert liked.status_code == 403
        assert [d.title for d in owner.get_repo_discussions("erin/public-model")] == ["A question"]
        events = owner.get_discussion_details("erin/public-model", discussion.num).events
        assert all("spam" not in getattr(event, "content", "") for event in events)
        assert not owner.repo_exists("frank/copy")
        assert list(owner.list_repo_likers("erin/public-model")) == []

        # The same user with a write token is an outsider who may contribute.
        assert status(lambda: writer.upload_file(
            path_or_fileobj=b"pr", path_in_repo="pr.txt", repo_id="erin/public-model", create_pr=True)) == 200
        assert status(lambda: writer.comment_discussion("erin/public-model", discussion.num, "a fair point")) == 200
        assert status(lambda: writer.duplicate_repo("erin/public-model", "frank/copy")) == 200
