"""Train the embedded model from scratch on the synthetic world (CPU, seeded, resumable).

``python -m focus_tool.embedded.train --out runs/embedded`` (or ``focus train-embedded``): 4500 steps, of which the
last 1000 are the second stage (:mod:`focus_tool.embedded.schedule`). The examples are in
:mod:`focus_tool.embedded.data`, the losses in :mod:`focus_tool.embedded.losses`: next-token cross-entropy on the
answer tokens, plus an auxiliary loss on the vision side (``--aux``). The runs behind every choice are logged in
``model/MODEL_CARD.md``. The data stream is a pure function of (seed, step), so a resumed run sees the same batches.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from focus_tool.data import synthetic as syn
from focus_tool.embedded.build import EmbeddedArch, build_model, build_processor
from focus_tool.embedded.data import (
    CARD_CLASSES,
    COUNT_CLASSES,
    IGNORE,
    PATCH_LABEL_KEYS,
    PIP_CLASSES,
    SIDE_CLASSES,
    Example,
    collate,
    sample_example,
)
from focus_tool.embedded.losses import AUX_CHOICES, aux_loss
from focus_tool.embedded.schedule import DEFAULT_STAGE2, DEFAULT_STAGE3, Schedule, StageConfig, check_stages
from focus_tool.embedded.world import write as write_world
from focus_tool.machine import cpu_model

__all__ = ["TrainConfig", "environment", "export_checkpoint", "main", "train"]

logger = logging.getLogger(__name__)
EMBED_INIT_STD = 1.0  # word embeddings at RMS 1 per dim, the scale of a block's output at init (see train())


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        steps: all steps, the later stages' included.
        batch_size: examples per step.
        lr: peak learning rate (AdamW).
        seed: seed of the weights' init and of the data stream.
        aux: auxiliary loss, "hinge", "tied", "tied-cls", "untied" or "none" (see :mod:`.losses`).
        aux_weight: weight of the auxiliary loss.
        threads: torch CPU threads.
        warm_frac: share of the first stage drawn as warm-up scenes (few, larger cards).
        ckpt_every: steps between checkpoints.
        stage2: the second stage (the last ``stage2.steps`` before stage 3).
        stage3: the third stage (the last ``stage3.steps``; 0: none).
    """

    steps: int = 4500
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    aux: str = "hinge"
    aux_weight: float = 0.5
    threads: int = 2
    warm_frac: float = 0.1
    ckpt_every: int = 250
    stage2: StageConfig = field(default=DEFAULT_STAGE2)
    stage3: StageConfig = field(default=DEFAULT_STAGE3)

    @classmethod
    def from_flat(cls, **kw: Any) -> TrainConfig:
        """A config from flat keywords (``stage2_steps``, ``stage3_lr``, ... as in ``training_args.json``)."""
        stages = {"stage2": DEFAULT_STAGE2, "stage3": DEFAULT_STAGE3}
        for key in [k for k in kw if k.startswith(("stage2_", "stage3_"))]:
            name, attr = key.split("_", 1)
            stages[name] = replace(stages[name], **{attr: kw.pop(key)})
        return cls(**kw, stage2=stages["stage2"], stage3=stages["stage3"])

    def check(self) -> None:
        """Raise ValueError on stages that do not fit the run (see :func:`check_stages`)."""
        s2, s3 = self.stage2, self.stage3
        check_stages(self.steps, s2.steps, s2.pair + s2.side + s2.exist, s3.steps, s3.exist)

    def training_args(self) -> dict[str, Any]:
        """What ``model/training_args.json`` records (keys in this order)."""
        s2, s3 = self.stage2, self.stage3
        return {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
            "aux": self.aux,
            "aux_weight": self.aux_weight,
            "warm_frac": self.warm_frac,
            "threads": self.threads,
            "stage2_steps": s2.steps,
            "stage2_pair": s2.pair,
            "stage2_side": s2.side,
            "stage2_exist": s2.exist,
            "stage2_lr": s2.lr,
            "stage3_steps": s3.steps,
            "stage3_exist": s3.exist,
            "stage3_lr": s3.lr,
        }


def step_examples(step: int, cfg: TrainConfig, sched: Schedule, arch: EmbeddedArch) -> list[Example]:
    """The batch of training step ``step``: a function of the seed, the step and the schedule alone.

    Args:
        step: training step (0-based).
        cfg: the run (seed, batch size, warm-up share).
        sched: its schedule (stage boundaries and the later stages' example shares).
        arch: model sizes (the image size the scenes are drawn at).

    Returns:
        ``cfg.batch_size`` examples, drawn from the step's own random stream.
    """
    rng = np.random.default_rng([syn.TRAIN_STREAM, cfg.seed, step])
    warm = step < cfg.warm_frac * sched.main_steps
    stage2, stage3 = step >= sched.main_steps, step >= sched.stage3_start
    examples = []
    for _ in range(cfg.batch_size):
        r = rng.random() if stage2 else 1.0
        force_pair, force_side, force_exist = sched.forced(r, stage3)
        examples.append(
            sample_example(
                rng, warm=warm, arch=arch, force_pair=force_pair, force_side=force_side, force_exist=force_exist
            )
        )
    return examples


def environment() -> dict[str, Any]:
    """What besides the command decides a run's floats: library versions, the CPU and its kernels, BLAS settings.

    Weights are reproducible bit for bit only where all of this matches: torch and MKL pick their vectorised kernels
    by the CPU's instruction set (``ATEN_CPU_CAPABILITY``, ``MKL_CBWR`` override that), which changes the order of
    float sums (see the model card, "Retraining").
    """
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        **{k: os.environ.get(k) for k in ("MKL_DYNAMIC", "MKL_CBWR", "ATEN_CPU_CAPABILITY")},
    }


def _build(arch: EmbeddedArch) -> tuple[Any, Any]:
    processor = build_processor(arch)
    tok = processor.tokenizer
    model = build_model(
        len(tok), tok.convert_tokens_to_ids("<image>"), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, arch
    )
    return processor, model


def train(
    out: Path,
    config: TrainConfig | None = None,
    *,
    arch: EmbeddedArch | None = None,
    progress: bool = True,
    **flat: Any,
) -> Path:
    """Train (or resume) and write the final checkpoint in the hub layout to ``out / "model"``.

    The first stage (its schedule, curriculum and data) depends only on ``steps - stage2.steps - stage3.steps``,
    so a run of N steps resumed with ``--steps N+M --stage2-steps M`` is the same as a fresh run of that command
    (likewise for stage 3, with the same stage-2 settings).

    Args:
        out: run folder (``ckpt.pt``, ``train_log.jsonl``, ``environment.jsonl``, ``model/``).
        config: the run; None: :class:`TrainConfig` defaults.
        arch: model sizes; None: the shipped ones.
        progress: show a progress bar.
        **flat: overrides in flat form (``steps=...``, ``stage2_steps=...``, see :meth:`TrainConfig.from_flat`).

    Returns:
        ``out / "model"``.

    Raises:
        ValueError: on stages that do not fit the run.
    """
    cfg = config or TrainConfig()
    if flat:
        base = {k: v for k, v in cfg.training_args().items() if not k.startswith(("stage2_", "stage3_"))}
        cfg = TrainConfig.from_flat(**{**base, "ckpt_every": cfg.ckpt_every, **flat})
    cfg.check()
    # torch's BLAS on x86 is MKL, whose dynamic mode may use fewer threads than asked when the cores are busy; that
    # changes the order of float sums, so the weights would depend on the machine's load. MKL reads this when it
    # starts (a caller's own setting wins).
    os.environ.setdefault("MKL_DYNAMIC", "FALSE")
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    arch = arch or EmbeddedArch()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    processor, model = _build(arch)
    tok = processor.tokenizer
    # Scale: word embeddings start at RMS 1 per dim (HF's init gives 1/sqrt(width), swamped by the blocks' outputs;
    # see the model card); the ``scale_match`` term keeps the projector output there too.
    torch.nn.init.normal_(model.get_input_embeddings().weight, std=EMBED_INIT_STD)
    width = arch.text_width
    card_word_ids = torch.tensor(tok.convert_tokens_to_ids(list(CARD_CLASSES[1:])))
    pip_word_ids = torch.tensor(tok.convert_tokens_to_ids(list(PIP_CLASSES[1:])))
    count_word_ids = torch.tensor(tok.convert_tokens_to_ids(list(COUNT_CLASSES[1:])))
    side_word_ids = torch.tensor(tok.convert_tokens_to_ids(list(SIDE_CLASSES[1:])))
    card_id = int(tok.convert_tokens_to_ids("card"))
    word_ids = (card_word_ids, pip_word_ids, count_word_ids, side_word_ids, card_id)
    aux_mod = torch.nn.ParameterDict(
        {
            "none_card": torch.nn.Parameter(torch.randn(width) * 0.02),
            "none_pip": torch.nn.Parameter(torch.randn(width) * 0.02),
            "scale": torch.nn.Parameter(torch.tensor(10.0)),
        }
    )
    head = torch.nn.Linear(width, len(CARD_CLASSES) + len(PIP_CLASSES))
    params = list(model.parameters()) + list(aux_mod.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = Schedule(lr=cfg.lr, steps=cfg.steps, stage2=cfg.stage2, stage3=cfg.stage3)

    captured: dict[str, torch.Tensor] = {}
    model.model.multi_modal_projector.register_forward_hook(lambda _m, _i, o: captured.__setitem__("proj", o))
    ckpt = out / "ckpt.pt"
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        aux_mod.load_state_dict(state["aux"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        logger.info("resumed from step %d", start)
    env = {"start_step": start, **environment()}  # one line per (re)start: a run resumed elsewhere shows it
    with (out / "environment.jsonl").open("a") as f:
        f.write(json.dumps(env) + "\n")
    logger.info("environment: %s", env)
    log = (out / "train_log.jsonl").open("a")
    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress, desc="train")
    t0 = time.time()
    for step in bar:
        batch = collate(step_examples(step, cfg, sched, arch), processor)
        card_l, pip_l, count_l, side_l = (batch.pop(k, None) for k in PATCH_LABEL_KEYS)
        for g in opt.param_groups:
            g["lr"] = sched.lr_at(step)
        labels = batch.pop("labels")  # (B, T)
        logits = model(**batch).logits[:, :-1].float()  # (B, T-1, V)
        target = labels[:, 1:]  # (B, T-1)
        tok_loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")  # (B, T-1)
        n_tok = (target != IGNORE).sum(-1).clamp_min(1)  # (B,)
        loss = (tok_loss.sum(-1) / n_tok).mean()  # per-example mean: a 1-token answer weighs as much as a sentence
        aux_l = torch.zeros(())
        if cfg.aux != "none" and card_l is not None:
            emb = model.get_input_embeddings().weight  # (V, width)
            patch_labels = (card_l, pip_l, count_l, side_l)
            aux_l = aux_loss(cfg.aux, captured["proj"], patch_labels, emb, word_ids, aux_mod, head)
        total = loss + cfg.aux_weight * aux_l
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 10 == 0:
            rec = {
                "step": step,
                "loss": round(float(loss.detach()), 4),
                "aux": round(float(aux_l.detach()), 4),
                "lr": sched.lr_at(step),
                "elapsed_s": round(time.time() - t0, 1),
            }
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", aux=f"{float(aux_l.detach()):.3f}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            state = {
                "model": model.state_dict(),
                "aux": aux_mod.state_dict(),
                "head": head.state_dict(),
                "opt": opt.state_dict(),
                "step": step + 1,
            }
            torch.save(state, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
    log.close()
    final = out / "model"
    model.eval()
    model.save_pretrained(final)
    processor.save_pretrained(final)
    (final / "training_args.json").write_text(json.dumps(cfg.training_args(), indent=1))
    write_world(final)
    return final


def export_checkpoint(run_dir: Path, out: Path, arch: EmbeddedArch | None = None) -> Path:
    """Write the model of ``run_dir/ckpt.pt`` (e.g. of an unfinished run) in the hub layout to ``out``.

    Args:
        run_dir: run folder holding ``ckpt.pt``.
        out: where the hub layout goes.
        arch: model sizes; None: the shipped ones.

    Returns:
        ``out``.
    """
    import torch

    processor, model = _build(arch or EmbeddedArch())
    model.load_state_dict(torch.load(run_dir / "ckpt.pt", weights_only=False)["model"])
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    write_world(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line of the training script."""
    d, s2, s3 = TrainConfig(), DEFAULT_STAGE2, DEFAULT_STAGE3  # the defaults have one owner: the configs
    ap = argparse.ArgumentParser(prog="focus train-embedded", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/embedded"), help="run folder (checkpoint, log, model/)")
    ap.add_argument("--steps", type=int, default=d.steps, help="all steps, the second stage's included")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--aux", choices=AUX_CHOICES, default=d.aux)
    ap.add_argument("--threads", type=int, default=d.threads)
    ap.add_argument("--stage2-steps", type=int, default=s2.steps, help="last N steps: a second stage (0: none)")
    ap.add_argument("--stage2-pair", type=float, default=s2.pair, help="share of binding examples in stage 2")
    ap.add_argument("--stage2-side", type=float, default=s2.side, help="share of one-card side questions in stage 2")
    ap.add_argument("--stage2-exist", type=float, default=s2.exist, help="share of hard-negative existence in stage 2")
    ap.add_argument("--stage2-lr", type=float, default=s2.lr, help="stage 2 restarts at this multiple of --lr")
    ap.add_argument("--stage3-steps", type=int, default=s3.steps, help="N steps after stage 2 (in --steps)")
    ap.add_argument("--stage3-exist", type=float, default=s3.exist, help="share of existence questions in stage 3")
    ap.add_argument("--stage3-lr", type=float, default=s3.lr, help="stage 3 restarts at this multiple of --lr")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    cfg = TrainConfig(
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        aux=a.aux,
        threads=a.threads,
        stage2=StageConfig(a.stage2_steps, a.stage2_pair, a.stage2_side, a.stage2_exist, a.stage2_lr),
        stage3=StageConfig(a.stage3_steps, exist=a.stage3_exist, lr=a.stage3_lr),
    )
    try:
        cfg.check()
    except ValueError as e:
        ap.error(str(e))
    logging.basicConfig(level=logging.INFO)
    path = train(a.out, cfg, progress=not a.no_progress)
    logger.info("model written to %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
