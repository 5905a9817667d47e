"""The prefix methods' model: trainable vectors at prefix and infix positions (section 5.1).

PreEmbed and PreLayer (Li & Liang 2021) wrap a frozen GPT (``PrefixTuned``);
``minilora.paper.baselines.apply_method`` makes them, alone or under LoRA (Appendix E).
"""

from __future__ import annotations

import numpy as np

from minilora import backend, ops
from minilora import functional as F
from minilora.creation import default_generator
from minilora.nn import Module, Parameter
from minilora.tensor import Tensor, no_grad


class PrefixTuned(Module):
    """PreEmbed and PreLayer: trainable vectors at l_p prefix and l_i infix positions.

    The sequence the frozen GPT reads is ``[l_p prefix] prompt [l_i infix] answer``:
    the prefix comes before the prompt, the infix between the prompt and the
    answer (Li & Liang's prefixing and infixing; for a training batch the
    prompt ends where the targets begin, at generation time it is all the
    given text). The special tokens are not in the vocabulary: their input to
    block 0 is a trainable vector ("a trainable word embedding, or equivalently
    the activation after the embedding layer"), with no position embedding of
    its own, so the real tokens keep the positions 0, 1, ... the base model
    was pretrained with and the context of 128 still holds the longest example.

    * PreEmbed (``every_layer=False``): one set, ``special`` of shape (1, S, C).
    * PreLayer (``every_layer=True``): the input of every block i at the special
      positions is ``special[i]``, shape (L, S, C); the activations the
      previous block computed there are simply replaced. (Replacing the last
      block's output would change nothing that is scored, so L sets, as the
      paper's count L x d x (l_p + l_i).)

    Initialised as Li & Liang suggest, from the activations of real tokens:
    random characters (drawn with ``rng``, or ``init_ids``) run through the
    frozen base model at positions 0..S-1.
    """

    def __init__(self, gpt, l_p: int, l_i: int, every_layer: bool, rng=None, init_ids=None):
        self.gpt = gpt.requires_grad_(False)
        self.l_p, self.l_i, self.every_layer = int(l_p), int(l_i), bool(every_layer)
        S = self.l_p + self.l_i
        if init_ids is None:
            rng = rng if rng is not None else default_generator()
            init_ids = rng.integers(gpt.config.vocab_size, size=S)
        acts = block_inputs(gpt, np.asarray(init_ids, dtype=np.int64)[None, :])
        sets = acts if self.every_layer else acts[:1]
        xp = backend.get_array_module(sets[0])
        self.special = Parameter(xp.stack([a[0] for a in sets]))  # (L or 1, S, C)

    @property
    def config(self):
        return self.gpt.config

    @property
    def wte(self):
        return self.gpt.wte

    def forward(self, idx, targets=None, *, cache=None, positions=None, key_padding=None):
        """Like ``GPT.forward``: logits (B, T, vocab) for the T real tokens, and the loss.

        The prediction made after the last prompt token is read at the last
        infix slot (the answer follows the infix). With a ``cache`` (generation)
        the special vectors enter on the first call and stay in the cache.
        """
        gpt, xp = self.gpt, backend.get_array_module(self.gpt.wte.weight.data)
        idx = xp.asarray(idx.data if isinstance(idx, Tensor) else idx)
        B, T = idx.shape
        first = cache is None or cache.length == 0
        if positions is None:
            positions = xp.arange(T) + (0 if first else cache.real_length)
        limit = gpt.config.block_size
        if int(xp.max(positions)) >= limit:
            raise ValueError(f"PrefixTuned: a sequence longer than block_size={limit} tokens")
        x = gpt.drop(gpt.wte(idx) + gpt.wpe(positions))  # (B, T, C) the real tokens
        if not first:  # a generation step: the special slots are already in the cache
            if key_padding is not None:
                key_padding = self._padding(xp, key_padding, cache.real_start)
            cache.real_length += T
            for block in gpt.blocks:
                x = block(x, cache, key_padding)
            return self._head(x, targets)
        # the last prompt token of each row: where the infix goes
        if targets is not None:
            scored = backend.to_numpy(xp.asarray(targets)) != -100
            last = np.where(scored.any(axis=1), scored.argmax(axis=1), T - 1)
        else:
            last = np.full(B, T - 1)
        slots, special, out = self._layout(B, T, last)
        W = T + self.l_p + self.l_i
        if key_padding is not None:
            key_padding = self._padding(xp, key_padding, T)
        if cache is not None:
            cache.real_start, cache.real_length = T, T
        # gather: the real tokens' rows, then the S special rows, into the W slots
        x = ops.concat([x.reshape(B * T, -1), self.special[0]], axis=0)[xp.asarray(slots)]
        for i, block in enumerate(gpt.blocks):
            if i > 0 and self.every_layer:  # replace the previous block's output there
                flat = ops.concat([x.reshape(B * W, -1), self.special[i]], axis=0)
                x = flat[xp.asarray(special)]
            x = block(x, cache, key_padding)  # (B, W, C)
        x = x.reshape(B * W, -1)[xp.asarray(out)]  # (B, T, C) read where each token predicts
        return self._head(x, targets)

    def _layout(self, B: int, T: int, last):
        """Index arrays for the W = l_p + T + l_i slots of each row.

        slots (B, W): row of concat(real tokens (B*T), special (S)) for each slot.
        special (B, W): row of concat(slots (B*W), special (S)) keeping real slots.
        out (B, T): the slot whose output predicts the token after real token t.
        """
        l_p, l_i = self.l_p, self.l_i
        W = T + l_p + l_i
        slots = np.empty((B, W), dtype=np.int64)
        special = np.arange(B * W).reshape(B, W)
        out = np.empty((B, T), dtype=np.int64)
        for b in range(B):
            a = int(last[b]) + 1  # tokens up to and including the last prompt token
            order = np.concatenate(
                [
                    B * T + np.arange(l_p),  # prefix
                    b * T + np.arange(a),  # the prompt
                    B * T + l_p + np.arange(l_i),  # infix
                    b * T + np.arange(a, T),  # the answer (and padding)
                ]
            )
            slots[b] = order
            where = np.concatenate([np.arange(l_p), l_p + a + np.arange(l_i)])
            special[b, where] = B * W + np.arange(l_p + l_i)
            real = np.concatenate([l_p + np.arange(a), l_p + a + l_i + np.arange(T - a)])
            out[b] = b * W + real
            if l_i:
                out[b, a - 1] = b * W + l_p + a + l_i - 1  # the last infix slot
        return slots, special, out

    def _padding(self, xp, key_padding, prompt_len: int):
        """(B, real keys) padding flags -> (B, all keys): special slots are never padding."""
        kp = xp.asarray(key_padding)
        B = kp.shape[0]
        pre, inf = xp.zeros((B, self.l_p), dtype=bool), xp.zeros((B, self.l_i), dtype=bool)
        return xp.concatenate([pre, kp[:, :prompt_len], inf, kp[:, prompt_len:]], axis=1)

    def _head(self, x, targets):

        gpt = self.gpt
        logits = F.linear(gpt.ln_f(x), gpt.wte.weight)
        if targets is None:
            return logits, None
        xp = backend.get_array_module(logits.data)
        return logits, F.cross_entropy(logits, xp.asarray(targets))

    def extra_repr(self):
        return f"l_p={self.l_p}, l_i={self.l_i}, every_layer={self.every_layer}"


@no_grad()
def block_inputs(gpt, ids) -> list[np.ndarray]:
    """The input of each block (before block i), for token ids (B, T) at positions 0..T-1."""
    xp = backend.get_array_module(gpt.wte.weight.data)
    ids = xp.asarray(ids)
    x = gpt.wte(ids) + gpt.wpe(xp.arange(ids.shape[1]))
    inputs = []
    for block in gpt.blocks:
        inputs.append(x.data.copy())
        x = block(x)
    return inputs


__all__ = ["PrefixTuned", "block_inputs"]
