"""What the PyTorch cross-checks share (tests/test_compat_torch.py, test_compat_peft.py): the
``compat`` extra's libraries, random models on both sides, and the logit comparison that
records the largest difference seen (the README quotes them)."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the compat extra: pip install -e '.[compat]'")
transformers = pytest.importorskip(
    "transformers", reason="needs the compat extra: pip install -e '.[compat]'"
)
peft = pytest.importorskip("peft", reason="needs the compat extra: pip install -e '.[compat]'")

from minilora.tensor import no_grad  # noqa: E402
from minilora.transformer import GPT, GPTConfig  # noqa: E402

F32_TOL, F64_TOL = 1e-5, 1e-10
LARGEST: dict = {}  # check -> largest |logit difference| seen, per dtype


@pytest.fixture(scope="module", autouse=True)
def report_largest(request):
    """Print the largest differences after the module's tests, even without ``-s``."""
    yield
    lines = ["largest |logit difference| against transformers / PEFT:"]
    lines += [f"  {check:<44} {dtype}: {value:.3e}" for (check, dtype), value in LARGEST.items()]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "\n".join(lines))


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        yield


def compare(check, dtype, ours, theirs, record_property=None, tol=None):
    diff = float(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)).max())
    LARGEST[check, dtype] = max(diff, LARGEST.get((check, dtype), 0.0))
    if record_property is not None:
        record_property(f"{check} {dtype}", diff)
    tol = tol or (F32_TOL if dtype == "float32" else F64_TOL)
    assert diff <= tol, f"{check} ({dtype}): largest logit difference {diff:.3e} > {tol:g}"


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def our_logits(model, ids):
    with no_grad():
        return model(ids)[0].numpy()


def randomize_torch(model, seed):
    """Every parameter random (biases, LayerNorm scales too), so that no mix-up hides."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def gpt2_model(n_layer, n_head, n_embd, vocab=17, n_positions=24, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        vocab_size=vocab,
        n_positions=n_positions,
        bos_token_id=None,
        eos_token_id=None,
    )
    return randomize_torch(transformers.GPT2LMHeadModel(config), seed).eval()


def our_model(n_layer=2, n_head=4, n_embd=20, vocab=17, n_positions=24, seed=0):
    rng = np.random.default_rng(seed)
    config = GPTConfig(
        vocab_size=vocab, block_size=n_positions, n_layer=n_layer, n_head=n_head, d_model=n_embd
    )
    model = GPT(config, generator=rng)
    for _, p in model.named_parameters():
        p.data = p.data + rng.normal(0.0, 0.3, p.shape).astype(np.float32)
    return model.eval()


def token_ids(vocab, length, seed=0, batch=2):
    return np.random.default_rng(seed).integers(0, vocab, (batch, length))
