"""Progress: logs on rank 0 every `frequent` steps only, and its speed medians skip the first window."""
import torch

from qgface_plugin.arcface.progress import Progress, format_eta, peak_memory


def test_logs_every_frequent_steps_on_rank_0_only(capsys):
    stats = {"loss": torch.tensor(2.5), "loss_cls": torch.tensor(2.0), "loss_con": torch.tensor(0.5),
             "hq_fraction": torch.tensor(0.75), "threshold": torch.tensor(0.2)}
    p = Progress(0, total_step=7, num_epoch=1, frequent=3, images_per_step=8)
    for step in range(1, 8):
        p.step(step, 0, stats, 0.1, skipped_total=1 if step > 4 else 0, data_wait=0.01)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [h["step"] for h in p.history] == [3, 6, 7] and len(lines) == 3
    assert "step 6/7" in lines[1] and "loss 2.500" in lines[1] and "hq 75%" in lines[1] and "skipped 1" in lines[1]
    assert "skipped" not in lines[0]
    s = p.summary()
    assert s["samples_per_s"] > 0 and s["step_s"] > 0 and abs(s["data_wait_s"] - 0.01) < 1e-9
    other = Progress(1, total_step=7, num_epoch=1, frequent=3, images_per_step=8)
    for step in range(1, 8):
        other.step(step, 0, stats, 0.1)
    assert other.history == [] and capsys.readouterr().out == ""
    assert other.summary() == {"samples_per_s": None, "step_s": None, "data_wait_s": None}


def test_eta_format_and_peak_memory():
    assert format_eta(3725.9) == "1h02m05s" and format_eta(-3) == "0h00m00s"
    m = peak_memory(torch.device("cpu"))
    assert m["memory_kind"] == "peak_rss" and m["peak_memory_bytes"] > 10 * 2 ** 20
