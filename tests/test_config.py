"""Config loading and validation (no arcface_torch needed)."""
import pytest

from qgface_plugin import QGFaceConfigError
from qgface_plugin.arcface.config import available_configs, load_config, parse_overrides, validate_config


def _write(tmp_path, body, name="job.py"):
    path = tmp_path / name
    path.write_text("from easydict import EasyDict as edict\nconfig = edict()\n" + body)
    return path


BASE = ("config.rec = 'synthetic'\nconfig.num_classes = 10\nconfig.num_image = 1000\n"
        "config.num_epoch = 2\n")


def test_every_shipped_config_loads_and_validates():
    names = available_configs()
    assert {"qgface_demo_cpu", "qgface_vgg2_ir34_authors", "qgface_ms1mv2_r50", "arcface_ms1mv2_r50",
            "qgface_ms1mv2_r100", "arcface_ms1mv2_r100", "qgface_wf4m_r100", "arcface_wf4m_r100"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.config_name == name and cfg.loss in ("qgface", "arcface", "cosface")
    authors = load_config("qgface_vgg2_ir34_authors")
    assert (authors.network, authors.num_epoch, authors.lr, authors.lr_steps, authors.qgface_threshold,
            authors.qgface_queue_size) == ("r34", 12, 0.2, [6, 9], 0.2, 9131)


def test_merge_onto_base_defaults_and_output(tmp_path):
    cfg = load_config(_write(tmp_path, BASE + "config.lr = 0.05\n"))
    assert cfg.lr == 0.05 and cfg.qgface_threshold == 0.2 and cfg.qgface_margin == "adaface"
    assert cfg.output.replace("\\", "/") == "work_dirs/job"


def test_loads_are_independent(tmp_path):
    a = load_config(_write(tmp_path, BASE + "config.qgface_lambda = 0.5\n", "a.py"))
    b = load_config(_write(tmp_path, BASE, "b.py"))
    assert a.qgface_lambda == 0.5 and b.qgface_lambda == 1.0
    a.val_targets.append("lfw")
    assert load_config(tmp_path / "b.py").val_targets == []


def test_overrides_and_parse():
    assert parse_overrides(["lr=0.05", "val_targets=['lfw']", "rec=/data/x", "fp16=True"]) == {
        "lr": 0.05, "val_targets": ["lfw"], "rec": "/data/x", "fp16": True}
    with pytest.raises(QGFaceConfigError, match="key=value"):
        parse_overrides(["lr"])


def test_unknown_qgface_key_suggests_the_closest(tmp_path):
    with pytest.raises(QGFaceConfigError, match="unknown config key 'qgface_treshold'.*'qgface_threshold'"):
        load_config(_write(tmp_path, BASE + "config.qgface_treshold = 0.3\n"))


def test_other_unknown_keys_warn(tmp_path):
    with pytest.warns(UserWarning, match="'my_key' is not used"):
        load_config(_write(tmp_path, BASE + "config.my_key = 1\n"))


@pytest.mark.parametrize("body,match", [
    ("config.loss = 'sphereface'\n", "config.loss must be one of"),
    ("config.num_classes = 0\n", "num_classes must be a positive integer, got 0"),
    ("config.num_image = 10\n", "smaller than batch_size"),
    ("config.gradient_acc = 4\n", "gradient_acc=4 is not supported"),
    ("config.dali = True\n", "DALI"),
    ("config.optimizer = 'lamb'\n", "'lamb'"),
    ("config.lr_schedule = 'cosine'\n", "'cosine'"),
    ("config.lr_schedule = 'step'\nconfig.lr_steps = [3]\n", "lr_steps"),
    ("config.warmup_epoch = 5\n", "warmup_epoch"),
])
def test_bad_values(tmp_path, body, match):
    with pytest.raises(QGFaceConfigError, match=match):
        load_config(_write(tmp_path, BASE + body))


def test_missing_required_and_missing_file(tmp_path):
    with pytest.raises(QGFaceConfigError, match="must set rec, num_classes, num_image, num_epoch"):
        load_config(_write(tmp_path, ""))
    with pytest.raises(QGFaceConfigError, match="not found.*qgface_demo_cpu"):
        load_config("no_such_config")
    broken = tmp_path / "broken.py"
    broken.write_text("config = (\n")
    with pytest.raises(QGFaceConfigError, match="cannot load config .*broken.py"):
        load_config(broken)


def test_validate_without_loading():
    cfg = load_config("qgface_demo_cpu")
    cfg.num_epoch = -1
    with pytest.raises(QGFaceConfigError, match="num_epoch"):
        validate_config(cfg)


@pytest.mark.parametrize("qg,twin,allowed", [
    ("qgface_ms1mv2_r100", "arcface_ms1mv2_r100", {"loss", "qgface_queue_size"}),
    ("qgface_ms1mv2_r50", "arcface_ms1mv2_r50", {"loss", "qgface_queue_size"}),
    ("qgface_wf4m_r100", "arcface_wf4m_r100", {"loss", "qgface_queue_size"}),
    ("cosface_wf4m_r100", "arcface_wf4m_r100", {"loss", "margin_list"}),
    ("arcface_ms1mv2_r50", "arcface_ms1mv2_r100", {"network"}),
])
def test_twin_configs_differ_only_in_what_they_change(qg, twin, allowed):
    a, b = load_config(qg), load_config(twin)
    differ = {k for k in a if a[k] != b[k]} - {"config_name", "config_path", "output"}
    assert differ == allowed
