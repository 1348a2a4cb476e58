"""Auxiliary losses on the VISION side of the embedded model (``--aux``).

Each 8-px patch's projector output is tied to the words of what it shows:
- ``hinge`` (default): margins instead of a softmax: every patch of a card has cosine >= a margin
  (:data:`POS_MARGIN`) with the (detached) input embedding of its card colour, of the word "card", of its pip
  colour and pip count (when visible / countable) and of "left" / "right" for its half of the view; |cosine| <= 0.1
  with every other of these words; plus :func:`scale_match` (projector output RMS = word-embedding RMS);
- ``tied-cls``: logits are scaled cosines between the projector output and the LM input embeddings of the colour
  words;
- ``tied``: ``tied-cls`` plus an alignment term, 1 - cos(projector output, e(colour) + e("card") [+ e(pip colour)]);
- ``untied``: a separate linear head (not saved with the model) classifies each patch, plus :func:`scale_match`;
- ``none``: no auxiliary loss.
The LM's cached keys and values (what FOCUS reads) are never the target of any loss. The runs behind these choices
are logged in ``model/MODEL_CARD.md``.
"""

from __future__ import annotations

from typing import Any

from focus_tool.embedded.data import CARD_CLASSES, IGNORE

# hinge margins per word group: a patch must reach cosine >= margin with each of its labelled words. With 0.5 for all
# five groups the targets are jointly unreachable (five near-orthogonal unit words: sum of squared cosines <= 1), and
# the last-added group (count) was the one the vision side failed; the sum below is 0.86
POS_MARGIN = {"card": 0.5, "object": 0.4, "pip": 0.45, "count": 0.35, "side": 0.35}
AUX_CHOICES: tuple[str, ...] = ("hinge", "tied", "tied-cls", "untied", "none")
"""The ``--aux`` losses (module docstring); "none" trains on the answer tokens alone."""


def hinge_alignment(proj: Any, labels: Any, words: Any, pos: float = 0.5, neg: float = 0.1) -> Any:
    """Patch-word alignment with margins and no push past them.

    A patch labelled k should have cosine >= ``pos`` with word k; every other (patch, word) pair |cosine| <= ``neg``.
    Once a margin holds its gradient is zero, so background patches end up *unrelated* to the words (cosine near
    0), not anti-aligned as a softmax over cosines drives them.

    Args:
        proj: (n, P, width) projector outputs.
        labels: (n, P) class per patch, 0 = none, k >= 1 = words[k-1], IGNORE = unsure.
        words: (K, width) word input embeddings.
        pos: the least cosine of a labelled patch with its word.
        neg: the largest |cosine| of every other (patch, word) pair.
    """
    import torch.nn.functional as F

    # the words are the fixed reference (detached): only the vision side moves. With trainable targets the four pip
    # words drifted to a shared direction (cosine ~0.5 of a card patch with every pip word, pip colour at chance)
    cos = F.normalize(proj, dim=-1) @ F.normalize(words.detach(), dim=-1).T  # (n, P, K)
    valid = (labels != IGNORE)[..., None].expand_as(cos)  # (n, P, K)
    onehot = F.one_hot(labels.clamp_min(0), words.shape[0] + 1)[..., 1:].bool()  # (n, P, K)
    is_pos, is_neg = onehot & valid, ~onehot & valid
    pos_loss = F.relu(pos - cos)[is_pos]  # labelled (patch, word) pairs: cos >= pos
    neg_loss = F.relu(cos.abs() - neg)[is_neg]  # all other pairs: |cos| <= neg
    # positives and negatives are averaged separately: cards cover a few % of the patches, and a pooled mean let a
    # large component shared by every patch (orthogonal to all words) satisfy the negatives and starve the positives
    zero = cos.new_zeros(())
    return (pos_loss.mean() if pos_loss.numel() else zero) + (neg_loss.mean() if neg_loss.numel() else zero)


def scale_match(proj: Any, words: Any) -> Any:
    """(log of a patch's projector-output RMS over the word embeddings' RMS)^2, averaged over patches.

    Keeps image tokens on the scale of word tokens in the LM's residual stream (vision side: the word embeddings are
    the fixed reference, detached).
    """
    import torch

    ms_proj = proj.pow(2).mean(-1).clamp_min(1e-8)  # (n, P) mean square per patch
    ms_word = words.detach().pow(2).mean()
    return (0.5 * (torch.log(ms_proj) - torch.log(ms_word))).pow(2).mean()


def aux_loss(
    aux: str,
    proj: Any,
    patch_labels: tuple[Any, Any, Any, Any],
    emb: Any,
    word_ids: tuple[Any, Any, Any, Any, int],
    aux_mod: Any,
    head: Any,
) -> Any:
    """The auxiliary loss of one batch (``aux`` != "none").

    Args:
        aux: "hinge", "tied", "tied-cls" or "untied".
        proj: (n_img, G*G, width) projector outputs.
        patch_labels: card, pip, count and side labels, each (n_img, G*G).
        emb: (V, width) the LM's input-embedding weight.
        word_ids: ids of the card-colour (6,), pip-colour (4,), count (4,) and side (2,) words, and of "card".
        aux_mod: ParameterDict with "none_card", "none_pip" (width,) and "scale" () (the ``tied*`` losses).
        head: linear head width -> card + pip classes (``untied``).

    Returns:
        () the loss.
    """
    import torch
    import torch.nn.functional as F

    card_l, pip_l, count_l, side_l = patch_labels
    card_word_ids, pip_word_ids, count_word_ids, side_word_ids, card_id = word_ids
    aux_loss = torch.zeros(())
    if aux == "hinge":
        obj_l = torch.where(card_l == IGNORE, card_l, (card_l > 0).long())
        m = POS_MARGIN
        aux_loss = (
            hinge_alignment(proj, card_l, emb[card_word_ids], pos=m["card"])
            + hinge_alignment(proj, pip_l, emb[pip_word_ids], pos=m["pip"])
            + hinge_alignment(proj, obj_l, emb[card_id][None], pos=m["object"])
            + hinge_alignment(proj, count_l, emb[count_word_ids], pos=m["count"])
            + hinge_alignment(proj, side_l, emb[side_word_ids], pos=m["side"])
            + scale_match(proj, emb)
        )
    elif aux in ("tied", "tied-cls"):
        card_w = torch.cat([aux_mod["none_card"][None], emb[card_word_ids]])  # (7, width)
        pip_w = torch.cat([aux_mod["none_pip"][None], emb[pip_word_ids]])  # (5, width)
        pn = F.normalize(proj, dim=-1)
        card_logits = aux_mod["scale"] * pn @ F.normalize(card_w, dim=-1).T  # (n_img, G*G, 7)
        pip_logits = aux_mod["scale"] * pn @ F.normalize(pip_w, dim=-1).T
    else:
        logits = head(proj)  # (n_img, G*G, 7 + 5)
        card_logits, pip_logits = logits[..., : len(CARD_CLASSES)], logits[..., len(CARD_CLASSES) :]
    if aux != "hinge":
        aux_loss = F.cross_entropy(card_logits.flatten(0, 1), card_l.flatten(), ignore_index=IGNORE) + F.cross_entropy(
            pip_logits.flatten(0, 1),
            pip_l.flatten(),
            ignore_index=IGNORE,
        )
    if aux == "untied":  # same scale control as ``hinge``; the head itself is not tied to any word
        aux_loss = aux_loss + scale_match(proj, emb)
    if aux == "tied":  # alignment: a card patch points along e(colour) + e("card") (+ e(pip colour))
        want = torch.zeros_like(proj)  # (n_img, G*G, width)
        on_card, on_pip = card_l > 0, pip_l > 0
        want[on_card] = emb[card_word_ids[card_l[on_card] - 1]] + emb[card_id]
        want[on_pip] = want[on_pip] + emb[pip_word_ids[pip_l[on_pip] - 1]]
        sel = on_card | on_pip
        if bool(sel.any()):
            aux_loss = aux_loss + (1 - F.cosine_similarity(proj[sel], want[sel], dim=-1)).mean()
    return aux_loss
