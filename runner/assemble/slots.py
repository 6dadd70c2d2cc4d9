"""The slot factory: one model config -> a Slot (its own random stream, model, optimizer,
scheduler, numerics, probe facts), and one seed's slots (wrapped for DDP, or fused)."""
from __future__ import annotations

import warnings

import torch

from compare import nested
from compare.resolve import arguments, components, metric_refs
from compare.assemble import finetune, recipe
from compare.resolve.arguments import constructed
from compare.assemble.flops import probe_batch, probe_forward
from compare.assemble.preflight import check_own_metrics
from compare.assemble.fusing import fuse_slots
from compare.resolve.references import located
from compare.config.schema import Config, ModelConfig
from compare.engine.ddp_slot import DDPSlot
from compare.engine import calling
from compare.engine.early_stopping import EarlyStopping
from compare.engine.numerics import CompiledForward, Numerics
from compare.engine.rng import RngStream
from compare.engine.slot import Slot, SlotParts
from compare.data.splits import known_targets
from compare.errors import CompareNote, CompareWarning, ConfigError, DeviceError, Problem, ReportError, UserCodeError, describe, one_line
from compare.metrics.builtin import higher_is_better, lookup
from compare.metrics.outputs import OutputKeyError
from compare.metrics import heads
from compare.metrics.tasks import Task, infer_heads, infer_task
from compare.engine.dist import Dist


def resolve_device(spec: str, key: str = "experiment.device") -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{key}: {spec!r} asked for, but torch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"{key}: {spec!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{key}: {spec!r} asked for, but MPS is not available")
    return device


def model_device(cfg: Config, m: ModelConfig, default: torch.device, dist: Dist) -> torch.device:
    """`[[model]] device` puts a model on its own device (one process, several GPUs)."""
    if m.device is None:
        return default
    if dist.enabled:
        raise ConfigError([Problem(cfg.source, f"model.{m.name}.device", "cannot be used under torchrun: each process drives one device (cuda:LOCAL_RANK)")])
    return resolve_device(m.device, f"model.{m.name}.device")


def arch_name(arch, args: dict) -> str:
    """What the `arch` column shows: a generic factory's architecture from its `model_name`
    argument (`timm:create_model` with model_name = "resnet18" is `timm:resnet18`)."""
    text = describe(arch)
    name = args.get("model_name")
    if isinstance(arch, str) and ":" in text and isinstance(name, str):
        return f"{text.rpartition(':')[0]}:{name}"
    return text


def sample_text(sample) -> str:
    """One probe sample for a message: `(1, 8, 8) (float32)`, or each member's shape for a structure."""
    if isinstance(sample, torch.Tensor):
        return f"{tuple(sample.shape[1:])} ({str(sample.dtype).removeprefix('torch.')})"
    return nested.shape_of(nested.first(sample))


def check_classes_asked(arch, num_classes: int, base_dir, file: str, key: str) -> None:
    """A model that asks for `num_classes` (a registry builder, or a signature that names it) on
    data without classes (regression targets) would get 0 and build zero outputs: refused."""
    if num_classes or isinstance(arch, torch.nn.Module):
        return
    registry = components.registered(arch)
    if registry or "num_classes" in (arguments.parameters(components.resolve_model(arch, base_dir)) or {}):
        what = "builds one output per class" if registry else "takes num_classes"
        raise ConfigError([Problem(file, key, f"{describe(arch)} {what}, but the dataset has no classes (its targets are not class labels: regression); "
                                   "give the model its number of outputs under another name (e.g. outputs) in args")])


def build_slot(cfg: Config, m: ModelConfig, experiment_seed: int, input_shape, num_classes: int, device: torch.device, fail_fast: bool = False, sample: torch.Tensor | None = None, train_size: int | None = None) -> Slot:
    """Seed the model's own stream, build the model in it; the stream continues from there.
    `sample`: a batch of one for the probe (runner/assemble/flops.py), else zeros of `input_shape`.
    `train_size`: train samples per epoch (a "linear"/"cosine" scheduler's length, accumulation's last group)."""
    seed = cfg.model_seed(m, experiment_seed)
    rng = RngStream(seed, device)
    numerics = Numerics(cfg.experiment.precision, cfg.experiment.channels_last)
    where = f"model.{m.name}"
    check_classes_asked(m.arch, num_classes, cfg.base_dir, cfg.source, f"{where}.arch")  # regression: no num_classes to give
    args = components.dataset_args(m.args, input_shape, num_classes, cfg.source, f"{where}.args")
    with rng.active(), finetune.pretrained_download(m.arch, args, where):
        build = lambda: components.build_model(m.arch, args, input_shape, num_classes, cfg.base_dir, m.name)  # noqa: E731
        model = constructed(cfg.source, f"{where}.args", describe(m.arch), args, build).to(device)
    if m.init is not None:  # fine-tuning (runner/assemble/finetune.py): no random draws, the stream stays in step
        finetune.load_init(model, m, cfg.base_dir, where)
    finetune.freeze(model, m, cfg.source, where)
    numerics = numerics.for_model(model, device, m.name)
    model = numerics.prepare(model)
    params = recipe.decay_groups(model, finetune.optimizer_params(model, m, cfg.source, where), m)  # model.parameters(), or groups by name (and no_decay)
    make_optimizer = lambda: components.create_optimizer(m.optimizer.name, params, m.optimizer.args)  # noqa: E731
    optimizer = constructed(cfg.source, f"{where}.optimizer", m.optimizer.name, m.optimizer.args, make_optimizer)
    scheduler = None
    if m.scheduler is not None:
        make_scheduler = lambda: recipe.make_scheduler(m, optimizer, cfg.experiment.epochs, recipe.optimizer_steps(cfg, train_size), cfg.source)  # noqa: E731
        scheduler = constructed(cfg.source, f"{where}.scheduler", m.scheduler.name, m.scheduler.args, make_scheduler)
    spread = sample is not None and calling.spreads(model, sample)  # a dict input the forward asks for by key: model(**x)
    try:
        flops, out_shape, why, extra = probe_forward(model, input_shape if sample is None else sample, device, cfg.output(m), spread)
    except OutputKeyError as err:  # the forward ran; the output key names nothing it returned
        raise ConfigError([Problem(cfg.source, f"{where}.output" if m.output is not None else "report.output", one_line(err))]) from err
    except Exception as err:  # noqa: BLE001 - the model does not fit the data: say which, and where
        shape = tuple(input_shape) if sample is None else sample_text(sample)
        raise UserCodeError(f"model {m.name}: the forward pass{' (model(**x))' if spread else ''} on one sample of shape {shape} raised {type(err).__name__}: {one_line(err)}{located(err)}") from err
    if why is not None:  # counting is a nicety: the model trains, its FLOPs read n/a
        warnings.warn(f"model {m.name}: FLOPs not counted (torch's FlopCounterMode raised {why}); flops_per_sample is n/a", CompareNote, stacklevel=2)
    if len(out_shape) == 1 and num_classes and out_shape[0] != num_classes:
        raise ConfigError([Problem(cfg.source, where, f"outputs {out_shape[0]} values per sample, but the dataset has {num_classes} classes (a classifier outputs one logit per class)")])
    info = {
        "model": m.name,
        "family": cfg.family(m),  # the [[model]] table its sweep or search came from (docs/tuning.md)
        "arch": arch_name(m.arch, args),
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),  # what the optimizer moves
        "flops_per_sample": flops,
        "outputs": out_shape[-1] if out_shape else None,
        "extra_outputs": extra,  # tensors beside the prediction (aux logits): the loss may hold their terms
        "optimizer": m.optimizer.name,
        "lr": m.optimizer.args.get("lr"),
        **finetune.group_lrs(m),  # lr[<globs>]: a param_groups entry's lr
        "scheduler": m.scheduler.name if m.scheduler else None,
        **recipe.info(cfg, m),  # accumulate, effective_batch, no_decay, warmup, clipping: where set
    } | {f"sweep.{key}": value for key, value in m.sweep_values.items()}  # leaderboard columns
    stopping = cfg.early_stopping(m)
    early = EarlyStopping(metric=stopping.metric, patience=stopping.patience, min_delta=stopping.min_delta) if stopping else None
    interval = m.scheduler.interval if m.scheduler else "epoch"
    compile_mode = cfg.experiment.compile
    forward = CompiledForward(model, m.name, "default" if compile_mode is True else compile_mode) if compile_mode else None
    r = cfg.report
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and interval == "step":  # its step needs the val metric: once per epoch
        raise ConfigError([Problem(cfg.source, f"{where}.scheduler.interval", "'step' is not for ReduceLROnPlateau: it steps on a val metric, known once per epoch; leave interval out (or 'epoch')")])
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and r.rank_by:
        higher = higher_is_better(r.rank_by)
        if (scheduler.mode == "max") != bool(higher):
            want = "max" if higher else "min"
            raise ConfigError([Problem(cfg.source, f"{where}.scheduler.args.mode", f"ReduceLROnPlateau reads val_{r.rank_by.removeprefix('test_')} ([report] rank_by), where {'higher' if higher else 'lower'} is better: set mode = {want!r}")])
    names = metric_refs.metric_names(r.metrics, cfg.base_dir)
    metrics = tuple(names) if names is not None else None
    slot = Slot(SlotParts(m.name, model, optimizer, rng, device, m, scheduler, interval, info, early, fail_fast, numerics, forward, cfg.output(m), metrics, r.rank_by, recipe=recipe.step_recipe(cfg, m, train_size), spread=spread))
    slot.output_shape = out_shape  # one sample's prediction: with the data and the loss, it gives the task
    return slot


def data_task(cfg: Config, data, output_shape: tuple[int, ...], loss_fn) -> Task:
    """The task the data and the loss pose (runner/metrics/tasks.py), with the report's metrics
    checked against it: a metric that does not apply is one line naming the key."""
    targets = known_targets(data.train) if not hasattr(data.train, "labels") else data.train.labels  # the decoded cache: its label tensor
    target = nested.first(targets) if targets is not None else data.train[0][1]  # the cache's labels may be a dict of heads
    task = infer_heads(target, output_shape, loss_fn) if heads.is_structured(target) else infer_task(target, output_shape, loss_fn, targets)
    if hasattr(loss_fn, "per_sample"):  # a loss per head: one for each target head, no other
        have, want = list(loss_fn.parts), [h for h, _ in task.heads]
        if sorted(have) != sorted(want):
            what = f"the targets' heads are {', '.join(want)}" if want else "the targets are one tensor, not a dict or tuple of heads (or the model returns one tensor)"
            raise ConfigError([Problem(cfg.source, "loss", f"[loss.<head>] tables for {', '.join(have)}, but {what}: give one table per head")])
    own = metric_refs.user_metrics(cfg.report.metrics, cfg.base_dir)
    checked = [("report.metrics", metric_refs.metric_names(cfg.report.metrics, cfg.base_dir) or []), ("report.rank_by", [cfg.report.rank_by] if cfg.report.rank_by else [])]
    if task.kind == "heads":  # a decision on a head's metric (val_digit/acc): that head must exist (val_acc is NaN here)
        stops = [(f"model.{m.name}.early_stopping.metric" if m.early_stopping else "experiment.early_stopping.metric", cfg.early_stopping(m)) for m in cfg.models]
        race = [("experiment.race.metric", cfg.experiment.race)] if cfg.experiment.race else []
        checked += [(key, [c.metric.split("_", 1)[1]]) for key, c in stops + race if c is not None and c.metric not in ("val_loss", "train_loss")]
    for key, names in checked:
        for name in names:
            try:
                lookup(name.removeprefix("test_"), task.kind, task.width, own)
            except ReportError as err:
                raise ConfigError([Problem(cfg.source, key, str(err))]) from None
    return task


def build_slots(
    cfg: Config, seed: int, data, device: torch.device, dist: Dist | None = None, fail_fast: bool = False, loss_fn=None, fused: dict[str, str] | None = None
) -> list[Slot]:
    """One seed's slots, in config order: one per model (wrapped for DDP under torchrun), or with
    `experiment.fuse`, members of fused groups (runner/assemble/fusing.py). `fused` replays an earlier
    decision (model name -> group label); `loss_fn` is the run's loss, for the fusing trial."""
    dist = dist or Dist()
    sample = probe_batch(data)  # a real sample, in its dtype (token ids stay integers)
    slots = [build_slot(cfg, m, seed, data.input_shape, data.num_classes, model_device(cfg, m, device, dist), fail_fast, sample, len(data.train)) for m in cfg.models]
    task = data_task(cfg, data, slots[0].output_shape, loss_fn) if slots else None
    own = metric_refs.user_metrics(cfg.report.metrics, cfg.base_dir)
    for slot in slots:
        slot.task, slot.user_metrics = task, own
        if task.kind == "heads" and slot.parts.info.get("extra_outputs"):  # every head's tensor is read: extra are the others
            slot.parts.info["extra_outputs"] = max(0, slot.parts.info["extra_outputs"] + 1 - len(task.heads))
    if slots and own:  # called now, as evaluation will call them: a broken one is exit 2 before training
        check_own_metrics(cfg, data, slots[0], task)
    if dist.enabled:
        if cfg.experiment.accumulate > 1:  # DDP all-reduces at every backward; each rank's batch slice is already the batch
            raise ConfigError([Problem(cfg.source, "experiment.accumulate", f"{cfg.experiment.accumulate} cannot be used with DDP (torchrun, place = \"data\"): run it in one process, or with --place models")])
        if cfg.experiment.fuse != "off":
            warnings.warn(f"experiment.fuse = {cfg.experiment.fuse}: not fused under torchrun (every model is wrapped in DDP)", CompareWarning, stacklevel=2)
        return [DDPSlot(s.parts, dist) for s in slots]
    return fuse_slots(cfg, seed, data, slots, loss_fn, fused)
