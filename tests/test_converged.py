"""Section 7 on the protocol's kept adapters (minilora.paper.converged)."""

from __future__ import annotations

import numpy as np
import pytest

from minilora.lora import lora_layers
from minilora.paper import converged, experiments
from minilora.paper.baselines import apply_method
from minilora.paper.experiments import Cache
from minilora.work.pretrained import load_pretrained


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("converged")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiments, "RECORDS", out / "none")  # computed here, into out/cache
        path = converged.converged("quick", out, progress=False)
    return out, path.read_text()


def test_every_rank_and_projection_has_its_row_and_its_nulls(quick):
    out, text = quick
    assert "6 kept adapters found" in text  # 3 ranks x a pair of seeds, sql, char-small
    for r in converged.RANKS:
        for proj in ("Wq", "Wv"):
            start = f"| char-small | sql | {r} | {proj} | 1 |"
            row = next(x for x in text.splitlines() if x.startswith(start))
            cells = [c.strip() for c in row.split("|")[6:10]]
            assert all(c != "—" for c in cells), row  # seeds, start, two starts, chance
    assert (out / "converged.png").stat().st_size > 1000
    assert (out / "converged-directions.png").stat().st_size > 1000


def test_table7_rows_give_the_share_of_dW_along_ws_weaker_half(quick):
    _, text = quick
    rows = [x for x in text.splitlines() if x.startswith("| char-small | sql |")]
    table7 = [row for row in rows if row.count("|") == 12]  # Table 7's 11 columns
    assert len(table7) == 2 * len(converged.RANKS)
    for row in table7:
        weaker = float(row.split("|")[11])
        assert 0.0 <= weaker <= 1.0, row


def test_dW_is_the_layers_own_update(quick):
    """(alpha / r) B A from the kept file equals LoRALinear.delta_weight of the same weights."""
    out, _ = quick
    cache = Cache(out / "cache")
    run = next(r for r in converged.converged_runs(converged.get_budget("quick"))
               if dict(r.settings)["r"] == 4)  # fmt: skip
    tensors = cache.tensors(run)
    model = apply_method(load_pretrained("char-small")[0], "lora", dict(run.settings),
                         np.random.default_rng(0))  # fmt: skip
    params = dict(model.named_parameters())
    for name, value in tensors.items():
        if not name.endswith(".init"):
            params[name].data[...] = value
    layer = lora_layers(model)["blocks.1.attn.v_proj"]
    np.testing.assert_allclose(
        converged._dW(tensors, 1, "v", 4), layer.delta_weight("default", dtype=np.float64),
        rtol=1e-6, atol=1e-9,
    )  # fmt: skip


def test_figure3_across_ranks_has_a_row_per_projection(quick):
    _, text = quick
    part = text.split("## Across ranks (Figure 3)")[1].split("## dW against W")[0]
    rows = [x for x in part.splitlines() if x.startswith("| char-small | sql |")]
    assert [row.split("|")[3].strip() for row in rows] == ["Wq", "Wv"]
    assert all(row.split("|")[4].strip() == "2" for row in rows)  # the quick budget's pair


def test_figure3_across_ranks_sees_a_shared_subspace_and_its_null():
    """An r = 64 adapter whose strongest 8 directions are the r = 8 adapter's: phi = 1 over
    the whole 8 x 8 grid, phi(1, 1) included; their random starts give about the chance level."""
    rng = np.random.default_rng(0)
    k = 128
    found = {}
    for seed in (0, 1):
        tensors_8, tensors_64 = {}, {}
        for blk in range(2):
            for proj in ("q", "v"):
                name = f"blocks.{blk}.attn.{proj}_proj.lora_A.default.weight"
                low = (
                    np.diag(np.arange(8.0, 0.0, -1.0)) @ np.linalg.qr(rng.normal(size=(k, 8)))[0].T
                )
                high = np.vstack([10 * low, 0.01 * rng.normal(size=(56, k))])
                tensors_8[name], tensors_64[name] = low, high
                tensors_8[name + ".init"] = rng.normal(size=(8, k))
                tensors_64[name + ".init"] = rng.normal(size=(64, k))
        found["char-small", "sql", 8, seed] = tensors_8
        found["char-small", "sql", 64, seed] = tensors_64
    found["char-small", "nli", 8, 0] = found["char-small", "sql", 8, 0]  # no r = 64 beside it
    rows = [x for x in converged._across_ranks(found) if x.startswith("| char-small")]
    assert len(rows) == 2  # sql, Wq and Wv; nli has no pair
    for row in rows:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[3] == "2"
        assert cells[4] == "1.000 ± 0.000" and cells[5] == "1.000 ± 0.000", row
        drawn = float(cells[6].split(" ")[0])
        assert drawn < 0.15, row  # two random starts: near max(i, j) / k (0.045)
    assert converged._across_ranks({})[-1].startswith("| — |")
