"""The course's parts: where each is written, what it must do, and its contract with the grader.

``PARTS`` lists the 15 regions students write (``# BEGIN STUDENT: <part>`` in the library's
source), in the order a course meets them. ``CONTRACTS`` is what the grader holds each part
to, written out in the handout's README (``student.student_readme``):

* ``defines``: what the region must leave behind (a return value, the names the code after
  the region uses);
* ``relies``: what it may rely on. A part is graded alone: every other part is the
  reference's, so a part may rely on the other parts' contracts, never on state that only
  its own version of another part would leave;
* ``autograd``: whether the engine's autograd may compute the part's backward (a part
  composed of engine ops) or the part is the backward itself;
* ``accepted``: correct answers written differently from the reference that get full marks
  (``tests/test_grader_alternatives.py`` grades one of each).

Only the code between the markers is graded: the grader puts the student's regions into the
reference package, so a helper function must be written inside the region.
"""

from __future__ import annotations

# part id: (file, where, what to write). In the order a course meets them.
PARTS = {
    "topo_order": (
        "tensor.py",
        "_topological_order",
        "every node the root depends on, each after all of its inputs, iteratively",
    ),
    "backward": (
        "tensor.py",
        "Tensor.backward",
        "walk the nodes outputs-first, apply each _backward, accumulate the gradients",
    ),
    "unbroadcast": (
        "broadcasting.py",
        "unbroadcast",
        "sum a gradient back to an input's shape (new leading axes, stretched size-1 axes)",
    ),
    "matmul_backward": ("ops.py", "matmul", "dL/da = G b^T and dL/db = a^T G, for batches too"),
    "softmax": ("functional.py", "softmax", "the stable softmax along `axis` and its backward"),
    "layer_norm": (
        "functional.py",
        "layer_norm",
        "layer norm over the last axis, forward and backward (x, weight, bias)",
    ),
    "lora_init": ("lora.py", "LoRALinear.add_adapter", "A random, B zero, so dW = B A = 0"),
    "lora_forward": ("lora.py", "LoRALinear.forward", "Eq. 3: base(x) + (alpha/r) B A x"),
    "merge": (
        "lora.py",
        "LoRALinear.delta_weight and .merged_weight",
        "dW = (alpha/r) B A and W = W0 + dW",
    ),
    "unmerge": ("lora.py", "LoRALinear.unmerge", "W0 = W - dW"),
    "inject_lora": (
        "lora.py",
        "inject_lora",
        "wrap every Linear that a target names in a LoRALinear",
    ),
    "mark_trainable": (
        "lora.py",
        "mark_only_lora_as_trainable",
        "freeze everything but A and B (and the biases `bias` names)",
    ),
    "answer_mask": (
        "work/tasks.py",
        "task_batch",
        "inputs and targets whose loss covers the answer tokens only",
    ),
    "train_step": (
        "work/train.py",
        "train_step",
        "the loss, zero_grad, backward, clipping, one optimizer step",
    ),
    "greedy": ("transformer.py", "sample_next", "greedy decoding: the most likely token per row"),
}

CONTRACTS = {
    "topo_order": {
        "defines": "return a list of every node `root` depends on through `_parents` "
        "(root included), each once, each after all of its inputs; the root is last",
        "relies": "`node._parents` and `node.requires_grad`",
        "autograd": "not applicable (no gradient here)",
        "accepted": "any topological order (depth-first, Kahn's in-degree order, ...); "
        "nodes that do not require grad left out or kept",
        "limits": "iterative (a chain 5,000 ops deep), each node expanded once (a node "
        "reached by 2^40 paths must not take 2^40 steps)",
    },
    "backward": {
        "defines": "every leaf that requires grad gets its gradient added into `.grad` (a new "
        "array the first time, never one that the graph or the caller still holds); the "
        "graph is freed (`_backward = None`, `_parents = ()`) unless `retain_graph`",
        "relies": "`grad` (already the seed: ones for a scalar, else the `grad=` passed in, "
        "in self's dtype), `_topological_order(self)` and each node's `_backward(g)`, which "
        "returns one gradient (or None) per parent",
        "autograd": "this part is autograd",
        "accepted": "`.grad = .grad + g` or `+=`; any way of collecting the gradients that "
        "reach a node before it is used",
        "limits": "backward through a freed node raises RuntimeError (the reference's message "
        "is fine)",
    },
    "unbroadcast": {
        "defines": "return an array of exactly `shape` and of grad's dtype: grad summed over "
        "its extra leading axes and over the axes where `shape` has 1 and grad does not",
        "relies": "nothing but `grad` and `shape`",
        "autograd": "not applicable (it is called by the ops' backward)",
        "accepted": "summing axis by axis, keepdims or a reshape at the end; returning grad "
        "itself when the shapes are already equal",
        "limits": "",
    },
    "matmul_backward": {
        "defines": "return (dL/da, dL/db) from the backward closure, each of its input's shape "
        "(summed over broadcast batch axes) and dtype, None for an input that does not "
        "require grad",
        "relies": "`g`, `a.data`, `b.data`, `mm` and `unbroadcast`",
        "autograd": "no: this part is the backward itself",
        "accepted": "np.matmul, einsum, swapaxes or transpose of the last two axes",
        "limits": "",
    },
    "softmax": {
        "defines": "return a Tensor of x's shape and dtype: softmax along `axis` (negative "
        "too), finite for inputs of any size, with its gradient",
        "relies": "the engine (Tensor ops, `make_result`)",
        "autograd": "yes: one op with its own backward (`make_result`), or composed of engine "
        "ops (`exp`, `max`, `sum`, `/`) with autograd doing the backward",
        "accepted": "either form; graded through `Tensor.backward`",
        "limits": "",
    },
    "layer_norm": {
        "defines": "return a Tensor of x's shape and dtype: (x - mean) / sqrt(var + eps) * w + b "
        "over the last axis (var divides by n), w = 1 and b = 0 when None, with gradients for "
        "x, weight and bias",
        "relies": "the engine (Tensor ops, `make_result`)",
        "autograd": "yes: one op with its own backward, or composed of engine ops",
        "accepted": "either form; any correct arrangement of the backward's terms",
        "limits": "",
    },
    "lora_init": {
        "defines": "`A`: a bias-free Linear (weight (r, d_in), W0's dtype) drawn from `rng` "
        "(init='kaiming': U(-1/sqrt(d_in), 1/sqrt(d_in)); 'gaussian': N(0, 1/r^2)); `B`: a "
        "bias-free Linear (weight (d_out, r), W0's dtype) of zeros",
        "relies": "`config`, `rng` (the generator passed in: the same seed gives the same A), "
        "`dtype`, `self.in_features`, `self.out_features`, `zeros_linear`",
        "autograd": "not applicable",
        "accepted": "drawing with `rng.uniform`, `rng.normal` or `rng.standard_normal() / r`; "
        "B made with `zeros_linear` or any zero weight",
        "limits": "",
    },
    "lora_forward": {
        "defines": "return h = base_layer(x) + scaling * B(A(dropout(x))) as a Tensor built "
        "from Tensors (gradients reach A and B), in x's dtype; dropout on the adapter's input "
        "only, and only in training (`F.dropout(x, p, self.training)`)",
        "relies": "`A`, `B` (the active adapter's layers), `scaling` (alpha/r or alpha/sqrt(r) "
        "with rsLoRA), `p`",
        "autograd": "yes: the engine computes the backward",
        "accepted": "any order of the product and the scaling; explicit `@` with `.weight.T`",
        "limits": "",
    },
    "merge": {
        "defines": "`delta_weight` returns (alpha/r) B A of W0's shape (W0's dtype, or `dtype` "
        "when given); `merged` in `merged_weight` is W0 + dW as a new array",
        "relies": "the adapter's config (its `scaling`) and weights",
        "autograd": "not applicable",
        "accepted": "any order of the product and the scaling",
        "limits": "`merged_weight` must not change the layer: `lora.merge(model)` calls it to "
        "check every layer before any layer changes",
    },
    "unmerge": {
        "defines": "set `base_layer.weight.data` back to W0 (to rounding, in W0's dtype) for "
        "the merged adapter",
        "relies": "what the reference merge leaves: W = W0 + delta_weight(merged_adapter) and "
        "`self.merged_adapter`; not a copy of W0 saved by your own merge (graded alone, "
        "merge is the reference's, which saves none)",
        "autograd": "not applicable",
        "accepted": "`-=` in place or a new array",
        "limits": "",
    },
    "inject_lora": {
        "defines": "`layers`: {name: LoRALinear} for each name in `names` that a target names "
        "(the full name, or a dotted suffix of it: `_matches`), each put in the model with "
        "`model.set_submodule`, wrapping the model's own Linear; a LoRALinear already there is "
        "kept (the new adapter is added to it)",
        "relies": "`names` (the model's Linear and LoRALinear layers), `config.target_modules`",
        "autograd": "not applicable",
        "accepted": "any way of matching names that agrees with `_matches`",
        "limits": "",
    },
    "mark_trainable": {
        "defines": "`requires_grad` of every parameter: True for the A and B of every adapter, "
        "for biases as `bias` says ('all', 'lora_only': the biases of wrapped layers), False "
        "for everything else",
        "relies": "`model.named_parameters()`, `bias`, `lora_bias_names`",
        "autograd": "not applicable",
        "accepted": "matching by names or by walking the LoRA layers",
        "limits": "",
    },
    "answer_mask": {
        "defines": "row i of `x` (the tokens but the last) and of `y` (the next token where it "
        "is an answer token, `ignore_index` elsewhere, terminator included)",
        "relies": "`ids` (prompt + answer tokens), `p` (the prompt's length), `x` zeros and `y` "
        "filled with `ignore_index`",
        "autograd": "not applicable",
        "accepted": "slices, loops or np.where",
        "limits": "",
    },
    "train_step": {
        "defines": "return this batch's loss as a float (before the step); the optimizer's "
        "step sees this batch's gradients alone, clipped to a global norm `grad_clip` when "
        "it is > 0 (not clipped when 0); a non-finite loss returns without a step",
        "relies": "`model(x, y)` -> (logits, loss), `optimizer` (its `params`, `zero_grad`, "
        "`step`), `clip_grad_norm`",
        "autograd": "yes: `loss.backward()`",
        "accepted": "zero_grad before backward or after the step (the Hugging Face Trainer's "
        "order); clipping with `clip_grad_norm` or your own code",
        "limits": "",
    },
    "greedy": {
        "defines": "return one integer token id per row: the argmax of each row of the logits",
        "relies": "`logits` (B, vocab)",
        "autograd": "not applicable",
        "accepted": "argmax, argsort's last column",
        "limits": "",
    },
}
