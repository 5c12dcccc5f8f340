"""Execute a validated run spec: stages in order, with a manifest, metrics and a report.

Output layout (``<run>`` is the output directory)::

    <run>/spec.json                  resolved spec (defaults filled in)
    <run>/manifest.json              versions, seeds, data fingerprints, timings, results
    <run>/metrics.jsonl              one row per logged training step, all stages
    <run>/report.md, plots/*.png     human-readable summary
    <run>/run.log                    console lines
    <run>/stages/<i>-<name>/model/   the model after a training stage (save_pretrained folder)
    <run>/stages/<i>-<name>/checkpoints/step-N/   resumable checkpoints
    <run>/stages/<i>-<name>/eval/<evaluator>/{results.json,samples.jsonl}
    <run>/stages/<i>-<name>/done.json             marks a finished stage
"""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .. import __version__
from ..errors import RunError
from ..protocols import Context, Fingerprinted, LengthFilter, SaveTracking, SFTSource, SourceStats, TrackedRun
from ..tracking import TrackerSet
from ..spec_models import AlignStage, ComponentRef, EvaluateStage, RLStage, SFTStage
from ..types import PreferencePair, SFTExample
from .heap import steady_heap
from .io import atomic_write_json, read_jsonl
from .guard import NamedCall, NamedComponent, unwrap
from .lengths import drop_over_long_text
from .lock import LOCK_NAME, RunDirError, RunLock, holds_run
from .lock import probe as probe_lock
from .report import write_report
from ..paths import cache_root

TRACKED_PACKAGES = ("torch", "transformers", "accelerate", "peft", "datasets", "tokenizers", "pluggy", "pydantic", "pillow", "numpy")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def make_progress(emit: Callable[[str], None] = print) -> Callable[..., Iterable[Any]]:
    """A progress factory: tqdm bars on a terminal, a line to ``emit`` every 30 s otherwise (see :mod:`.progress`)."""
    from .progress import make_progress_factory

    return make_progress_factory(emit)


def make_accelerator(name: str) -> Any:
    """The run's ``accelerate.Accelerator``: one process normally, a DDP world under torchrun/accelerate launch."""
    import torch
    from accelerate import Accelerator

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"spec asks for device {name!r} but CUDA is not available on this machine; use \"device\": \"cpu\"")
    from accelerate.utils import DistributedDataParallelKwargs

    # Text-only examples leave the vision path unused in some forward passes.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=(name == "cpu"), kwargs_handlers=[ddp])


def contention_warning(threads: int, device: str, load: float | None = None, cores: int | None = None) -> str | None:
    """A warning when torch's CPU threads will compete with other busy processes, else None.

    torch's intra-op threads spin while they wait; on a CPU that other processes keep busy a run then
    slows down by an order of magnitude or more (measured: 61 ms -> 3.4 s per step on two shared cores).
    """
    import os

    if not str(device).startswith("cpu") or threads <= 1:
        return None
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # not available on this platform
            return None
    if load + threads <= cores + 0.5:
        return None
    return (f"warning: torch will use {threads} CPU threads, but the load average is {load:.1f} on {cores} cores; "
            "spinning threads of concurrent processes can slow training many times over. Set \"threads\" in the "
            "spec (e.g. 1) or OMP_NUM_THREADS to the cores you can have to yourself.")


def resolve_device(name: str, accelerator: Any) -> str:
    if name in ("auto", "cpu") or accelerator.num_processes > 1:
        return str(accelerator.device)
    return name


class _Head(Sequence[Any]):
    """The first ``n`` items of a sequence, without copying it."""

    def __init__(self, items: Sequence[Any], n: int):
        self._items, self._n = items, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._items[j] for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._items[i % self._n]


class Run:
    """State of one run while it executes."""

    def __init__(self, validated: Any, plugins: Any, run_dir: Path, resume: bool, accelerator: Any = None):
        from .training import Dist

        self.dist = Dist(accelerator)
        self.accelerator = accelerator
        self.validated = validated
        self.spec = validated.spec
        self.plugins = plugins
        self.run_dir = run_dir
        self.resume = resume
        self.progress = make_progress(self.log)
        self.metrics_path = run_dir / "metrics.jsonl"
        self._log_fh = open(run_dir / "run.log", "a") if self.dist.is_main else None
        self.manifest: dict[str, Any] = {}
        self._preflighted: dict[int, tuple[Any, Any, Any, Sequence[Any]]] = {}  # stage index -> data read by the pre-flight
        self.trackers = TrackerSet([], self._stage_records, self.log)

    # ----------------------------------------------------------------- output
    def log(self, msg: str) -> None:
        if not self.dist.is_main:
            return
        print(f"[mmalign] {msg}", flush=True)
        if self._log_fh is not None:
            self._log_fh.write(f"{_now()} {msg}\n")
            self._log_fh.flush()

    def context(self, out_dir: Path, seed: int) -> Context:
        out_dir.mkdir(parents=True, exist_ok=True)
        cache = cache_root()
        return Context(seed=seed, output_dir=out_dir, cache_dir=cache, progress=self.progress, log=self.log)

    def save_manifest(self) -> None:
        if self.dist.is_main:
            atomic_write_json(self.run_dir / "manifest.json", self.manifest)

    def write_report(self) -> Path:
        path = self.run_dir / "report.md"
        if self.dist.is_main:
            write_report(self.run_dir, self.manifest)
        return path

    # ---------------------------------------------------------------- stages
    def stage_dir(self, i: int, name: str) -> Path:
        return self.run_dir / "stages" / f"{i}-{name}"

    def build_context(self) -> Any:
        """What factories that take a ``context`` receive: this run's manager, seed, device and folder."""
        from ..build import BuildContext

        device = self.manifest.get("device") if isinstance(getattr(self, "manifest", None), dict) else None
        return BuildContext(plugins=self.plugins, seed=self.validated.spec.seed, device=device, run_dir=self.run_dir)

    def build(self, path: str) -> tuple[Any, Any]:
        entry, config = self.validated.component(path)
        try:
            obj = entry.build(config, context=self.build_context())
        except Exception as exc:  # a component's own failure: name it
            raise RunError(f"{path}: building {entry.kind} '{entry.qualified_name}' failed: {type(exc).__name__}: {exc}") from exc
        return entry, obj

    def execute(self) -> Path:
        import torch

        spec = self.spec
        if spec.threads:
            torch.set_num_threads(spec.threads)
        if spec.deterministic:
            torch.use_deterministic_algorithms(True)
        device = resolve_device(spec.device, self.accelerator)
        torch.manual_seed(spec.seed)
        self._init_manifest(device)
        if self.dist.is_main and spec.trackers:  # before the model loads: a tracker that cannot start stops the run early
            self.trackers = TrackerSet.build(spec.trackers, self.plugins, self._stage_records, self.log)
            self.trackers.start(TrackedRun(self.run_dir, spec.name, self.validated.resolved, self.validated.spec_hash,
                                           resumed=bool(self.manifest.get("resumed"))))
        names = spec.stage_names()
        self.log(f"run '{spec.name}' -> {self.run_dir}")
        warning = contention_warning(torch.get_num_threads(), device)
        if warning:
            self.log(warning)
        t_model = time.perf_counter()
        # Main process first: a model plugin may build and cache files (tiny-llava does), and transformers
        # writes checkpoint files only on rank 0 of an initialised process group.
        model_entry, model = self._main_first(lambda: self.build("model"))
        model.to(device)
        if spec.dtype != "float32":
            model.module.to(getattr(torch, spec.dtype))
        self.manifest["model"] = {
            "component": model_entry.qualified_name,
            "name_or_path": getattr(model, "name_or_path", ""),
            "fingerprint_initial": model.fingerprint(),
            "load_seconds": round(time.perf_counter() - t_model, 3),
        }
        self.save_manifest()
        self._preflight(names)
        for i, (stage, name) in enumerate(zip(spec.stages, names)):
            sdir = self.stage_dir(i, name)
            record = self._stage_record(i, name)
            done = sdir / "done.json"
            if done.is_file():
                info = json.loads(done.read_text())
                self._replay_completed(model, stage, sdir)
                record.update(info)
                self.log(f"stage {i} '{name}' already complete; skipped")
                continue
            sdir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            record["status"] = "running"
            record["started"] = _now()
            self.save_manifest()
            try:
                if isinstance(stage, EvaluateStage):
                    info = self._evaluate(model, i, name, stage, sdir)
                elif isinstance(stage, RLStage):
                    info = self._rl(model, i, name, stage, sdir)
                else:
                    info = self._train(model, i, name, stage, sdir)
            except BaseException as exc:
                record["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                record["error"] = f"{type(exc).__name__}: {exc}"[:4000]
                record["finished"] = _now()
                raise
            info["seconds"] = round(time.perf_counter() - t0, 3)
            info["status"] = "complete"
            info["finished"] = _now()
            record.update(info)
            if self.dist.is_main:
                atomic_write_json(done, info)
            self.save_manifest()
            self.write_report()
            self.dist.barrier()
        self.manifest["status"] = "complete"
        self.manifest["finished"] = _now()
        self.manifest["model"]["fingerprint_final"] = model.fingerprint()
        self.save_manifest()
        report = self.write_report()
        if self.dist.is_main:
            self.plugins.on_run_end(self.run_dir, self.manifest)
            self.trackers.on_run_end(self.run_dir, self.manifest)
        self.log(f"done: {report}")
        return self.run_dir

    def _init_manifest(self, device: str) -> None:
        old = {}
        if self.resume and (self.run_dir / "manifest.json").is_file():
            old = json.loads((self.run_dir / "manifest.json").read_text())
        self.manifest = {
            "mmalign_version": __version__,
            "status": "running",
            "created": old.get("created", _now()),
            "resumed": ([*old.get("resumed", []), _now()] if self.resume else []),
            "spec_hash": self.validated.spec_hash,
            "spec": self.validated.resolved,
            "git_commit": _git_commit(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "device": device,
            "processes": self.dist.world,
            "seed": self.spec.seed,
            "packages": _package_versions(),
            "plugins": [
                {"name": p.name, "status": p.status, "distribution": p.distribution, "version": p.version, "error": p.error}
                for p in self.plugins.infos()
            ],
            "stages": [],
            "evaluations": [],
        }

    def _stage_records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.manifest.get("stages", [])
        return records

    def _observe_metrics(self, stage: str, step: int, row: dict[str, float]) -> None:
        """A metrics row was written: tell the observer hooks and the run's trackers."""
        self.plugins.on_metrics(self.run_dir, stage, step, row)
        self.trackers.on_metrics(self.run_dir, stage, step, row)

    def _stage_record(self, i: int, name: str) -> dict[str, Any]:
        rec = {"index": i, "name": name, "type": self.spec.stages[i].type, "status": "pending"}
        self.manifest["stages"].append(rec)
        return rec

    def _replay_completed(self, model: Any, stage: Any, sdir: Path) -> None:
        """Bring the in-memory model to the state a completed stage left it in."""
        if isinstance(stage, EvaluateStage):
            info = json.loads((sdir / "done.json").read_text())
            self.manifest["evaluations"].append({"stage": info["name"], "results": info["results"]})
            return
        if stage.train.lora is not None:
            lo = stage.train.lora
            model.enable_lora(lo.r, lo.alpha, lo.dropout, lo.target_modules)
        model.load_checkpoint(sdir / "model")

    def _log_traceback(self, text: str) -> None:
        """Keep a component's traceback in run.log (the console shows only the message naming it)."""
        if self._log_fh is not None:
            self._log_fh.write(f"{_now()} traceback:\n{text}\n")
            self._log_fh.flush()

    # -------------------------------------------------------------- training
    def _main_first(self, fn: Any) -> Any:
        """Run ``fn`` on the main process first, then on the others.

        Sources cache what they build (dataset indexes, offline BDHS answers, precomputed distortion
        scores) under the shared cache folder; the main process builds it alone, and the other processes
        then find it complete and read it instead of building the same files concurrently. If the main
        process fails, the others are released and run ``fn`` themselves (and normally fail the same way).
        """
        if self.dist.world == 1:
            return fn()
        if self.dist.is_main:
            try:
                return fn()
            finally:
                self.dist.barrier()
        self.dist.barrier()
        return fn()

    def _materialise(self, source: Any, kind: str, path: str, ctx: Context) -> Sequence[Any]:
        """The stage's examples. A source may return a lazy ``Sequence`` (e.g. memory-mapped Arrow
        rows); it is used as is, so memory does not grow with the data set. Iterators are listed."""
        if kind == "sft" and not isinstance(unwrap(source), SFTSource):
            return [
                SFTExample(id=p.id, prompt=p.prompt, response=p.chosen, images=p.images, source=p.source, meta=p.meta)
                for p in source.pairs(ctx)
            ]
        with steady_heap():  # a source may generate (BDHS, POVID): no full collections of the setup's objects
            items = source.sft_examples(ctx) if kind == "sft" else source.pairs(ctx)
            if not isinstance(items, Sequence):
                items = list(items)
        expected = SFTExample if kind == "sft" else PreferencePair
        if len(items) and not isinstance(items[0], expected):
            raise RunError(f"{path}: source yielded {type(items[0]).__name__}, expected {expected.__name__}")
        materialised: Sequence[Any] = items
        return materialised

    def _preflight(self, names: Sequence[str]) -> None:
        """Before the first step: read every pending training stage's static data (the source's own
        index/cache, which the stage reuses) and load its first example's images, so that a stage with no
        examples or unreadable images stops the run now, not after the stages before it have trained."""
        for i, (stage, name) in enumerate(zip(self.spec.stages, names)):
            if not isinstance(stage, (SFTStage, AlignStage)):
                continue
            sdir = self.stage_dir(i, name)
            entry = self.validated.component(f"stages[{i}].data").entry
            if (sdir / "done.json").is_file() or "online" in entry.capabilities or "generate" in entry.requires:
                continue  # finished, or data that only exists once the model is trained this far
            try:
                self._preflighted[i] = self._read_stage_data(i, stage, sdir, entry)
            except BaseException as exc:
                # The stage failed before it started: the manifest says which one and why.
                self.manifest["stages"].append({
                    "index": i, "name": name, "type": stage.type, "status": "failed", "phase": "pre-flight",
                    "error": f"{type(exc).__name__}: {exc}"[:4000], "finished": _now(),
                })
                raise
            self.log(f"pre-flight: stage {i} '{name}': {len(self._preflighted[i][3])} examples from {entry.qualified_name}")

    def _read_stage_data(self, i: int, stage: SFTStage | AlignStage, sdir: Path, entry: Any) -> tuple[Any, Any, Any, Sequence[Any]]:
        """Build stage ``i``'s static source, read its examples and load the first example's images."""
        kind = "sft" if isinstance(stage, SFTStage) else "pairs"
        _, raw = self.build(f"stages[{i}].data")
        source = NamedComponent(raw, f"stages[{i}].data: source '{entry.qualified_name}'", self._log_traceback)
        ctx = self.context(sdir / "data", self.spec.seed + 1000 * (i + 1))
        examples = self._main_first(lambda: self._materialise(source, kind, f"stages[{i}].data", ctx))
        self._require_examples(i, entry, source, examples)
        first = examples[0]
        for ref in [*getattr(first, "images", ()), *(getattr(first, "rejected_images", None) or ())]:
            try:
                ref.load()
            except Exception as exc:  # noqa: BLE001 - name the stage and the file
                raise RunError(f"stages[{i}].data: the first example's image cannot be loaded ({type(exc).__name__}: "
                               f"{exc}); check it with `mmalign data check SPEC`") from None
        return entry, source, ctx, examples

    def _require_examples(self, i: int, entry: Any, source: Any, examples: Sequence[Any]) -> None:
        """A stage without examples is a clear error naming the source, its skip reasons and the fix."""
        if len(examples):
            return
        skipped: Any = None
        if isinstance(unwrap(source), SourceStats):
            stats = source.stats()
            skipped = stats.get("skipped") if isinstance(stats, dict) else None
        why = f"; rows skipped by reason: {skipped}" if skipped else ""
        raise RunError(f"stages[{i}].data: source '{entry.qualified_name}' produced no examples{why}. "
                       "`mmalign data check SPEC` lists every skipped row (a wrong path, image_root or format?)")

    def _train(self, model: Any, i: int, name: str, stage: SFTStage | AlignStage, sdir: Path) -> dict[str, Any]:
        from .training import StageData, latest_checkpoint, run_training, truncate_metrics

        seed = self.spec.seed + 1000 * (i + 1)
        kind = "sft" if isinstance(stage, SFTStage) else "pairs"
        t0 = time.perf_counter()
        checked = self._preflighted.pop(i, None)
        if checked is not None:  # a static source, already read by the pre-flight
            src_entry, source, ctx, examples = checked
        else:
            src_entry, raw_source = self.build(f"stages[{i}].data")
            source = NamedComponent(raw_source, f"stages[{i}].data: source '{src_entry.qualified_name}'", self._log_traceback)
            ctx = self.context(sdir / "data", seed)
            if "generate" in src_entry.requires:
                # Sources that generate (offline BDHS, online sampling) get the model as it is at the start
                # of the stage, i.e. the reference policy of this stage.
                ctx.extras["model"] = model
            examples = self._main_first(lambda: self._materialise(source, kind, f"stages[{i}].data", ctx))
            self._require_examples(i, src_entry, source, examples)
        loss_entry, loss = self.build(f"stages[{i}].loss")
        loss = NamedCall(loss, f"stages[{i}].loss: loss '{loss_entry.qualified_name}'", self._log_traceback)
        if stage.train.max_examples and stage.train.max_examples < len(examples):
            examples = _Head(examples, stage.train.max_examples)
        dropped: list[str] = []
        if isinstance(model, LengthFilter):
            # Samples whose image tokens would not fit are dropped whole (or fail, per the model's config).
            examples, dropped = model.filter_too_long(examples)
        else:
            # No filter of its own: drop what cannot fit by its text alone (it would fail mid-training).
            examples, dropped = drop_over_long_text(model, examples)
        if dropped:
            self.log(f"stage {i} '{name}': dropped {len(dropped)} samples longer than the model's max_length: {dropped[:5]}")
        fingerprint = source.fingerprint() if isinstance(unwrap(source), Fingerprinted) else None
        budget = getattr(model, "max_length", None)
        data_info = {
            "source": src_entry.qualified_name,
            "fingerprint": fingerprint,
            "n_examples": len(examples),
            "dropped_too_long": len(dropped),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if isinstance(unwrap(source), SourceStats):
            data_info["stats"] = source.stats()
            skipped = data_info["stats"].get("skipped") if isinstance(data_info["stats"], dict) else None
            if skipped:
                self.log(f"stage {i} '{name}': skipped rows by reason: {skipped}")
        self.log(f"stage {i} '{name}': {len(examples)} examples from {src_entry.qualified_name}, loss {loss_entry.qualified_name}")
        ckpt = latest_checkpoint(sdir)
        if self.dist.is_main:  # the only writer of metrics.jsonl (two processes rewriting it raced)
            truncate_metrics(self.metrics_path, name, int(ckpt.name.split("-")[1]) if ckpt else 0)
        import torch

        torch.manual_seed(seed)
        outcome = run_training(
            model=model,
            data=StageData(
                examples=examples,
                kind=kind,
                online=source if "online" in src_entry.capabilities else None,
                online_ctx=ctx,
            ),
            loss_fn=loss,
            loss_requires=loss_entry.requires,
            settings=stage.train,
            stage_name=name,
            stage_dir=sdir,
            metrics_path=self.metrics_path,
            seed=seed,
            progress=self.progress,
            log=self.log,
            on_metrics=lambda step, row: self._observe_metrics(name, step, row),
            data_fingerprint=f"{fingerprint}|max_length={budget}",
            cache_dir=ctx.cache_dir,
            dist=self.dist,
            stateful={"loss": loss, "data": source},
        )
        if self.dist.is_main:
            model.save_pretrained(sdir / "model")
            shutil.rmtree(sdir / "checkpoints", ignore_errors=True)
        if isinstance(model, SaveTracking):
            model.mark_saved(sdir / "model")
        self.manifest["final_model"] = str(sdir / "model")
        self.log(f"stage {i} '{name}': {outcome.steps} steps in {outcome.seconds:.1f}s; model saved to {sdir / 'model'}")
        return {
            "name": name,
            "steps": outcome.steps,
            "examples_seen": outcome.examples_seen,
            "data": data_info,
            "loss": loss_entry.qualified_name,
            "loss_metrics": list(loss_entry.metrics),
            "last_metrics": outcome.last_metrics,
            "model_dir": str(sdir / "model"),
        }

    # -------------------------------------------------------------------- RL
    def _build_ref(self, path: str, kind: str, ref: ComponentRef) -> tuple[Any, Any]:
        """Resolve, validate and build a component an ``rl`` stage names (spec validation does not see them)."""
        from pydantic import ValidationError

        from ..errors import MmalignError

        try:
            entry = self.plugins.resolve(kind, ref.name)
        except (MmalignError, LookupError) as exc:
            raise RunError(f"{path}.name: {exc}") from None
        try:
            config = entry.config.model_validate(ref.config, context={"plugins": self.plugins})
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RunError(f"{path}.config{'.' + where if where else ''}: {first['msg']}") from None
        try:
            return entry, entry.build(config)
        except Exception as exc:  # a component's own failure: name it
            raise RunError(f"{path}: building {entry.kind} '{entry.qualified_name}' failed: {type(exc).__name__}: {exc}") from exc

    def _rl(self, model: Any, i: int, name: str, stage: RLStage, sdir: Path) -> dict[str, Any]:
        """An ``rl`` stage: build its prompt source, reward and algorithm, and let the algorithm train."""
        import torch

        from ..protocols import RLStageInputs
        from .training import latest_checkpoint, truncate_metrics

        if self.dist.world > 1:
            raise RunError(f"stages[{i}]: 'rl' stages run in one process; launch without torchrun/accelerate")
        seed = self.spec.seed + 1000 * (i + 1)
        src_entry, source = self._build_ref(f"stages[{i}].data", "preference_source", stage.data)
        reward_entry, reward = self._build_ref(f"stages[{i}].reward", "reward", stage.reward)
        algo_entry, algorithm = self._build_ref(f"stages[{i}].algorithm", "rl_algorithm", stage.algorithm)
        ctx = self.context(sdir / "data", seed)
        kind = "pairs" if "pairs" in src_entry.capabilities else "sft"
        prompts = self._materialise(source, kind, f"stages[{i}].data", ctx)
        if stage.train.max_examples and stage.train.max_examples < len(prompts):
            prompts = _Head(prompts, stage.train.max_examples)
        self.log(f"stage {i} '{name}': {len(prompts)} prompts from {src_entry.qualified_name}, "
                 f"algorithm {algo_entry.qualified_name}, reward {reward_entry.qualified_name}")
        ckpt = latest_checkpoint(sdir)
        truncate_metrics(self.metrics_path, name, int(ckpt.name.split("-")[1]) if ckpt else 0)
        torch.manual_seed(seed)
        outcome = algorithm.train(RLStageInputs(
            model=model, prompts=prompts, reward=reward, train=stage.train, rollout=stage.rollout, stage_name=name,
            stage_dir=sdir, metrics_path=self.metrics_path, seed=seed, ctx=ctx, progress=self.progress, log=self.log,
            on_metrics=lambda step, row: self._observe_metrics(name, step, row),
        ))
        model.save_pretrained(sdir / "model")
        shutil.rmtree(sdir / "checkpoints", ignore_errors=True)
        if isinstance(model, SaveTracking):
            model.mark_saved(sdir / "model")
        self.manifest["final_model"] = str(sdir / "model")
        self.log(f"stage {i} '{name}': {outcome['steps']} RL steps in {outcome['seconds']:.1f}s; model saved to {sdir / 'model'}")
        return {
            "name": name,
            "steps": outcome["steps"],
            "examples_seen": outcome["examples_seen"],
            "data": {"source": src_entry.qualified_name, "n_prompts": len(prompts),
                     "fingerprint": source.fingerprint() if isinstance(unwrap(source), Fingerprinted) else None},
            "algorithm": {"component": algo_entry.qualified_name, **algorithm.describe()},
            "reward": {"component": reward_entry.qualified_name, **reward.describe()},
            "last_metrics": outcome.get("last_metrics", {}),
            "model_dir": str(sdir / "model"),
        }

    # ------------------------------------------------------------ evaluation
    def _evaluate(self, model: Any, i: int, name: str, stage: EvaluateStage, sdir: Path) -> dict[str, Any]:
        results: dict[str, Any] = {}
        if not self.dist.is_main:  # evaluation runs on the main process; the others wait at the barrier
            return {"name": name, "results": results}
        model.module.eval()
        for j, ref in enumerate(stage.evaluators):
            path = f"stages[{i}].evaluators[{j}]"
            entry, evaluator = self.build(path)
            key = entry.name if entry.name not in results else f"{entry.name}-{j}"
            out_dir = sdir / "eval" / key
            ctx = self.context(out_dir, self.spec.seed)
            t0 = time.perf_counter()
            with steady_heap():  # evaluators generate for many prompts: no full collections of the setup's objects
                res = evaluator.evaluate(model, ctx)
            secs = time.perf_counter() - t0
            declared = set(entry.metrics)
            if declared and set(res.metrics) != declared:
                raise RunError(
                    f"{path}: evaluator '{entry.qualified_name}' reported {sorted(res.metrics)} but declares {sorted(declared)}"
                )
            with open(out_dir / "samples.jsonl", "w") as fh:
                for row in res.records:
                    fh.write(json.dumps(row, default=str) + "\n")
            payload = {
                "evaluator": entry.qualified_name,
                "config": self.validated.resolved_config(path),
                "metrics": res.metrics,
                "higher_is_better": res.higher_is_better,
                "n": res.n,
                "details": res.details,
                "seconds": round(secs, 3),
            }
            atomic_write_json(out_dir / "results.json", payload)
            results[key] = payload
            shown = ", ".join(f"{k}={v:.4g}" for k, v in list(res.metrics.items())[:8])
            self.log(f"stage {i} '{name}': {key}: {shown}")
            self.plugins.on_evaluation(self.run_dir, name, key, res.metrics)
            self.trackers.on_evaluation(self.run_dir, name, key, res.metrics)
        self.manifest["evaluations"].append({"stage": name, "results": results})
        return {"name": name, "results": results}


def _recorded_spec_hash(run_dir: Path) -> str | None:
    """The spec hash a run folder recorded: the manifest's, else that of its ``spec.json`` (a run killed before its
    first manifest), else None."""
    import hashlib

    man = run_dir / "manifest.json"
    if man.is_file():
        try:
            old = json.loads(man.read_text()).get("spec_hash")
        except (OSError, ValueError):
            old = None
        if old:
            return str(old)
    spec = run_dir / "spec.json"
    if spec.is_file():
        try:
            data = json.loads(spec.read_text())
        except (OSError, ValueError):
            return "unreadable spec.json"
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return None


def _clear_run_dir(run_dir: Path) -> None:
    """Delete a run folder's contents, keeping its lock file (held by this process)."""
    for child in run_dir.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool, spec_hash: str, mutate: bool = True) -> None:
    """Refuse to clobber an existing run unless told to resume or overwrite; ``mutate=False`` only checks.

    ``--overwrite`` and ``--resume`` act only on a folder that holds an mmalign run (``manifest.json``, ``spec.json``
    or ``run.lock``); any other non-empty folder is refused. Refusals are :class:`RunDirError` (exit 2).
    """
    if resume and overwrite:
        raise RunDirError("choose one of --resume and --overwrite")
    exists = run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir())
    if exists and not holds_run(run_dir):
        raise RunDirError(
            f"output directory {run_dir} is not empty and holds no mmalign run (no manifest.json, spec.json or {LOCK_NAME}); "
            "nothing was changed: choose another output directory, or empty this one yourself"
        )
    if exists and not (resume or overwrite):
        raise RunDirError(
            f"output directory {run_dir} already holds a run; pass --resume to continue it or --overwrite to start over"
        )
    if exists and overwrite and mutate:
        _clear_run_dir(run_dir)
    if resume and exists:
        old = _recorded_spec_hash(run_dir)
        if old and old != spec_hash:
            raise RunError(
                f"cannot resume {run_dir}: the spec changed since the run started (hash {old[:12]} != {spec_hash[:12]}); "
                "use --overwrite or another output directory"
            )
    if mutate:
        run_dir.mkdir(parents=True, exist_ok=True)


def run_spec(validated: Any, *, output_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False, plugins: Any = None) -> Path:
    """Run a validated spec and return the run directory."""
    from ..manager import get_plugins

    plugins = plugins or get_plugins()
    spec = validated.spec
    run_dir = Path(output_dir or spec.output_dir or Path("runs") / spec.name).resolve()
    accelerator = make_accelerator(spec.device)
    main = accelerator.is_main_process
    # Every process checks (so all of them stop on a refusal); only the main one changes files, under the
    # folder's lock (one run per folder: a second process is refused, whatever its flags).
    probe_lock(run_dir)
    prepare_run_dir(run_dir, resume=resume, overwrite=overwrite, spec_hash=validated.spec_hash, mutate=False)
    continuing = resume and holds_run(run_dir)
    accelerator.wait_for_everyone()
    lock = RunLock(run_dir) if main else None
    if lock is not None:
        lock.acquire()
        try:
            prepare_run_dir(run_dir, resume=resume, overwrite=overwrite, spec_hash=validated.spec_hash)
            atomic_write_json(run_dir / "spec.json", validated.resolved)
        except BaseException:
            lock.release()
            raise
    accelerator.wait_for_everyone()
    try:
        run = Run(validated, plugins, run_dir, continuing, accelerator)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    try:
        return run.execute()
    except BaseException as exc:
        run.manifest["status"] = "failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted"
        run.manifest["error"] = f"{type(exc).__name__}: {exc}"
        if run.manifest.get("spec"):
            run.save_manifest()
        if run.dist.is_main:
            run.trackers.on_run_end(run.run_dir, run.manifest)  # the trackers keep the failed run's manifest too
        raise
    finally:
        if run._log_fh is not None:
            run._log_fh.close()
        if lock is not None:
            lock.release()


__all__ = ["run_spec", "prepare_run_dir", "read_jsonl"]
