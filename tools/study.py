#!/usr/bin/env python
"""QGFace against its baselines: arms x seeds trained by the real loop on one record set, one report.

    python tools/study.py --profile cpu --arms qgface,adaface,arcface --seeds 2 --output work_dirs/study
    python tools/study.py --arms paper --seeds 3 --output work_dirs/study_paper
    python tools/study.py --arms qgface,my_b:qgface_demo_cpu+qgface_threshold=0.3 --output work_dirs/study_b
    python tools/study.py --quick --output work_dirs/study_quick    # a tiny study, seconds

Arms (qgface_plugin.study.arms): shipped names (qgface, adaface, arcface, arcface_flip, qgface_noproxy,
qgface_inbatch, qgface_b0.1, qgface_b0.2, qgface_b0.3), the set "paper" (all of them), or config specs
CONFIG[+key=value...], optionally named NAME:SPEC. Shipped arms are the profile's base config with a few keys
changed; every arm gets the study's data, budget and seed. Single-view arms (ArcFace) get twice the batch and
twice the epochs, so every arm forwards the same 2B rows per step for the same number of steps; "arcface" sees
QGFace's degradation distribution (one view per image, L with p = 0.5 else H), "arcface_flip" the standard
flipped H view only.

Data: the synthetic mixed-quality set of tools/make_synthetic_data.py (sized by the profile) in --rec (default
<output>/data; reused when it was made with the same arguments). Pairs: HQ-HQ (synthetic_val_hq.bin), HQ-LQ
(synthetic_val_lq.bin), LQ-LQ (study_val_lqlq.bin: the HQ-HQ pairs with both images degraded, seeded).
Quality indicator: the AUROC of the raw feature norm separating clean held-out images from degraded copies,
every --auroc-every steps during training and at the end. --data BENCHMARKS also runs the evaluation suite on
every trained model.

Writes <output>/study.md, study.json and study.png (per arm: mean and Student-t interval over seeds; QGFace
minus each baseline: paired two-stage bootstrap over seeds and pairs; the QGFace arms' training diagnostics:
rows classified HQ, pairs contrasted, queue fill), and per run
<output>/runs/<arm>/seed<k>/result.json: a re-run skips the runs that have one (resume). Profiles: cpu (a
2-core machine: 3 arms x 2 seeds in about 45 minutes, data and evaluation included; mbf, embedding 128), gpu
(one device: 80k images, r18, fp16, larger pair sets; NOT tested here). Exit status 0 when done, 1 when a run
failed (training diverged), 2 on bad input.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

from qgface_plugin import cli
from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError, QGFaceNonFiniteError
from qgface_plugin.eval import suite
from qgface_plugin.eval.cli import SHARED_FLAGS
from qgface_plugin.study import arms as arms_mod
from qgface_plugin.study import report
from qgface_plugin.study.data import prepare_data, probe_set
from qgface_plugin.study.runner import PROFILES, default_evaluator, default_trainer, fmt_seconds, run_study

TOOLS_DIR = Path(__file__).resolve().parent
load_tool = suite.tool_loader(TOOLS_DIR)


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0], raw_description=False)
    p.add_argument("--output", required=True, help="output folder (study.md/.json/.png, runs/, data/)")
    p.add_argument("--arms", nargs="+", default=["qgface,adaface,arcface"],
                   help="arms: shipped names (" + ", ".join(arms_mod.ARMS) + "), the set 'paper', or "
                        "CONFIG[+key=value...] specs (NAME:SPEC to name one); commas or spaces between them")
    p.add_argument("--seeds", type=int, default=2, help="seeds per arm (config.seed = --seed + k, k = 0..N-1)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the runs, also the data's and the bootstrap's")
    p.add_argument("--profile", choices=("cpu", "gpu"), default="cpu",
                   help="study size: cpu (2 cores, 3 arms x 2 seeds in <= 45 min) or gpu (one device; untested "
                        "here)")
    p.add_argument("--quick", action="store_true", help="a tiny study (seconds; for the tests), instead of --profile")
    p.add_argument("--rec", default=None, help="data folder: the synthetic set, made there unless it holds one made "
                                               "with the profile's arguments; a folder holding another record set is "
                                               "refused, never overwritten (default: <output>/data)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the two-view arms (single-view arms: twice) (default: the profile's)")
    p.add_argument("--auroc-every", type=int, default=None,
                   help="steps between AUROC measurements during training (default: the profile's)")
    p.add_argument("--probes", type=int, default=None,
                   help="clean images of the AUROC probe set, each with a degraded copy (default: the profile's)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the paired differences; "
                                                               "0 = no intervals")
    p.add_argument("--level", type=float, default=0.95, help="level of every interval")
    p.add_argument("--reference", default=None, help="arm the differences are taken from (default: qgface when it "
                                                     "is an arm, else the first)")
    p.add_argument("--no-match-rows", action="store_true",
                   help="train single-view arms with the config's own batch and epochs (default: 2x both, so "
                        "every arm forwards 2B rows per step for the same steps)")
    p.add_argument("--data", default=None, help="benchmark root for the evaluation suite, run on every trained "
                                                "model (default: none: the study's pair sets only)")
    for flag, kw in SHARED_FLAGS[2:]:
        p.add_argument(flag, **kw)
    suite.add_suite_flags(p)
    p.set_defaults(device=None)
    return p


def _suite_runner(args):
    def run(model, network, out_dir):
        ns = copy.copy(args)
        ns.model, ns.network, ns.output = str(model), network, str(out_dir)
        rc = suite.run_suite(ns, load_tool, log=lambda *a, **k: print(*a, file=sys.stderr, **k))
        path = Path(out_dir) / "summary.json"
        summary = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return {"status": rc, "summary": str(path), "benchmarks": summary.get("benchmarks", {})}
    return run


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    suite.check_suite_flags(p, args)
    for name in ("seeds", "epochs", "auroc_every", "probes"):
        v = getattr(args, name)
        if v is not None and v < 1:
            return cli.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.bootstrap < 0 or not 0 < args.level < 1:
        return cli.error("--bootstrap must be >= 0 and --level in (0, 1)")
    profile_name = "quick" if args.quick else args.profile
    profile = dict(PROFILES[profile_name])
    for key in ("epochs", "auroc_every", "probes"):
        if getattr(args, key) is not None:
            profile[key] = getattr(args, key)
    if args.device is not None:
        profile["device"] = args.device
    args.device = profile["device"]
    output = Path(args.output)
    t0 = time.time()
    try:
        arms = arms_mod.parse_arms(args.arms)
        if args.reference is not None and args.reference not in [a.name for a in arms]:
            raise QGFaceConfigError(f"--reference {args.reference!r} is not one of the arms")
        from qgface_plugin.arcface import checkout
        checkout.find_root(args.arcface_root)
        data = prepare_data(Path(args.rec) if args.rec else output / "data", profile["dataset"], args.seed,
                            workers=args.workers if args.workers is not None else 2,
                            replace=not args.rec)  # the study's own folder; never a folder the user named
        probes = probe_set(data["pairs"]["HQ–HQ"], profile["probes"], args.seed)
        print(f"[study] profile {profile_name}: {len(arms)} arm(s) x {args.seeds} seed(s); data and probes ready in "
              f"{fmt_seconds(time.time() - t0)}", flush=True)
        evaluator = default_evaluator(data, probes, profile, args.arcface_root,
                                      _suite_runner(args) if args.data else None)
        results = run_study(arms, args.seeds, args.seed, data, probes, profile, output,
                            trainer=default_trainer(args.arcface_root), evaluator=evaluator,
                            match_rows=not args.no_match_rows)
    except (QGFaceConfigError, QGFaceInputError) as exc:
        return cli.error(exc)
    except QGFaceNonFiniteError as exc:
        return cli.error(f"{exc} (finished runs are kept; a re-run resumes)", code=cli.EXIT_FAILED)
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
    from qgface_plugin.formats.verification_bin import read_bin
    meta = {"profile": profile_name, "seeds": args.seeds, "seed": args.seed, "rec": data["rec"],
            "num_image": data["num_image"], "num_classes": data["num_classes"], "epochs": profile["epochs"],
            "auroc_every": profile["auroc_every"], "probes": profile["probes"], "match_rows": not args.no_match_rows,
            "pair_counts": {t: len(read_bin(path)[1]) for t, path in data["pairs"].items()},
            "arms": [a.spec for a in arms], "seconds_this_invocation": round(time.time() - t0, 1)}
    study = report.summarise(results, arms, args.reference, args.bootstrap, args.seed, args.level, meta)
    paths = report.write(output, study)
    print()
    print(report.markdown(study), end="")
    print(f"[study] wrote {paths['md']}, {paths['json']}, {paths['png']} ({fmt_seconds(time.time() - t0)} in all)")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
