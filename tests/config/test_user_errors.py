"""Every config mistake a user can make exits 2 with one `error:` line per problem, naming the
file, the key and the bad value; never exit 1 ("internal error"). The causes fuzzing found."""
from __future__ import annotations

import os

import pytest

from compare.assemble.validate import config_from_dict
from compare.errors import LINE_CHARS, ConfigError
from tests.helpers import cli, digits_config, mlp, write


def errors_of(path, *sets):
    result = cli("run", path, "--dry-run", *[a for s in sets for a in ("--set", s)])
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), lines
    return [line[len("error: "):] for line in lines]


def with_model(tmp_path, **entry):
    return write(tmp_path, digits_config([mlp("m") | entry], epochs=1))


def test_a_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_bytes(b'[experiment]\nname = "caf\xe9"\n')
    assert errors_of(path) == [f"{path}: -: not UTF-8 text: byte 0xe9 on line 2 (TOML files are UTF-8)"]


def test_set_naming_a_model_when_a_model_name_is_not_a_string(tmp_path):
    path = write(tmp_path, digits_config([mlp("m"), mlp(1)], epochs=1))
    assert errors_of(path, "model.1.lr=3") == ["--set: model.1.lr: no model named '1'", f"{path}: model[1].name: expected string, got 1"]


@pytest.mark.parametrize(("optimizer", "line"), [
    ({"name": "SGD", "lr": "1e-3"}, "model.m.optimizer.lr: expected number or Tensor, got '1e-3'"),
    ({"name": "SGD", "lr": -1}, "model.m.optimizer: SGD(lr=-1) raised ValueError: Invalid learning rate: -1"),
    ({"name": "Adam", "betas": [2, 0.9]}, "model.m.optimizer: Adam(betas=[2, 0.9]) raised ValueError: Invalid beta parameter at index 0: 2"),
    ({"name": "Adam", "betas": [0.9]}, "model.m.optimizer.betas: expected an array of 2 (number or Tensor, number or Tensor), got [0.9]"),
    ({"name": "SGD", "lr": 0.1, "nesterov": "yes"}, "model.m.optimizer.nesterov: expected boolean, got 'yes'"),
    ({"name": "SGD", "lr": 0.1, "nesterov": True}, "model.m.optimizer: SGD(lr=0.1, nesterov=True) raised ValueError: Nesterov momentum requires a momentum and zero dampening"),
])
def test_optimizer_arguments_of_the_wrong_type_or_range(tmp_path, optimizer, line):
    path = with_model(tmp_path, optimizer=optimizer)
    assert errors_of(path) == [f"{path}: {line}"]


def test_scheduler_loss_and_transform_arguments_of_the_wrong_type(tmp_path):
    raw = digits_config([mlp("m") | {"scheduler": {"name": "StepLR", "step_size": "2"}}, mlp("n") | {"scheduler": {"name": "ReduceLROnPlateau", "mode": "up"}}], epochs=1)
    raw["loss"]["args"] = {"weight": 1}
    raw["data"]["train_transforms"] = [{"name": "RandomCrop", "size": "8"}]
    path = write(tmp_path, raw)
    assert sorted(errors_of(path)) == sorted(f"{path}: {line}" for line in [
        "data.train_transforms[0].size: expected integer or an array of integers, got '8'",
        "loss.args.weight: expected Tensor, got 1",
        "model.m.scheduler.step_size: expected integer, got '2'",
        "model.n.scheduler.mode: expected one of 'min', 'max', got 'up'",
    ])


def test_mlp_arguments_of_the_wrong_type_or_range(tmp_path):
    path = with_model(tmp_path, args={"hidden": "32"})
    assert errors_of(path) == [f"{path}: model.m.args.hidden: expected an array of integers, got '32'"]
    path = with_model(tmp_path, args={"hidden": [32], "dropout": 1.5})  # the builder's own check, at build time
    assert errors_of(path) == [f"{path}: model.m.args: mlp(hidden=[32], dropout=1.5) raised ValueError: dropout probability has to be between 0 and 1, but got 1.5"]


def test_seeds_torch_cannot_take(tmp_path):
    raw = digits_config([mlp("m") | {"seed": 2**64}], epochs=1)
    raw["experiment"]["seeds"] = [0, -(2**70)]
    path = write(tmp_path, raw)
    expected = "expected a seed from 0 to 2**63 - 1, got"
    assert errors_of(path) == [f"{path}: experiment.seeds: {expected} {-(2**70)}", f"{path}: model.m.seed: {expected} {2**64}"]


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64 - 1])
def test_seeds_torch_takes_but_the_run_cannot_use(tmp_path, seed):
    """Issue 36, 26e: -1 wraps to 2**64 - 1 in torch, and 2**64 - 1 + 1 (the test subset's seed) overflowed in the run."""
    raw = digits_config([mlp("m") | {"seed": seed}], epochs=1, seed=seed)
    raw["experiment"]["seeds"] = [0, seed]
    path = write(tmp_path, raw)
    expected = f"expected a seed from 0 to 2**63 - 1, got {seed}"
    assert errors_of(path) == [f"{path}: {key}: {expected}" for key in ("experiment.seed", "experiment.seeds", "model.m.seed")]


def test_a_model_name_too_long_for_a_file_name(tmp_path):
    path = with_model(tmp_path, name="m" * 300)
    [line] = errors_of(path)
    key, message = line[len(f"{path}: "):].split(": ", 1)
    assert key == f"model.{'m' * 174}... (311 characters)"  # the key holds the name too: cut to 200
    assert message == f"300 characters ('{'m' * 179}... (302 characters)); at most 120: names become file names"


def test_an_output_folder_name_too_long_for_the_file_system(tmp_path):
    raw = digits_config([mlp("m")], epochs=1)
    raw["experiment"]["output_dir"] = "runs/" + "o" * 300
    path = write(tmp_path, raw)
    assert errors_of(path) == [f"{path}: experiment.output_dir: a folder name of 300 bytes ('{'o' * 179}... (302 characters)); file systems allow 255"]


def test_echoed_values_are_cut_short(tmp_path):
    path = with_model(tmp_path, optimizer={"name": "SGD", "lr": "x" * 5000})
    [line] = errors_of(path)
    assert line == f"{path}: model.m.optimizer.lr: expected number or Tensor, got '{'x' * 177}... (5,002 characters)"
    assert len(line) < LINE_CHARS


def test_a_sweep_grid_too_large_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "exp.toml"
    values = ", ".join(str(v) for v in range(10))
    keys = ", ".join(f'"args.k{i}" = [{values}]' for i in range(6))  # 10**6 points in a few hundred bytes
    path.write_text(f'[data]\ndataset = "digits"\n[[model]]\nname = "m"\narch = "mlp"\nsweep = {{ {keys} }}\n')
    assert errors_of(path) == [f"{path}: model: the sweeps make 1,000,000 models; at most 10,000 per config (split the grid over several configs)"]


def image_config(root):
    raw = digits_config([mlp("m")], epochs=1, batch_size=4, eval_batch_size=4)
    raw["data"] |= {"dataset": "imagefolder", "root": str(root), "args": {"image_size": 16}}
    return raw


def test_an_imagefolder_symlink_loop_is_refused(tmp_path, tiny_image_folder):
    link = tiny_image_folder / "train" / "cat" / "again"
    os.symlink(tiny_image_folder / "train" / "cat", link)  # one loop: each image would repeat many times
    path = write(tmp_path, image_config(tiny_image_folder))
    assert errors_of(path) == [f"data.root: {link} is a symlink to {os.path.realpath(link.parent)}, a folder that contains it; the image walk would loop (remove the link)"]


def test_an_imagefolder_loop_through_two_symlinks_is_refused(tmp_path, tiny_image_folder):
    train = tiny_image_folder / "train"
    os.symlink(train / "dog", train / "cat" / "to_dog")
    os.symlink(train / "cat", train / "dog" / "to_cat")  # cat -> dog -> cat: an endless walk
    path = write(tmp_path, image_config(tiny_image_folder))
    [line] = errors_of(path)
    assert line.startswith(f"data.root: {train}/") and line.endswith("a folder that contains it; the image walk would loop (remove the link)")


def test_a_symlinked_class_folder_without_a_loop_is_followed(tmp_path, tiny_image_folder):
    os.symlink(tiny_image_folder / "train" / "cat", tiny_image_folder / "train" / "cat2")
    result = cli("run", write(tmp_path, image_config(tiny_image_folder)), "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "36 train" in result.stdout  # 12 cats, 12 dogs, and the 12 cats again as cat2


def test_a_sweep_one_point_past_the_limit_is_refused():
    model = mlp("m") | {"sweep": {"optimizer.lr": [0.1, 0.2], "args.hidden": [[n] for n in range(5001)]}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(digits_config([model, mlp("n")]))
    assert str(err.value) == "<dict>: model: the sweeps make 10,003 models; at most 10,000 per config (split the grid over several configs)"


def test_a_problem_every_point_of_a_large_sweep_shares_is_reported_once(tmp_path):
    model = mlp("m") | {"sweep": {"optimizer.lr": [0.1 + i / 1e6 for i in range(2000)]}}
    model["optimizer"]["momentum"] = "x"  # before the collapse was linear, this took minutes
    path = write(tmp_path, digits_config([model]))
    assert errors_of(path) == [f"{path}: model.m.optimizer.momentum: expected number, got 'x'"]
