"""Grade a PyTorch LoRA layer against the golden vectors (torch is imported only when grading).

    python -m minilora.teach.torch_grader MODULE:CLASS      # e.g. my_lora:LoRALinear

The layer follows loralib's names: ``CLASS(in_features, out_features, r, lora_alpha)`` builds a
layer with a frozen base ``weight`` (out x in) and ``bias`` (out), and trainable ``lora_A``
(r x in) and ``lora_B`` (out x r), initialised as the paper says (A random, B zero); its forward
is Eq. 3, ``h = x W0^T + b + (lora_alpha / r) (x A^T) B^T``. For every golden case of the layer
(``lora_layer_init``, ``lora_layer``; ``minilora/teach/golden/v2``) the grader builds the layer
in float64, copies W0, b and A (and B, except at initialisation) into it, makes the bias trainable,
runs forward and backward with dL/dh = G, and compares h and the gradients of x, b, A and B by the
manifest's one tolerance rule. It also checks what no tolerance can: at initialisation B is zero
and h equals the base layer's own output bit for bit, and W0 (the case's ``no_gradient``) is
frozen and gets no gradient. Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import importlib
import sys

from minilora.teach.golden import case_arguments, load_golden, within

LAYER_CASES = ("lora_layer_init", "lora_layer")


def grade(layer_class, directory=None) -> list[tuple[str, bool, str]]:
    """[(check, passed, detail)] for a loralib-style PyTorch LoRA layer class."""
    import torch

    manifest, arrays = load_golden(directory)
    rows = []
    for entry in manifest["cases"]:
        if entry["name"] not in LAYER_CASES:
            continue
        case = entry["name"]
        i = case_arguments(entry, arrays)
        d_out, d_in = i["W0"].shape
        t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
        torch.manual_seed(0)
        try:
            layer = layer_class(d_in, d_out, r=int(i["r"]), lora_alpha=float(i["alpha"]))
            layer = layer.double()
        except Exception as err:  # noqa: BLE001 - a student's constructor: report, don't crash
            rows.append((f"{case}: build the layer", False, f"{type(err).__name__}: {err}"))
            continue
        if case == "lora_layer_init":
            zero = not bool(layer.lora_B.detach().abs().max() > 0)
            rows.append((f"{case}: B starts at zero", zero, "" if zero else "lora_B is not zero"))
            rand = bool(layer.lora_A.detach().abs().max() > 0)
            rows.append((f"{case}: A starts random", rand, "" if rand else "lora_A is zero"))
        frozen = not layer.weight.requires_grad
        rows.append(
            (f"{case}: W0 frozen", frozen, "" if frozen else "weight.requires_grad is True")
        )
        with torch.no_grad():
            layer.weight.copy_(t(i["W0"]))
            layer.bias.copy_(t(i["b"]))
            layer.lora_A.copy_(t(i["A"]))
            if "B" in i:
                layer.lora_B.copy_(t(i["B"]))
        layer.bias.requires_grad_(True)  # the bias's gradient is part of the case
        x = t(i["x"]).requires_grad_(True)
        try:
            h = layer(x)
            h.backward(t(i["G"]))
        except Exception as err:  # noqa: BLE001
            rows.append((f"{case}: forward and backward", False, f"{type(err).__name__}: {err}"))
            continue
        got = {
            "h": h,
            "grad_x": x.grad,
            "grad_b": layer.bias.grad,
            "grad_A": layer.lora_A.grad,
            "grad_B": layer.lora_B.grad,
        }
        for spec in entry["outputs"]:
            value = got[spec["name"]]
            if value is None:
                rows.append((f"{case}: {spec['name']}", False, "no gradient"))
                continue
            ok, diff = within(value.detach().numpy(), arrays[spec["key"]], "float64")
            rows.append((f"{case}: {spec['name']}", ok, f"max |got - want| = {diff:.2e}"))
        none = layer.weight.grad is None
        rows.append((f"{case}: W0 gets no gradient", none, "" if none else "weight.grad is set"))
        if case == "lora_layer_init":
            base = torch.nn.functional.linear(x.detach(), layer.weight, layer.bias)
            same = bool(torch.equal(h.detach(), base))
            detail = "" if same else f"differs by {(h.detach() - base).abs().max().item():.2e}"
            rows.append((f"{case}: h is the base output bit for bit", same, detail))
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m minilora.teach.torch_grader MODULE:CLASS", file=sys.stderr)
        return 2
    module, name = argv[0].split(":", 1)
    sys.path.insert(0, "")
    rows = grade(getattr(importlib.import_module(module), name))
    for check, ok, detail in rows:
        print(f"{'PASS' if ok else 'FAIL'}  {check}{'  (' + detail + ')' if detail else ''}")
    passed = sum(ok for _, ok, _ in rows)
    print(f"{passed}/{len(rows)} checks passed")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
