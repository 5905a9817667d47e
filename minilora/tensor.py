"""The Tensor, the graph it records, and reverse-mode differentiation.

A ``Tensor`` wraps one array (NumPy or CuPy) and, when it was made by an op
from inputs that need gradients, remembers those inputs (``_parents``) and a
function that maps the output's gradient to theirs (``_backward``). That is the
whole graph. ``backward()`` visits it in reverse topological order and applies
the chain rule node by node.

Gradient semantics, fixed and documented:

* Only leaves (tensors made by the user, e.g. parameters) keep ``.grad``.
  Gradients *accumulate* into ``.grad`` across ``backward()`` calls, as in
  PyTorch; call ``zero_grad`` (or set ``.grad = None``) between steps.
* The graph is freed after ``backward()`` unless ``retain_graph=True``; a
  second backward through a freed graph is an error, never a silent zero.
* Inside ``with no_grad():`` no graph is recorded at all.
* An op computes the gradient of an input only if that input requires one: a
  frozen weight costs no weight-gradient matmul (where adapter training saves its time).
"""

from __future__ import annotations

import numpy as np

from minilora import backend, checks

_grad_enabled = True


class no_grad:
    """Context manager (and decorator) inside which ops record no graph."""

    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
        return wrapped


def is_grad_enabled() -> bool:
    return _grad_enabled


class Tensor:
    """An n-dimensional array that can remember how it was computed.

    Args:
        data: an array, a nested list or a number: bool, integer or floating
            point (strings, objects and complex numbers raise TypeError).
        requires_grad: whether ``backward`` should compute ``.grad`` for it
            (floating dtypes only).
        dtype: numpy dtype; Python numbers and lists default to float32,
            arrays keep their own dtype.
        device: "cpu" or "cuda" (default: ``MINILORA_DEVICE`` or "cpu").
    """

    __slots__ = ("data", "grad", "requires_grad", "_backward", "_parents", "op", "__weakref__")
    __array_priority__ = 1000  # numpy_scalar * tensor calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        self.data = as_array(data, dtype, device)  # checked: real numbers, one device
        self.grad = None
        self._backward, self._parents, self.op = None, (), None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ---- what it is ---------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.op is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        where = "" if self.device == "cpu" else f", device='{self.device}'"
        body = np.array2string(self.numpy(), precision=4, separator=", ", threshold=20)
        return f"Tensor({body}, dtype={self.dtype}{where}{grad})"

    def requires_grad_(self, flag: bool = True) -> Tensor:
        """Mark this leaf as needing (or not needing) a gradient."""
        if flag and self.dtype.kind != "f":
            raise TypeError(
                f"requires_grad=True needs a floating-point tensor, got dtype {self.dtype}; "
                "gradients of integers are not defined"
            )
        self.requires_grad = bool(flag)
        return self

    # ---- leaving the graph ---------------------------------------------------
    def detach(self) -> Tensor:
        """The same data as a new leaf that does not require grad."""
        return Tensor(self.data)

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self.data)

    # ---- reverse mode ----------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into ``.grad`` of every leaf that requires it.

        Args:
            grad: the gradient of some scalar with respect to ``self``; may be
                omitted only when ``self`` has one element (it is then 1).
            retain_graph: keep the graph so that backward can be called again.
        """
        grad = checks.seed_gradient(self, grad)  # dL/dself: 1 for a scalar, else the given one
        # BEGIN STUDENT: backward
        pending = {id(self): grad}  # gradients flowing into nodes not yet visited
        for node in reversed(_topological_order(self)):
            g = pending.pop(id(node), None)
            if g is None:
                continue
            if node.op is None:  # a leaf: accumulate (the engine owns this buffer)
                if node.grad is None:  # a copy, and an array even where NumPy gave a scalar
                    node.grad = backend.get_array_module(g).array(g)
                else:
                    node.grad += g
                continue
            if node._backward is None:
                raise RuntimeError(
                    f"backward() through '{node.op}' a second time: the graph was freed by the "
                    "first backward(). Pass retain_graph=True to the first call."
                )
            for parent, parent_grad in zip(node._parents, node._backward(g)):
                if parent_grad is None or not parent.requires_grad:
                    continue
                key = id(parent)
                pending[key] = parent_grad if key not in pending else pending[key] + parent_grad
            if not retain_graph:
                node._backward, node._parents = None, ()
        # END STUDENT: backward


def _topological_order(root: Tensor) -> list[Tensor]:
    """Every node that ``root`` depends on (and needs a gradient), inputs before outputs.

    Iterative depth-first search with an explicit stack, so a graph thousands
    of ops deep does not hit Python's recursion limit.
    """
    # BEGIN STUDENT: topo_order
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node._parents if p.requires_grad and id(p) not in seen)
    return order
    # END STUDENT: topo_order


def as_array(data, dtype=None, device=None):
    """``data`` (an array, a nested list or a number) as an array of real numbers on ``device``.

    Arrays keep their dtype unless ``dtype`` is given; Python floats default to float32.
    """
    data = data.data if isinstance(data, Tensor) else data
    given = checks.real_dtype(data, dtype)  # strings, objects, complex, ragged lists raise
    if backend.get_array_module_or_none(data) is not None:  # a NumPy or CuPy array
        array = data if dtype is None else data.astype(dtype, copy=False)
        return array if device is None else backend.to_device(array, device)
    if dtype is None:  # Python numbers and lists: float32 unless they are integers or bools
        dtype = np.float32 if given.kind == "f" else given
    return backend.array_module(backend.check_device(device)).asarray(data, dtype=dtype)


def make_result(data, parents: tuple, backward, op: str) -> Tensor:
    """Wrap an op's output array; record the graph only if some input needs a gradient.

    ``backward(g)`` must return one gradient (or None) per parent, each already
    of that parent's shape.
    """
    if isinstance(data, np.generic):  # NumPy gives scalars for full reductions, 0-d inputs
        data = np.asarray(data)
    out = Tensor.__new__(Tensor)
    out.data, out.grad = data, None
    if _grad_enabled and any(p.requires_grad for p in parents):
        out.requires_grad, out._parents, out._backward, out.op = True, parents, backward, op
    else:  # no graph: the result is a leaf, like a tensor the user made
        out.requires_grad, out._parents, out._backward, out.op = False, (), None, None
    return out
