"""A causal language model warm-started from an encoder checkpoint, predicting over a vocabulary shortlist.

The packaged MiniLM is a bidirectional BERT encoder. As BERT2BERT builds its
decoder (Rothe, Narayan and Severyn 2020), the same weights run as a decoder
(``is_decoder=True``: a causal self-attention mask, no cross-attention), so the
state at position ``t`` sees tokens ``<= t`` only and predicts token ``t + 1``.

The output layer covers a *shortlist*: the most frequent tokens of the training
split plus one out-of-vocabulary class, as the Stack Overflow next-word
prediction benchmark does with its 10k-word vocabulary (Reddi et al. 2021,
"Adaptive Federated Optimization"; TFF and FedJAX). Over BERT's 30,522
word pieces the output layer and its softmax cost about as much as the whole
6-layer encoder on CPU; a 5k shortlist covers ~97% of the tokens of the House of
Commons corpus. The layer is initialised from the input embeddings of the
shortlisted tokens (a tied initialisation, trained untied: DP-SGD's ghost
clipping and the engine's row-sparse embedding updates both need the input
table not to be shared) and its bias from the smoothed log unigram frequencies.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


class CausalLM(nn.Module):
    """``decoder`` (an HF BERT-like model run causally) + a linear layer over ``len(vocab_ids) + 1`` classes.

    ``forward(input_ids, attention_mask, labels)`` returns ``.logits`` (B, T, C) where position ``t``
    scores token ``t + 1``, and, with ``labels`` (the token ids, -100 on padding), ``.loss``: the
    mean cross-entropy over every position whose next token is not padding.
    """

    def __init__(self, decoder: nn.Module, vocab_ids: Sequence[int], vocab_size: int) -> None:
        super().__init__()
        ids = torch.as_tensor(np.asarray(vocab_ids, dtype=np.int64))
        if ids.numel() == 0 or len(torch.unique(ids)) != len(ids) or ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(f"vocab_ids must be distinct token ids in [0, {vocab_size})")
        self.decoder = decoder
        self.n_classes = len(ids) + 1  # the last class is "out of vocabulary"
        self.head = nn.Linear(decoder.config.hidden_size, self.n_classes)
        to_class = torch.full((vocab_size,), self.n_classes - 1, dtype=torch.long)
        to_class[ids] = torch.arange(len(ids))
        self.register_buffer("to_class", to_class, persistent=False)
        self.register_buffer("class_tokens", ids, persistent=False)

    @property
    def oov_class(self) -> int:
        return self.n_classes - 1

    def init_head(self, counts: Sequence[float], oov_token: int) -> None:
        """Weights from the input embeddings of the shortlist (OOV class: ``oov_token``'s), bias from
        the add-one smoothed log frequencies ``counts`` (one per class, the last for OOV)."""
        emb = self.decoder.get_input_embeddings().weight
        c = torch.as_tensor(np.asarray(counts, dtype=np.float64))
        with torch.no_grad():
            self.head.weight[:-1].copy_(emb[self.class_tokens])
            self.head.weight[-1].copy_(emb[oov_token])
            self.head.bias.copy_(torch.log((c + 1) / (c.sum() + len(c))).float())

    def next_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, T) target class of each position: the class of the next token, -100 where there is none."""
        nxt = torch.full_like(labels, IGNORE)
        valid = labels[:, 1:] != IGNORE
        nxt[:, :-1] = torch.where(valid, self.to_class[labels[:, 1:].clamp(min=0)], IGNORE)
        return nxt

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None):
        from transformers.modeling_outputs import CausalLMOutput

        h = self.decoder(input_ids=input_ids, attention_mask=attention_mask,
                         inputs_embeds=inputs_embeds).last_hidden_state
        logits = self.head(h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), self.next_classes(labels).flatten(),
                                   ignore_index=IGNORE)
        return CausalLMOutput(loss=loss, logits=logits)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T) negative log-likelihood of each target class, 0 where the target is -100."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets.clamp(min=0), reduction="none")
    return nll.masked_fill(targets == IGNORE, 0.0)


def build(model_path: str, vocab_ids: Sequence[int], counts: Sequence[float], oov_token: int) -> CausalLM:
    """The causal MiniLM (or any BERT-like checkpoint) with an initialised shortlist head; the OOV
    class starts from ``oov_token``'s input embedding ([UNK])."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_path)
    config.is_decoder = True
    config.add_cross_attention = False
    extra = {"add_pooling_layer": False} if config.model_type == "bert" else {}  # the pooler is unused
    decoder = AutoModel.from_pretrained(model_path, config=config, **extra)
    model = CausalLM(decoder, vocab_ids, config.vocab_size)
    model.init_head(counts, oov_token)
    return model
