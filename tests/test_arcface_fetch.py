"""qgface_plugin.arcface.fetch through tools/fetch_arcface_torch.py, without network: a tiny git repository of
stubs stands in for insightface."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _proc import ROOT, clean_env, needs_git, tool
from qgface_plugin.arcface import checkout


_STUBS = {  # just enough for check_api: the names and arguments the plugin relies on
    "partial_fc_v2.py": (
        "class PartialFC_V2:\n"
        "    def __init__(self, margin_loss, embedding_size, num_classes, sample_rate=1.0, fp16=False):\n"
        "        self.class_start = 0\n        self.num_local: int = num_classes\n"
        "        self.weight = None\n        self.margin_softmax = margin_loss\n"
        "    def forward(self, local_embeddings, local_labels):\n        return None\n"
        "def AllGather(tensor, *gather_list):\n    return gather_list\n"),
    "dataset.py": (
        "class MXFaceDataset:\n    def __init__(self, root_dir, local_rank):\n        pass\n"
        "class SyntheticDataset:\n    pass\n"
        "def get_dataloader(root_dir, local_rank, batch_size, dali=False):\n    pass\n"),
    "losses.py": ("class CombinedMarginLoss:\n"
                  "    def __init__(self, s, m1, m2, m3, interclass_filtering_threshold=0):\n        pass\n"),
    "lr_scheduler.py": ("class PolynomialLRWarmup:\n"
                        "    def __init__(self, optimizer, warmup_iters, total_iters=5, power=1.0):\n        pass\n"),
    "backbones/__init__.py": "def get_model(name, **kwargs):\n    pass\n",
    "utils/__init__.py": "",
    "utils/utils_config.py": "def get_config(config_file):\n    pass\n",
    "utils/utils_distributed_sampler.py": (
        "def setup_seed(seed, cuda_deterministic=True):\n    pass\n"
        "def sync_random_seed(seed=None, device='cuda'):\n    return seed\n"
        "class DistributedSampler:\n    pass\n"),
    "eval/__init__.py": "",
    "eval/verification.py": ("def test(data_set, backbone, batch_size, nfolds=10):\n    pass\n"
                             "def load_bin(path, image_size):\n    pass\n"),
    "train_v2.py": "print('upstream')\n",
}

_PATCH = ("--- a/train_v2.py\n+++ b/train_v2.py\n@@ -1 +1,2 @@\n print('upstream')\n+print('patched')\n")


def _git(*args, cwd=None):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def fake_insightface(tmp_path):
    """A git repository with recognition/arcface_torch stubs in one commit; returns (path, commit)."""
    repo = tmp_path / "insightface"
    for rel, text in _STUBS.items():
        f = repo / checkout.ARCFACE_SUBDIR / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    (repo / "README.md").write_text("not extracted\n")
    _git("init", "-q", str(repo))
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "stubs", cwd=repo)
    return repo, _git("rev-parse", "HEAD", cwd=repo)


@pytest.fixture
def patches_dir(tmp_path):
    d = tmp_path / "patches"
    d.mkdir()
    (d / "0001-train.patch").write_text(_PATCH)
    return d


@needs_git
def test_fetch_from_a_clone_extracts_patches_records_and_prints_dest(fake_insightface, patches_dir, tmp_path):
    repo, commit = fake_insightface
    dest = tmp_path / "third_party" / "arcface_torch"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "fetch_arcface_torch.py"), "--source", str(repo),
                           "--commit", commit, "--dest", str(dest), "--patches-dir", str(patches_dir)],
                          capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(dest)
    assert "applying 0001-train.patch" in proc.stderr
    assert (dest / "train_v2.py").read_text() == "print('upstream')\nprint('patched')\n"
    assert not (dest / "README.md").exists() and (dest / "partial_fc_v2.py").is_file()
    record = json.loads((dest / checkout.FETCH_RECORD).read_text())
    assert record["commit"] == commit and record["source"] == str(repo)
    assert [p["name"] for p in record["patches"]] == ["0001-train.patch"]
    assert record["patched_files"] == ["train_v2.py"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["arcface_torch"]  # no staging left behind


@needs_git
def test_fetch_from_a_git_dir_refuses_to_overwrite_without_force(fake_insightface, tmp_path, capsys):
    fetch = tool("fetch_arcface_torch")
    repo, commit = fake_insightface
    bare = tmp_path / "insightface.git"
    _git("clone", "-q", "--bare", str(repo), str(bare))
    dest = tmp_path / "dest"
    args = ["--source", str(bare), "--commit", commit, "--dest", str(dest), "--no-patches"]
    assert fetch.main(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(dest)
    assert json.loads((dest / checkout.FETCH_RECORD).read_text())["patches"] == []
    (dest / "sentinel").write_text("old")
    assert fetch.main(args) == 2  # bad input: the destination exists
    assert "--force" in capsys.readouterr().err and (dest / "sentinel").exists()
    assert fetch.main(args + ["--force"]) == 0
    assert not (dest / "sentinel").exists() and (dest / "train_v2.py").read_text() == "print('upstream')\n"


@needs_git
def test_fetch_errors_leave_nothing_behind(fake_insightface, tmp_path, capsys):
    fetch = tool("fetch_arcface_torch")
    repo, commit = fake_insightface
    out = tmp_path / "out"
    # a commit the source does not have
    assert fetch.main(["--source", str(repo), "--commit", "0" * 40, "--dest", str(out / "a")]) == 2  # bad input
    assert "is not in" in capsys.readouterr().err
    # a patch that does not apply
    bad = tmp_path / "bad_patches"
    bad.mkdir()
    (bad / "0001-bad.patch").write_text(_PATCH.replace("print('upstream')\n+", "print('other')\n+"))
    assert fetch.main(["--source", str(repo), "--commit", commit, "--dest", str(out / "b"),
                       "--patches-dir", str(bad)]) == 1  # a step failed
    assert "0001-bad.patch does not apply" in capsys.readouterr().err
    # a folder that is not a git repository
    assert fetch.main(["--source", str(tmp_path), "--dest", str(out / "c")]) == 2  # bad input
    assert "neither a git clone" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []


@needs_git
def test_fetch_clone_failure_exits_1_with_the_alternatives(tmp_path, capsys):
    fetch = tool("fetch_arcface_torch")
    code = fetch.main(["--url", (tmp_path / "no-such-repo").as_uri(), "--dest", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 1  # a step failed (no network?)
    assert "cloning" in err and "--source <insightface clone or git directory>" in err
    assert f"{checkout.ENV_VAR}=" in err and not (tmp_path / "d").exists()


@needs_git
def test_fetch_clone_path_works_offline_from_a_local_url(fake_insightface, tmp_path, capsys):
    fetch = tool("fetch_arcface_torch")
    repo, commit = fake_insightface
    dest = tmp_path / "cloned"
    assert fetch.main(["--url", repo.as_uri(), "--commit", commit, "--dest", str(dest), "--no-patches"]) == 0
    assert (dest / "partial_fc_v2.py").is_file()

