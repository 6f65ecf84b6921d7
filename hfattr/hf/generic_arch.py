"""The generic architecture fallback: finding blocks, attention, MLPs and norms by structure.

Used for model types without registered facts (``register_architecture``); see
docs/architectures.md. ``base_model`` and ``find_module`` are shared with the registered path.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .arch_specs import ArchSpec, BlockSpec, StackSpec

__all__ = ["generic_spec", "base_model", "find_module", "LAYER_KEYS"]


def base_model(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) else model


def find_module(root: nn.Module, alt: nn.Module, path: str) -> nn.Module | None:
    for r in (root, alt):
        try:
            return r.get_submodule(path)
        except AttributeError:
            continue
    return None


# config fields that may hold the number of layers
LAYER_KEYS = (
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "n_layers",
    "encoder_layers",
    "decoder_layers",
    "num_encoder_layers",
    "num_decoder_layers",
)


def _is_norm(m: nn.Module) -> bool:
    name = type(m).__name__.lower()
    return isinstance(m, (nn.LayerNorm, nn.GroupNorm)) or "norm" in name


def _is_plain(m: nn.Module) -> bool:
    """Dropout, activation, norm or other parameter-free helper."""
    return _is_norm(m) or isinstance(m, nn.Dropout) or not any(True for _ in m.parameters())


def _find_child(block: nn.Module, pred: Callable[[str, nn.Module], bool], depth: int = 3) -> str | None:
    """Shallowest descendant path (up to ``depth`` levels) whose name/module satisfies ``pred``."""
    level = [("", block)]
    for _ in range(depth):
        nxt = []
        for path, mod in level:
            for name, child in mod.named_children():
                full = f"{path}.{name}" if path else name
                if pred(name.lower(), child):
                    return full
                nxt.append((full, child))
        level = nxt
    return None


def _residual_update(block: nn.Module, path: str) -> str:
    """For BERT-like sub-layers (``X.output.dense`` / ``output.dense``), the projection before the residual add."""
    for cand in (f"{path}.output.dense", f"{path}.dense"):
        if isinstance(find_module(block, block, cand), nn.Linear):
            return cand
    return path


def _generic_block_spec(block: nn.Module) -> BlockSpec:
    def is_attn(name, m):
        return ("attn" in name or "attention" in name) and not _is_plain(m) and not _is_cross(name)

    def _is_cross(name):
        return "cross" in name or "encoder_attn" in name or "encdec" in name

    attn = _find_child(block, is_attn)
    cross = _find_child(block, lambda n, m: _is_cross(n) and not _is_plain(m))
    children = dict(block.named_children())
    mlp = None
    if "intermediate" in children and "output" in children:
        mlp = _residual_update(block, "output")
        if attn is not None:
            attn = _residual_update(block, attn)
    elif "fc1" in children and "fc2" in children:
        mlp = "fc2"
    else:
        outs = [n for n in children if n.endswith("_output") and n[: -len("_output")] in children]
        if outs and not _is_plain(children[outs[0]]):
            mlp = outs[0]
        else:
            mlp = _find_child(
                block,
                lambda n, m: (
                    (n in ("mlp", "ffn", "ff", "feed_forward", "feedforward") or "mlp" in n or "densereludense" in n)
                    and not _is_plain(m)
                ),
            )
    taken = [p for p in (attn, cross, mlp) if p]
    skip = tuple(p + "." for p in taken)
    norms = tuple(
        n
        for n, m in block.named_modules()
        if n
        and _is_norm(m)
        and n not in taken
        and not n.startswith(skip)
        and not any(_is_norm(p) for p in _parents(block, n))
    )
    return BlockSpec(attn, mlp, norms, cross)


def _parents(root: nn.Module, path: str) -> list[nn.Module]:
    parts = path.split(".")
    return [root.get_submodule(".".join(parts[:k])) for k in range(1, len(parts))]


def generic_spec(model: nn.Module) -> ArchSpec:
    base = base_model(model)
    config = getattr(model, "config", None)
    counts = {v for k in LAYER_KEYS if isinstance(v := getattr(config, k, None), int) and v > 0}
    lists = [
        (n, m)
        for n, m in base.named_modules()
        if isinstance(m, nn.ModuleList)
        and len(m) > 0
        and len({type(c) for c in m}) == 1
        and (not counts or len(m) in counts)
    ]
    top = [(n, m) for n, m in lists if not any(n.startswith(o + ".") for o, _ in lists if o != n)]
    if not top:
        raise ValueError(
            f"no block list found in {type(model).__name__} (layer counts {sorted(counts)}); "
            "describe it with register_architecture(model_type, spec)"
        )
    enc = [(n, m) for n, m in top if "encoder" in n.split(".")[0]]
    dec = [(n, m) for n, m in top if "decoder" in n.split(".")[0]]
    if enc and dec and getattr(config, "is_encoder_decoder", False):
        chosen = {"encoder": enc[0], "decoder": dec[0]}
    else:
        if not counts:
            top = [max(top, key=lambda nm: len(nm[1]))]
        chosen = {"": top[0]}
    stacks = {}
    for sname, (path, blocks) in chosen.items():
        parent = base.get_submodule(path.rsplit(".", 1)[0]) if "." in path else base
        ppath = path.rsplit(".", 1)[0] + "." if "." in path else ""
        final = _final_norm(parent, path.rsplit(".", 1)[-1])
        embed = None
        if sname == "decoder":
            emb = getattr(parent, "embed_tokens", None)
            embed = ppath + "embed_tokens" if isinstance(emb, nn.Module) else None
        stacks[sname] = StackSpec(path, _generic_block_spec(blocks[0]), ppath + final if final else None, embed)
    return ArchSpec(stacks)


def _final_norm(parent: nn.Module, list_name: str) -> str | None:
    names = list(dict(parent.named_children()))
    after = names[names.index(list_name) + 1 :] if list_name in names else []
    for name, child in parent.named_children():
        low = name.lower()
        if not _is_norm(child) or "emb" in low:
            continue
        if "final" in low or low in ("ln_f", "norm", "norm_f") or name in after:
            return name
    return None
