"""qgface_plugin.arcface.checkout: finding the arcface_torch folder and hashing its files (no upstream needed)."""
from __future__ import annotations

import subprocess

import pytest

from _proc import needs_git
from qgface_plugin.arcface import checkout
from qgface_plugin.errors import QGFaceConfigError


def test_find_root_not_found_says_how_to_get_it(isolated):
    with pytest.raises(checkout.UpstreamNotFoundError) as info:
        checkout.find_root()
    msg = str(info.value)
    assert isinstance(info.value, QGFaceConfigError)
    assert "python tools/fetch_arcface_torch.py\n" in msg
    assert "python tools/fetch_arcface_torch.py --source <insightface clone or git dir>" in msg
    assert f"{checkout.ENV_VAR}=<path to insightface>/{checkout.ARCFACE_SUBDIR}" in msg
    assert f"${checkout.ENV_VAR}: not set" in msg
    assert str(isolated / "cwd" / "third_party" / "arcface_torch") in msg
    assert str(isolated / "repo" / "third_party" / "arcface_torch") in msg
    assert checkout.PINNED_COMMIT in msg


def test_find_root_order_argument_env_cwd_repo(isolated, fake_root, monkeypatch):
    repo_copy = fake_root(isolated / "repo" / "third_party" / "arcface_torch")
    assert checkout.find_root() == repo_copy.resolve()
    cwd_copy = fake_root(isolated / "cwd" / "third_party" / "arcface_torch")
    assert checkout.find_root() == cwd_copy.resolve()
    env_copy = fake_root(isolated / "env")
    monkeypatch.setenv(checkout.ENV_VAR, str(env_copy))
    assert checkout.find_root() == env_copy.resolve()
    arg_copy = fake_root(isolated / "arg")
    assert checkout.find_root(arg_copy) == arg_copy.resolve()


def test_find_root_explicit_places_do_not_fall_back(isolated, fake_root, monkeypatch):
    fake_root(isolated / "cwd" / "third_party" / "arcface_torch")
    with pytest.raises(checkout.UpstreamNotFoundError, match="from the argument"):
        checkout.find_root(isolated / "nowhere")
    monkeypatch.setenv(checkout.ENV_VAR, str(isolated / "nowhere"))
    with pytest.raises(checkout.UpstreamNotFoundError, match=rf"from \${checkout.ENV_VAR}\): does not exist"):
        checkout.find_root()


def test_find_root_accepts_an_insightface_checkout(isolated, fake_root):
    nested = fake_root(isolated / "insightface" / checkout.ARCFACE_SUBDIR)
    assert checkout.find_root(isolated / "insightface") == nested.resolve()


@needs_git
def test_git_blob_sha1_matches_git_hash_object(tmp_path):
    f = tmp_path / "a.py"
    f.write_bytes(b"print('x')\n\x00bytes\r\n")
    expected = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout
    assert checkout.git_blob_sha1(f) == expected.strip()



def test_fetch_record_written_and_read_back_marks_the_patched_files(tmp_path, fake_root, monkeypatch):
    monkeypatch.setattr(checkout, "REPO_ROOT", tmp_path / "repo")  # no patches/ of ours
    root = fake_root(tmp_path / "copy")
    for rel in checkout.REQUIRED_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("# not the pinned content\n")
    patch = tmp_path / "0001-x.patch"
    patch.write_text("--- a/dataset.py\n+++ b/dataset.py\n@@ -1 +1 @@\n-a\n+b\n")
    record = checkout.write_fetch_record(root, "c" * 40, "somewhere", [checkout.patch_record(patch)])
    assert checkout.read_fetch_record(root) == record
    assert record["patched_files"] == ["dataset.py"] and record["patches"][0]["files"] == ["dataset.py"]
    assert checkout.read_fetch_record(tmp_path) == {}
    with pytest.warns(checkout.UpstreamVersionWarning):
        changed = checkout.check_files(root)
    assert set(changed) == set(checkout.PINNED_BLOBS) - {"dataset.py", *checkout.PATCHED_FILES}
