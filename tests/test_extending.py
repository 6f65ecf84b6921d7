"""docs/extending.md, run as written: each section's code block is executed, then its numbers are
checked against a direct computation (autograd on the model, a closed form, or a rerun by hand)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from hfattr import list_methods

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _block(section: str) -> str:
    """The one python code block under the ``## section`` heading of the doc."""
    text = DOC.read_text()
    parts = re.split(r"^## ", text, flags=re.M)
    body = next(p for p in parts if p.startswith(section + "\n"))
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    assert len(blocks) == 1, f"section {section!r} should have one python block, has {len(blocks)}"
    return blocks[0]


def _run(section: str) -> dict:
    ns: dict = {"__name__": f"extending_{section.split()[-1]}"}
    exec(compile(_block(section), f"{DOC}:{section}", "exec"), ns)
    return ns


def test_every_section_has_its_block():
    for section in ("A method", "An architecture", "An LRP rule", "An explained quantity (score)"):
        assert _block(section).strip()


def test_a_method():
    ns = _run("A method")
    r, model = ns["result"], ns["model"]
    assert "gradient_norm" not in list_methods()  # the handle removed it
    assert r.method == "gradient_norm" and r.options["p"] == 1.0
    ids = torch.tensor([r.token_ids])
    x = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(inputs_embeds=x).logits[0, 1], x)
    want = g[0].abs().sum(-1).masked_fill(torch.tensor(r.special_mask), 0.0)
    torch.testing.assert_close(r.scores, want, rtol=0, atol=1e-12)


def test_an_architecture():
    ns = _run("An architecture")
    model, arch, mlps = ns["model"], ns["arch"], ns["mlps"]
    assert not arch.generic
    assert [(n, m) for n, m in mlps] == [("blocks.0.mlp", model.stack[0].ff), ("blocks.1.mlp", model.stack[1].ff)]
    assert arch.module("blocks.1.attention") is model.stack[1].mix
    assert arch.module("blocks.0.norm2") is model.stack[0].ln_b
    assert arch.blocks == list(model.stack)


def test_an_lrp_rule():
    ns = _run("An LRP rule")
    net, x, rel, eps = ns["net"], ns["x"], ns["relevance"], 0.1
    lin1, lin2 = net[0], net[2]
    # the epsilon rule in closed form: relevance = x · (modified gradient), layer by layer
    z1 = x @ lin1.weight.T + lin1.bias
    z2 = torch.relu(z1) @ lin2.weight.T + lin2.bias

    def stab(z):
        return z / (z + eps * torch.where(z >= 0, 1.0, -1.0).to(z))

    g2 = torch.zeros_like(z2)
    g2[:, 1] = stab(z2[:, 1])
    g1 = (g2 @ lin2.weight) * (z1 > 0) * stab(z1)
    want = x * (g1 @ lin1.weight)
    torch.testing.assert_close(rel, want, rtol=0, atol=1e-12)
    from hfattr.lrp import LRP, EpsilonRule

    builtin = LRP(net, rules={torch.nn.Linear: EpsilonRule(eps)}).attribute(x, target=1)
    torch.testing.assert_close(rel, builtin, rtol=0, atol=1e-12)
    assert repr(ns["StabilisedRule"](0.1)) == "StabilisedRule(eps=0.1)"


def test_an_explained_quantity():
    from hfattr import list_scores

    ns = _run("An explained quantity (score)")
    r, model, tok = ns["result"], ns["model"], ns["tokenizer"]
    assert "logit_margin" not in list_scores()  # the handle removed it
    assert r.target.get("score", "logit_margin") == "logit_margin" or r.options.get("score") == "logit_margin"
    emb = model.get_input_embeddings()
    ids = torch.tensor([r.token_ids])
    x = emb(ids).detach()
    base = emb(torch.tensor([[tok.mask_token_id]])).detach()[0, 0]

    def margin(e):
        logits = model(inputs_embeds=e).logits[0]
        return logits[1] - logits[0]  # two classes: the other logit is the largest other

    with torch.no_grad():
        full = margin(x)
        want = torch.zeros(len(r.token_ids), dtype=torch.float64)
        for i, special in enumerate(r.special_mask):
            if not special:
                y = x.clone()
                y[0, i] = base
                want[i] = full - margin(y)
    torch.testing.assert_close(r.scores, want, rtol=0, atol=1e-10)


def test_builtin_scores_are_registered():
    from hfattr import list_scores

    assert {"logit", "prob", "log_prob", "contrast", "contrast_prob"} <= set(list_scores())
