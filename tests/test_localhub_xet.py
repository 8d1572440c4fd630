"""Xet on the local hub: the stock clients with ``hf_xet`` installed and HF_HUB_DISABLE_XET unset (the
default) upload through the hub's own CAS API, and every file lands as the same sha256 blob an LFS upload
makes. Also the formats and hashes, checked against a xorb and a shard the real ``hf_xet`` client produced
(``tests/data/xet``: one 330,000-byte file, five chunks, LZ4 and uncompressed)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import httpx
import lz4.frame
import pytest
from huggingface_hub import HfApi

from hubtools.localhub.xet.format import (
    COMPRESSION_BG4_LZ4,
    SHARD_TAG,
    XetFormatError,
    decompress_chunk,
    parse_shard_files,
    parse_xorb,
)
from hubtools.localhub.xet.hashing import file_hash, hash_to_hex, hex_to_hash, verification_hash

DATA = Path(__file__).parent / "data" / "xet"
REAL_XORB = DATA / "5efb93a0f1fcfdba8539f0d7ea3adf3ae9e82f3ad6166dd6edc6905a078dd90d.xorb"
REAL_SHARD = DATA / "sample.bin.shard"
REAL_FILE_SIZE = 330_000


# ---- formats and hashes, against what the real client produced ------------------------------------


def test_hash_strings_use_the_protocols_word_order():
    raw = bytes(range(32))  # the specification's example (its printed string drops the "10")
    assert hash_to_hex(raw) == "07060504030201000f0e0d0c0b0a09081716151413121110" "1f1e1d1c1b1a1918"
    assert hex_to_hash(hash_to_hex(raw)) == raw


def test_a_real_xorb_hashes_to_the_name_the_client_gave_it():
    xorb = parse_xorb(REAL_XORB.read_bytes())
    assert hash_to_hex(xorb.hash) == REAL_XORB.stem
    assert len(xorb.chunks) == 5 and sum(len(chunk) for chunk in xorb.chunks) == REAL_FILE_SIZE


def test_a_real_shard_describes_the_file_its_xorb_holds():
    xorb = parse_xorb(REAL_XORB.read_bytes())
    [info] = parse_shard_files(REAL_SHARD.read_bytes())
    [term] = info.terms
    assert hash_to_hex(term.xorb_hash) == REAL_XORB.stem
    assert (term.chunk_start, term.chunk_end, term.unpacked_bytes) == (0, 5, REAL_FILE_SIZE)
    # the file hash, the term's verification hash and the sha256 the client computed, recomputed here
    assert file_hash(list(zip(xorb.chunk_hashes, map(len, xorb.chunks)))) == info.file_hash
    assert verification_hash(xorb.chunk_hashes) == info.verification[0]
    assert hash_to_hex(info.sha256) == hashlib.sha256(b"".join(xorb.chunks)).hexdigest()


def test_byte_grouped_chunks_are_regrouped():
    data = bytes(range(256)) * 3 + b"abc"  # not a multiple of 4
    grouped = b"".join(data[lane::4] for lane in range(4))
    assert decompress_chunk(COMPRESSION_BG4_LZ4, lz4.frame.compress(grouped), len(data)) == data


def test_damaged_objects_are_refused_with_a_reason():
    body = bytearray(REAL_XORB.read_bytes())
    body[100] ^= 1  # a literal inside the first (LZ4) chunk: it still decompresses, to other bytes
    assert hash_to_hex(parse_xorb(bytes(body)).hash) != REAL_XORB.stem
    body[5] ^= 1  # the first chunk's stated size
    with pytest.raises(XetFormatError, match="decompresses to"):
        parse_xorb(bytes(body))
    with pytest.raises(XetFormatError, match="ends inside"):
        parse_xorb(REAL_XORB.read_bytes()[:-10])
    with pytest.raises(XetFormatError, match="header tag"):
        parse_shard_files(b"\0" * 200)
    with pytest.raises(XetFormatError, match="ends inside"):
        parse_shard_files(SHARD_TAG + (2).to_bytes(8, "little") + bytes(8) + bytes(20))


# ---- the CAS API itself ---------------------------------------------------------------------------


def _write_token(local_hub, token: str, repo_id: str) -> dict:
    answer = httpx.get(f"{local_hub.url}/api/models/{repo_id}/xet-write-token/main",
                       headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert answer.headers["X-Xet-Cas-Url"] == body["casUrl"] and answer.headers["X-Xet-Access-Token"] == body["accessToken"]
    return body


def _shard_variants() -> tuple[bytes, bytes]:
    """The real shard with its one term's verification hash wrong, and with no verification entries at all
    (what someone who knows a file's xorb and file hashes, but not its chunks, could write)."""
    shard = REAL_SHARD.read_bytes()
    header, file_header, term, verification, rest = shard[:48], shard[48:96], shard[96:144], shard[144:192], shard[192:]
    wrong = header + file_header + term + bytes(32) + verification[32:] + rest
    flags = int.from_bytes(file_header[32:36], "little") & ~(1 << 31)
    unverified = header + file_header[:32] + flags.to_bytes(4, "little") + file_header[36:] + term + rest
    return wrong, unverified


def test_a_shard_must_prove_it_holds_the_chunks(local_hub):
    """A file is only rebuilt for a shard whose every term carries the verification hash of its chunks: a
    xorb hash, file hash or sha256 alone gets no one any content (as on the Hub)."""
    own, theirs = f"{local_hub.user}/cas-{uuid.uuid4().hex[:6]}", f"{local_hub.other_user}/cas-{uuid.uuid4().hex[:6]}"
    HfApi(endpoint=local_hub.url, token=local_hub.token).create_repo(own)
    HfApi(endpoint=local_hub.url, token=local_hub.other_token).create_repo(theirs)
    mine, other = _write_token(local_hub, local_hub.token, own), _write_token(local_hub, local_hub.other_token, theirs)
    sha256 = hash_to_hex(parse_shard_files(REAL_SHARD.read_bytes())[0].sha256)
    blob = local_hub.data_dir / "blobs" / sha256[:2] / sha256[2:]

    def post(grant: dict, path: str, body: bytes) -> httpx.Response:
        return httpx.post(grant["casUrl"] + path, content=body, headers={"authorization": f"Bearer {grant['accessToken']}"})

    if not (local_hub.data_dir / "xet" / "xorbs" / REAL_XORB.stem[:2] / REAL_XORB.stem).exists():
        missing = post(mine, "/v1/shards", REAL_SHARD.read_bytes())
        assert missing.status_code == 400 and "was not uploaded" in missing.json()["error"]
    assert post(mine, f"/v1/xorbs/default/{'0' * 64}", REAL_XORB.read_bytes()).status_code == 400  # wrong hash
    assert post(mine, f"/v1/xorbs/default/{REAL_XORB.stem}", REAL_XORB.read_bytes()).json() in (
        {"was_inserted": True}, {"was_inserted": False})
    wrong, unverified = _shard_variants()
    for body in (wrong, unverified):
        refused = post(other, "/v1/shards", body)
        assert refused.status_code == 400 and "verification" in refused.json()["error"], refused.text
    assert not blob.exists()
    assert post(mine, "/v1/shards", REAL_SHARD.read_bytes()).status_code == 200
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha256
    # without a token, or with a read token, nothing is written
    assert httpx.post(mine["casUrl"] + "/v1/shards", content=b"").status_code == 401
    reader = httpx.get(f"{local_hub.url}/api/models/{own}/xet-read-token/main",
                       headers={"authorization": f"Bearer {local_hub.token}"}).json()
    assert post(reader, "/v1/shards", REAL_SHARD.read_bytes()).status_code == 403


def test_tokens_follow_the_repos_access_rules(local_hub):
    api = HfApi(endpoint=local_hub.url, token=local_hub.token)
    repo_id = f"{local_hub.user}/cas-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo_id, private=True)
    url = f"{local_hub.url}/api/models/{repo_id}/xet-write-token/main"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Bearer {local_hub.other_token}"}).status_code == 404
    gated = f"{local_hub.user}/cas-gated-{uuid.uuid4().hex[:6]}"
    api.create_repo(gated)
    api.update_repo_settings(gated, gated="manual")
    read = f"{local_hub.url}/api/models/{gated}/xet-read-token/main"
    assert httpx.get(read).status_code == 401
    assert httpx.get(read, headers={"authorization": f"Bearer {local_hub.other_token}"}).status_code == 403
    assert httpx.get(read, headers={"authorization": f"Bearer {local_hub.token}"}).status_code == 200


# ---- the stock clients, in a subprocess as a user runs them ------------------------------------------


def _env(local_hub) -> dict[str, str]:
    env = {**os.environ, "HF_TOKEN": local_hub.token, "HF_HUB_DISABLE_PROGRESS_BARS": "0"}
    env.pop("HF_HUB_DISABLE_XET", None)
    return env


def _run(local_hub, script: str, *args: str) -> str:
    prelude = ("import os\nfrom huggingface_hub.utils._runtime import is_xet_available\n"
               "assert 'HF_HUB_DISABLE_XET' not in os.environ and is_xet_available(), 'needs hf_xet, enabled'\n")
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script), *args], env=_env(local_hub),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _xorbs(local_hub) -> set[str]:
    return {path.name for path in (local_hub.data_dir / "xet" / "xorbs").rglob("*") if path.is_file()}


_ROUND_TRIP = """
import sys
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
api = HfApi()
repo_id, big, folder = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
api.create_repo(repo_id)
api.upload_file(path_or_fileobj=big, path_in_repo="big.bin", repo_id=repo_id)
assert Path(hf_hub_download(repo_id, "big.bin")).read_bytes() == big.read_bytes()
api.upload_folder(folder_path=folder, repo_id=repo_id, path_in_repo="model")
local = Path(snapshot_download(repo_id))
for path in folder.rglob("*"):
    if path.is_file():
        assert (local / "model" / path.relative_to(folder)).read_bytes() == path.read_bytes(), path
print("ok")
"""


def _model_folder(root: Path) -> Path:
    """A model-shaped folder: weights of a real model's order of size, a config, a card."""
    folder = root / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(os.urandom(12_000_000))
    (folder / "vae.safetensors").write_bytes(bytes(range(256)) * 20_000 + os.urandom(3_000_000))
    (folder / "unet" / "config.json").write_text('{"sample_size": 64}\n')
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    return folder


def test_upload_file_25_mb_and_upload_folder_round_trip_through_xet(local_hub, tmp_path):
    repo_id = f"{local_hub.user}/xet-{uuid.uuid4().hex[:8]}"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(25 * 1024 * 1024))
    before = _xorbs(local_hub)
    assert _run(local_hub, _ROUND_TRIP, repo_id, str(big), str(_model_folder(tmp_path))).strip().endswith("ok")
    assert _xorbs(local_hub) - before  # it went through Xet, not inline or LFS
    info = HfApi(endpoint=local_hub.url).model_info(repo_id, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert siblings["big.bin"].lfs.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert siblings["model/unet/diffusion_pytorch_model.safetensors"].lfs.size == 12_000_000
    assert siblings["model/README.md"].lfs is None  # a card stays a regular file, as on the Hub


def _small_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "upload"
    (folder / "images").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# hello\n")
    (folder / "weights.safetensors").write_bytes(os.urandom(300_000))
    for index in range(3):
        (folder / "images" / f"{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(5_000))
    return folder


def test_hf_cli_upload_with_xet_enabled(local_hub, tmp_path):
    repo_id = f"{local_hub.user}/xet-cli-{uuid.uuid4().hex[:8]}"
    hf = str(Path(sys.executable).with_name("hf"))
    env = _env(local_hub)
    folder = _small_folder(tmp_path)
    before = _xorbs(local_hub)
    first = subprocess.run([hf, "upload", repo_id, str(folder), "."], env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr
    assert _xorbs(local_hub) - before
    api = HfApi(endpoint=local_hub.url)
    commits = len(api.list_repo_commits(repo_id))
    again = subprocess.run([hf, "upload", repo_id, str(folder), "."], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    # unchanged files are recognised (same oid as the client computes), so no empty commit
    assert len(api.list_repo_commits(repo_id)) == commits
    siblings = {s.rfilename: s for s in api.model_info(repo_id, files_metadata=True).siblings}
    assert siblings["weights.safetensors"].lfs.sha256 == hashlib.sha256(
        (folder / "weights.safetensors").read_bytes()).hexdigest()
    assert siblings["images/2.png"].lfs is not None and siblings["README.md"].lfs is None


_DATASET = """
import sys
import datasets
repo_id = sys.argv[1]
datasets.Dataset.from_dict({"text": ["a", "b", "c"], "n": [1, 2, 3]}).push_to_hub(repo_id)
loaded = datasets.load_dataset(repo_id, split="train", download_mode="force_redownload")
assert loaded["text"] == ["a", "b", "c"] and loaded["n"] == [1, 2, 3], loaded
print("ok")
"""


def test_dataset_push_to_hub_and_load_dataset_with_xet(local_hub):
    repo_id = f"{local_hub.user}/xet-ds-{uuid.uuid4().hex[:8]}"
    before = _xorbs(local_hub)
    assert _run(local_hub, _DATASET, repo_id).strip().endswith("ok")
    assert _xorbs(local_hub) - before  # the parquet shard went through Xet


_DIFFUSERS = """
import sys
import torch
from diffusers import DiffusionPipeline
from hubtools.tinymodel import build_tiny_pipeline
repo_id = sys.argv[1]
pipe = build_tiny_pipeline("sd")
# weights no other test uploaded: hf_xet's dedup cache would otherwise send no new xorb
with torch.no_grad():
    for parameter in pipe.unet.parameters():
        parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(int(sys.argv[2]))))
pipe.push_to_hub(repo_id)
again = DiffusionPipeline.from_pretrained(repo_id)
for name in ("unet", "vae", "text_encoder"):
    ours, theirs = getattr(pipe, name).state_dict(), getattr(again, name).state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
print("ok")
"""


def test_diffusers_push_to_hub_and_from_pretrained_with_xet(local_hub):
    repo_id = f"{local_hub.user}/xet-pipe-{uuid.uuid4().hex[:8]}"
    before = _xorbs(local_hub)
    assert _run(local_hub, _DIFFUSERS, repo_id, str(uuid.uuid4().int % 2**31)).strip().endswith("ok")
    assert _xorbs(local_hub) - before


_TWO_ACCOUNTS = """
import os, sys
from huggingface_hub import HfApi, hf_hub_download
weights = os.urandom(400_000)
for token, repo_id in ((sys.argv[1], sys.argv[2]), (sys.argv[3], sys.argv[4])):
    api = HfApi(token=token)
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id=repo_id)
    assert open(hf_hub_download(repo_id, "w.safetensors", token=token), "rb").read() == weights
print("ok")
"""


def test_the_same_content_from_two_accounts_on_one_machine(local_hub):
    """hf_xet remembers what it uploaded (in its cache) and sends only a shard the second time, naming the
    first upload's xorbs: that must work across repos and accounts, as it does on the Hub."""
    first, second = f"{local_hub.user}/xet-a-{uuid.uuid4().hex[:6]}", f"{local_hub.other_user}/xet-b-{uuid.uuid4().hex[:6]}"
    assert _run(local_hub, _TWO_ACCOUNTS, local_hub.token, first, local_hub.other_token, second).strip().endswith("ok")


_SEEDED_UPLOAD = """
import random, sys
from huggingface_hub import HfApi, hf_hub_download
repo_id, seed = sys.argv[1], int(sys.argv[2])
weights = random.Random(seed).randbytes(400_000)
api = HfApi()
api.create_repo(repo_id)
api.upload_file(path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id=repo_id)
assert open(hf_hub_download(repo_id, "w.safetensors"), "rb").read() == weights
print("ok")
"""


def test_a_restored_backup_takes_uploads_that_name_xorbs_the_client_remembers(tmp_path):
    """hf_xet keeps what it uploaded in its cache and later sends only a shard naming those xorbs: gc keeps
    xorbs and a backup copies them, so the same client can upload to a hub restored from the backup."""
    from hubtools.localhub import serve_in_background

    data, copy, token = tmp_path / "data", tmp_path / "backup", "alice-xet-backup-token"
    env = {**os.environ, "HF_TOKEN": token, "HF_XET_CACHE": str(tmp_path / "xet-cache"),
           "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("HF_HUB_DISABLE_XET", None)

    def upload(url: str, repo_id: str) -> None:
        result = subprocess.run([sys.executable, "-c", _SEEDED_UPLOAD, repo_id, "7"], env={**env, "HF_ENDPOINT": url},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]

    with serve_in_background(data, tokens={"alice": token}) as hub:
        port = int(hub.url.rsplit(":", 1)[1])
        upload(hub.url, "alice/first")
    xorbs = sorted(path.name for path in (data / "xet" / "xorbs").rglob("*") if path.is_file())
    assert xorbs
    backup = subprocess.run([sys.executable, "-m", "hubtools", "hub", "backup", str(copy), "--data", str(data)],
                            capture_output=True, text=True, timeout=300)
    assert backup.returncode == 0, backup.stderr
    assert sorted(path.name for path in (copy / "xet" / "xorbs").rglob("*") if path.is_file()) == xorbs
    with serve_in_background(copy, port=port, tokens={"alice": token}) as hub:
        upload(hub.url, "alice/second")  # same bytes: the client sends a shard naming the first upload's xorbs
    assert sorted(path.name for path in (copy / "xet" / "xorbs").rglob("*") if path.is_file()) == xorbs
