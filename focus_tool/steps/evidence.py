"""After Stage VI: how sure the model was of its answer (:class:`focus_tool.result.AnswerEvidence`).

Read from the pass that made the answer, no extra pass (docs/method.md, "Answer evidence"): option answers get every
option's probability, the softmax of the logit scheme's mean log-probabilities or, under the letter scheme, of the
option letters' log-probabilities at the first reply position; free answers the mean log-probability of the generated
tokens (:class:`focus_tool.adapters.base.Reply`). Below the preset's ``answer.low_confidence`` the
result carries a ``low_confidence`` warning.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from focus_tool.prompts import LETTERS
from focus_tool.result import AnswerEvidence, ResultWarning


def option_probabilities(options: Sequence[str], scores: npt.NDArray[np.float64]) -> dict[str, float]:
    """Every option's probability: the softmax of the logit scheme's (K,) mean log-probabilities.

    The scheme answers with the argmax of ``scores``, so the chosen option is the most probable one; the values are
    rounded to 6 decimals (their sum is 1 within 1e-5).
    """
    z = np.asarray(scores, dtype=np.float64) - float(np.max(scores))
    p = np.exp(z) / np.exp(z).sum()
    return {o: round(float(v), 6) for o, v in zip(options, p, strict=True)}


def option_evidence(options: Sequence[str], scores: npt.NDArray[np.float64], threshold: float) -> AnswerEvidence:
    """The evidence of a logit-scheme answer (the argmax of ``scores``)."""
    probs = option_probabilities(options, scores)
    conf = probs[options[int(np.argmax(scores))]]
    return AnswerEvidence(kind="options", confidence=conf, options=probs, threshold=threshold, low=conf < threshold)


def free_evidence(reply: str, threshold: float) -> AnswerEvidence | None:
    """The evidence of a generated reply from its mean token log-probability (None if the adapter gave none)."""
    mean = getattr(reply, "mean_logprob", None)
    if mean is None:
        return None
    mean = min(0.0, float(mean))
    conf = float(np.exp(mean))
    return AnswerEvidence(
        kind="free", confidence=round(conf, 6), mean_logprob=round(mean, 6), threshold=threshold, low=conf < threshold
    )


def letter_evidence(
    options: Sequence[str], letter_logprobs: npt.NDArray[np.float64], reply: str, threshold: float
) -> AnswerEvidence:
    """The evidence of a letter-scheme answer: every option's probability from the first reply position.

    Args:
        options: the options, shown as (A), (B), ... in this order.
        letter_logprobs: (K,) log-probability of each option's letter as the first reply token.
        reply: the generated reply; the option it names (its first letter) is the chosen one, else the most probable.
        threshold: ``answer.low_confidence``.
    """
    probs = option_probabilities(options, letter_logprobs)
    head = reply.strip()[:1].upper()
    chosen = LETTERS.index(head) if head and head in LETTERS[: len(options)] else int(np.argmax(letter_logprobs))
    conf = probs[options[chosen]]
    mean = getattr(reply, "mean_logprob", None)
    return AnswerEvidence(
        kind="options",
        confidence=conf,
        options=probs,
        mean_logprob=None if mean is None else round(min(0.0, float(mean)), 6),
        threshold=threshold,
        low=conf < threshold,
    )


def reply_evidence(
    reply: str, options: Sequence[str] | None, letter_ids: Sequence[int] | None, threshold: float
) -> AnswerEvidence | None:
    """A generated reply's evidence: per option (:func:`letter_evidence`) when options were shown and the reply kept
    its first position's distribution and the letters are distinct tokens; else :func:`free_evidence`.
    """
    first = getattr(reply, "first_logprobs", None)
    if options and first is not None and letter_ids is not None and len(set(letter_ids)) == len(letter_ids):
        return letter_evidence(options, first[list(letter_ids)].double().numpy(), reply, threshold)
    return free_evidence(reply, threshold)


def confidence_warnings(evidence: AnswerEvidence | None) -> list[ResultWarning]:
    """A ``low_confidence`` warning when the answer's confidence is under the threshold; else none."""
    if evidence is None or not evidence.low:
        return []
    return [
        ResultWarning(
            code="low_confidence",
            message=f"the model is unsure of its answer (confidence {evidence.confidence:.2f} < "
            f"{evidence.threshold}); treat it as a guess",
        )
    ]
