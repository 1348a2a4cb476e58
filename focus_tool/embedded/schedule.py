"""Training stages of the embedded model: per-stage configs, the learning-rate schedule, each example's stage mix.

A run of ``steps`` steps is a first stage, then the last ``stage2.steps + stage3.steps`` steps: a second stage
(binding, side and existence examples, learning rate restarted at ``stage2.lr`` times the peak) and an optional
third (existence questions with hard negatives, restarted at ``stage3.lr``). Each stage depends only on the stages
before it, so a finished run resumed with more steps in a later stage is a fresh run of that command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StageConfig:
    """One later training stage.

    Attributes:
        steps: how many steps the stage lasts (0: no such stage).
        pair: share of binding examples (a framed pair, a question about one of its cards); stage 2 only.
        side: share of single-card side questions; stage 2 only.
        exist: share of existence questions with hard negatives (stage 3: the rest are drawn as in stage 2).
        lr: the learning rate restarts at this multiple of the peak learning rate.
    """

    steps: int
    pair: float = 0.0
    side: float = 0.0
    exist: float = 0.0
    lr: float = 0.5


DEFAULT_STAGE2 = StageConfig(steps=1000, pair=0.45, side=0.25, exist=0.0, lr=0.5)
DEFAULT_STAGE3 = StageConfig(steps=0, exist=0.25, lr=0.2)


def check_stages(
    steps: int, stage2_steps: int, forced_share: float, stage3_steps: int = 0, stage3_exist: float = 0.0
) -> None:
    """Refuse later stages that are not shorter than the run, or shares outside [0, 1].

    Args:
        steps: all steps of the run.
        stage2_steps: steps of the second stage.
        forced_share: the stage-2 pair + side + exist shares.
        stage3_steps: steps of the third stage.
        stage3_exist: the stage-3 existence share.

    Raises:
        ValueError: on stages too long or shares out of range.
    """
    if stage2_steps < 0 or stage3_steps < 0 or stage2_steps + stage3_steps >= steps:
        raise ValueError(
            f"stage2_steps and stage3_steps must be at least 0 and together below steps ({steps}); "
            f"got {stage2_steps} and {stage3_steps}"
        )
    if forced_share > 1:
        raise ValueError("the stage-2 pair + side + exist shares must sum to at most 1")
    if not 0 <= stage3_exist <= 1:
        raise ValueError(f"stage3_exist must be in [0, 1]; got {stage3_exist}")


@dataclass(frozen=True)
class Schedule:
    """Where the stages of a run start, and its learning rate per step.

    Attributes:
        lr: the peak learning rate.
        steps: all steps of the run.
        stage2: the second stage.
        stage3: the third stage.
    """

    lr: float
    steps: int
    stage2: StageConfig
    stage3: StageConfig

    @property
    def main_steps(self) -> int:
        """Steps of the first stage."""
        return self.steps - self.stage2.steps - self.stage3.steps

    @property
    def stage3_start(self) -> int:
        """First step of the third stage."""
        return self.steps - self.stage3.steps

    @property
    def warmup(self) -> int:
        """Linear warm-up steps of the first stage."""
        return max(1, int(0.04 * self.main_steps))

    def _cosine(self, t: float, peak: float) -> float:  # from peak * lr at t = 0 down to 0.05 * lr at t = 1
        return self.lr * (0.05 + (peak - 0.05) * 0.5 * (1 + math.cos(math.pi * t)))

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step``."""
        main_steps, stage3_start, warmup = self.main_steps, self.stage3_start, self.warmup
        if step >= stage3_start:  # stage 3: restart at stage3.lr * lr
            return self._cosine((step - stage3_start) / max(1, self.stage3.steps), self.stage3.lr)
        if step >= main_steps:  # stage 2: restart at stage2.lr * lr
            return self._cosine((step - main_steps) / max(1, self.stage2.steps), self.stage2.lr)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        return self._cosine((step - warmup) / max(1, main_steps - warmup), 1.0)

    def forced(self, r: float, stage3: bool) -> tuple[bool, bool, bool]:
        """Which later-stage example a draw ``r`` (1.0 in stage 1) asks for: (pair, side, exist)."""
        s2, s3 = self.stage2, self.stage3
        if stage3:  # a share stage3.exist of existence questions, the rest drawn as in stage 2
            r = -1.0 if r < s3.exist else (r - s3.exist) / (1 - s3.exist)
        force_pair, force_side = 0 <= r < s2.pair, s2.pair <= r < s2.pair + s2.side
        force_exist = r < 0 or s2.pair + s2.side <= r < s2.pair + s2.side + s2.exist
        return force_pair, force_side, force_exist
