"""Training, resuming, evaluation and checkpoints end to end on generated data (tiny preset), the deployment
thresholds a run writes per category, and the `mmad train` / `mmad eval` options (training/cli.py)."""

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmad.runtime.cli import build_parser
from mmad.runtime.cli import main as mmad
from mmad.runtime.contract import THRESHOLD_F1, deployment_threshold, fit_threshold, pixel_threshold
from mmad.samples.make_dataset import make_dataset
from mmad.training import evaluate
from mmad.training.checkpoint import META_FILE, WEIGHTS_FILE, CheckpointError, load_model, read_info
from mmad.training.data import ImageTransform, TrainDataset, find_categories, split_categories_holdout
from mmad.training.thresholds import DEPLOYMENT, threshold_lines
from mmad.training.train import param_groups, predict_normals

TINY = ["--preset", "tiny", "--random-encoder", "--batch-size", "2"]


@pytest.fixture(scope="module")
def data(generated_dataset) -> Path:
    """The conftest's generated dataset: object and texture, 6 training images each."""
    return generated_dataset


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert mmad(["train", "--data", str(data), "--out", str(out), "--epochs", "2", *TINY]) == 0
    return out


def test_train_writes_a_self_contained_checkpoint(trained):
    info = read_info(trained)
    assert info.categories == ["object", "texture"]
    assert info.progress["finished"] and info.progress["epoch"] == 2
    # 3 held-out normals per category: the floor of 20 gives way at half of the 6 (it was 1: 10 % of 6).
    assert info.thresholds[DEPLOYMENT]["images"] == 6
    model, _ = load_model(trained)
    # The checkpoint carries the encoder: its weights load without any encoder weight file.
    saved = load_file(str(trained / WEIGHTS_FILE))
    assert any(k.startswith("encoder.") for k in saved)
    state = model.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in saved)
    # tiny normalises the encoder features: the scales were measured on the training images.
    scale = model.feature_scale
    assert scale.shape == (3,) and bool((scale > 0).all()) and not torch.equal(scale, torch.ones(3))
    assert json.loads((trained / "config.json").read_text())["preset"] == "tiny"


def test_eval_writes_metrics_reports_and_threshold(trained, data, tmp_path):
    out = tmp_path / "eval"
    assert mmad(["eval", "--checkpoint", str(trained), "--data", str(data), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    keys = {"I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO", "mAD"}
    assert set(metrics["per_category"]) == {"object", "texture"}
    assert set(metrics["mean"]) == keys
    for m in metrics["per_category"].values():
        assert keys == set(m) and all(0 <= v <= 100 for v in m.values())
        assert m["mAD"] == pytest.approx(np.mean([m[k] for k in keys - {"mAD"}]))
    for name in ("metrics.md", "metrics.csv", "grid_object.png", "grid_texture.png", "scores.png"):
        assert (out / name).stat().st_size > 0
    thresholds = read_info(trained).thresholds
    assert THRESHOLD_F1 in thresholds and DEPLOYMENT in thresholds


def test_resume_continues_the_same_schedule(data, trained, tmp_path):
    """1 epoch, stop, resume for the 2nd: same weights as the 2-epoch run."""
    out = tmp_path / "resumed"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "2", *TINY]
    assert mmad([*args, "--max-minutes", "1e-9"]) == 0  # stops after the first epoch
    # 6 training images (3 per category after the hold-out) in batches of 2: 3 iterations per epoch.
    progress = read_info(out).progress
    assert progress.pop("minutes") >= 0 and progress.pop("cpu_minutes") >= 0  # training time so far (issue 12)
    assert progress == {"epoch": 1, "iteration": 3, "total_iterations": 6, "finished": False}
    assert mmad([*args, "--resume"]) == 0
    a, b = load_file(str(trained / WEIGHTS_FILE)), load_file(str(out / WEIGHTS_FILE))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_resume_with_another_config_is_refused(data, trained, tmp_path, capsys):
    out = tmp_path / "other"
    shutil.copytree(trained, out)
    code = mmad(["train", "--data", str(data), "--out", str(out), "--epochs", "3", "--resume", *TINY])
    assert code == 2 and "same configuration" in capsys.readouterr().err


def test_weight_decay_groups_follow_ader(trained):
    model, _ = load_model(trained)
    decay, no_decay = param_groups(model, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith(".bias") or p.ndim <= 1 for p in no_decay["params"])
    decayed = {names[id(p)].rsplit(".", 1)[-1] for p in decay["params"]}
    assert {"A_logs", "dt_projs_bias", "x_proj_weight"} <= decayed  # 2-D, so decayed as in ADer
    assert not any(n.startswith("encoder.") for n in map(names.get, map(id, decay["params"] + no_decay["params"])))


# --- deployment thresholds per category ----------------------------------------------------------
@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """object and texture with 42 normals each: 20 held out per category, enough for the Gumbel fit."""
    root = tmp_path_factory.mktemp("many")
    return make_dataset(root, ["object", "texture"], n_train=42, n_test_good=1, n_test_defect_per_type=0, seed=5)


@pytest.fixture(scope="module")
def trained_many(many, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "many"
    args = ["train", "--data", str(many), "--out", str(out), "--epochs", "1", *TINY, "--batch-size", "4"]
    assert mmad([*args, "--target-false-alarm-rate", "0.01"]) == 0
    return out


def held_out_predictions(run: Path, root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each category's held-out normals (the split is deterministic) scored again by the saved model."""
    model, info = load_model(run)
    tc = info.config.train
    categories = find_categories([str(root)])
    _, holdout = split_categories_holdout(categories, tc.threshold_holdout, tc.seed, tc.threshold_min_images)
    transform = ImageTransform.from_model_config(info.config.model)
    return {c.name: predict_normals(model, TrainDataset([c], transform), "cpu") for c in holdout}


@pytest.mark.parametrize(
    "run, root, rule, held_out",
    [("trained_many", "many", "gumbel", 20), ("trained", "data", "quantile", 3)],
    ids=["gumbel-42-normals", "quantile-fallback-6-normals"],
)
def test_each_category_threshold_comes_from_its_own_held_out_images(run, root, rule, held_out, request):
    run, root = request.getfixturevalue(run), request.getfixturevalue(root)
    info = read_info(run)
    deployment, tc = info.thresholds[DEPLOYMENT], info.config.train
    assert tc.threshold_false_alarm_rate == deployment["false_alarm_rate"] == (0.01 if rule == "gumbel" else 0.001)
    per_category = deployment["categories"]
    assert set(per_category) == {"object", "texture"}
    for name, (scores, maps) in held_out_predictions(run, root).items():
        entry = per_category[name]
        assert (entry["rule"], entry["images"], len(scores)) == (rule, held_out, held_out)
        if rule == "gumbel":
            expected = fit_threshold(scores, tc.threshold_false_alarm_rate).threshold
        else:
            expected = deployment_threshold(scores, tc.threshold_quantile)
        assert entry["image"] == pytest.approx(expected, rel=1e-5)
        assert entry["pixel"] == pytest.approx(pixel_threshold(maps), rel=1e-5)
    # Two categories, two score levels, two thresholds; the global ones are the highest of each kind.
    assert per_category["object"]["image"] != per_category["texture"]["image"]
    assert deployment["image"] == max(c["image"] for c in per_category.values())
    assert deployment["pixel"] == max(c["pixel"] for c in per_category.values())
    assert (deployment["rule"], deployment["images"]) == (rule, 2 * held_out)


def test_eval_figures_name_the_files_and_draw_only_image_thresholds(trained, data, tmp_path, monkeypatch):
    """Issue 11: grid captions said "#n", and scores.png drew normal_quantile_q = 0.99 as a threshold."""
    drawn: dict[str, list] = {"grid": [], "histogram": []}

    def recording(kind: str, draw, argument: str):
        def record(*args, **kwargs):
            drawn[kind].append(inspect.signature(draw).bind(*args, **kwargs).arguments[argument])
            return draw(*args, **kwargs)

        return record

    monkeypatch.setattr(evaluate, "save_overlay_grid", recording("grid", evaluate.save_overlay_grid, "titles"))
    hist = recording("histogram", evaluate.save_score_histogram, "thresholds")
    monkeypatch.setattr(evaluate, "save_score_histogram", hist)
    result = evaluate.evaluate_checkpoint(trained, [str(data)], tmp_path, update_checkpoint=False, log=lambda _: None)
    titles = [title for grid in drawn["grid"] for title in grid]
    assert len(titles) == 2 * 5  # every test image of both categories
    for title in titles:
        category, kind, stem = title.split("/")
        assert (data / category / "test" / kind / f"{stem}.png").is_file(), title
    (lines,) = drawn["histogram"]
    assert lines == threshold_lines(result["thresholds"])
    assert [name.split(" (")[0] for name in lines] == ["deployment", "F1-optimal"]
    assert lines["deployment (quantile, 6 normal images)"] == read_info(trained).thresholds[DEPLOYMENT]["image"]


def test_target_false_alarm_rate_must_be_a_rate(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "d", "--out", "o", "--target-false-alarm-rate", "1.5"])
    assert "between 0 and 1" in capsys.readouterr().err


# --- bad checkpoints ---------------------------------------------------------------------------
def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_truncated_weights_are_a_clear_error(trained, tmp_path):
    run = copy_run(trained, tmp_path / "t")
    path = run / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(run)
    # Even without the hash to compare against, safetensors' own check names the file.
    info = json.loads((run / META_FILE).read_text())
    info["weights_sha256"] = ""
    (run / META_FILE).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_model(run)


def test_incompatible_version_is_a_clear_error(trained, tmp_path):
    run = copy_run(trained, tmp_path / "v")
    info = json.loads((run / META_FILE).read_text())
    info["format_version"] = 99
    (run / META_FILE).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_model(run)


def test_wrong_model_config_is_a_clear_error(trained, tmp_path):
    run = copy_run(trained, tmp_path / "c")
    info = json.loads((run / META_FILE).read_text())
    info["config"]["model"]["decoder_dims"] = [32, 16, 16, 16]
    (run / META_FILE).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="model config"):
        load_model(run)
    info["config"]["model"]["no_such_field"] = 1
    (run / META_FILE).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="no_such_field"):
        load_model(run)


def test_corrupt_json_and_missing_folder(trained, tmp_path):
    run = copy_run(trained, tmp_path / "j")
    (run / META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(run)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_cli_reports_bad_data_without_traceback(tmp_path, capsys):
    code = mmad(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "missing" in err and "Traceback" not in err


# --- several processes -------------------------------------------------------------------------
def test_torchrun_ddp_with_gloo_two_processes(data, tmp_path):
    """Two CPU processes through torchrun; training checks that both replicas end with equal weights."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mmad.runtime.cli",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "1",
        *TINY,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch 2×2" in proc.stdout
    info = read_info(out)
    # 12 images (6 per category, minus 3 held out each = 6) over 2 processes of batch 2: 1 iteration.
    assert info.progress["iteration"] == 1
    load_model(out)


# --- the command line --------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "eval"])
def test_every_option_has_a_help_sentence(command, capsys):
    """`mmad train --help` and `mmad eval --help` list every option, each with its text."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert len(options) >= 6
    for action in options:
        assert action.help and len(action.help.split()) >= 2, action.option_strings
    with pytest.raises(SystemExit):
        mmad([command, "--help"])
    shown = capsys.readouterr().out
    for action in options:
        assert action.option_strings[0] in shown and action.help.split()[0] in shown
