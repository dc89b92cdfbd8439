"""The GPT and AGD's rule for it (docs/agd_transformers.md): roles from the trace,
init singular values, one step against the rule worked by hand, causal masking,
and the config's one-line refusals."""

import math

import pytest
import torch
from torch.nn import functional as F

from agd_ray.config import ConfigError, ModelConfig, validate_config
from agd_ray.data import DataSpec
from agd_ray.models import GPT, GPTConfig, build_model
from agd_ray.models.gpt import TokenEmbedding
from agd_ray.optim import AGD, orthogonal_init_
from agd_ray.optim.roles import parameter_roles

BYTES = DataSpec("pysrc", (16,), 256, context=16, unit="byte")


def _gpt(depth=1, width=32, heads=2, context=16, vocab=64, bias=False, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(depth, width, heads, context, vocab, bias))


def test_roles_of_every_parameter_come_from_the_trace():
    roles = parameter_roles(_gpt(depth=2))
    expected = {"embed.weight": ("weight", "embed"), "unembed.weight": ("weight", "unembed")}
    for b in range(2):
        for m in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"):
            expected[f"blocks.{b}.{m}.weight"] = ("weight", f"blocks.{b}.{m}")
        expected[f"blocks.{b}.norm1.weight"] = ("gain", f"blocks.{b}.attn.v")
        expected[f"blocks.{b}.norm2.weight"] = ("gain", f"blocks.{b}.mlp.up")
    expected["norm.weight"] = ("gain", "unembed")
    assert roles == expected


def test_bias_true_gives_biases_and_shifts_their_layers():
    roles = parameter_roles(_gpt(bias=True))
    assert roles["blocks.0.attn.q.bias"] == ("bias", "blocks.0.attn.q")
    assert roles["blocks.0.norm2.bias"] == ("shift", "blocks.0.mlp.up")
    assert roles["norm.bias"] == ("shift", "unembed")
    assert AGD.from_model(_gpt(bias=True)).depth == 8  # extras add no depth


def test_depth_counts_every_matrix():
    assert AGD.from_model(_gpt(depth=3)).depth == 2 + 6 * 3


def test_init_singular_values_equal_the_scale():
    model = orthogonal_init_(_gpt(width=32, vocab=64))
    expected = {
        "embed": math.sqrt(32 / 64),
        "q": 1.0,
        "k": 1.0,
        "v": 1.0,
        "o": 1.0,
        "up": 2.0,
        "down": 0.5,
        "unembed": math.sqrt(64 / 32),
    }
    for name, p in model.named_parameters():
        if p.ndim < 2:
            assert torch.all(p == 1), name  # LayerNorm gains stay 1
            continue
        s = expected[name.split(".")[-2]]
        sv = torch.linalg.svdvals(p.detach())
        assert torch.allclose(sv, torch.full_like(sv, s), atol=1e-5), name


def test_embedding_is_the_matrix_on_the_rms_one_one_hot():
    emb = TokenEmbedding(64, 32)
    tokens = torch.tensor([[3, 0, 63]])
    one_hot = F.one_hot(tokens, 64).float() * math.sqrt(64)  # RMS 1
    assert torch.allclose(emb(tokens), F.linear(one_hot, emb.weight), atol=1e-6)


def test_one_agd_step_equals_the_rule_by_hand():
    model = orthogonal_init_(_gpt(depth=1))
    tokens = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(1))
    logits = model(tokens[:, :-1])
    F.cross_entropy(logits.reshape(-1, 64), tokens[:, 1:].reshape(-1)).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    # by hand: 8 matrices (L = 8), each with s = sqrt(d_out / d_in); the gains are
    # extras of W_V (norm1), W_1 (norm2) and W_U (norm), each alone in its block
    L = 8
    s = {n: math.sqrt(g.shape[0] / g.shape[1]) for n, g in grads.items() if g.ndim == 2}
    gains = ["blocks.0.norm1.weight", "blocks.0.norm2.weight", "norm.weight"]
    G = sum(s[n] * grads[n].norm() for n in s) / L
    G += sum(grads[n].norm() ** 2 / grads[n].norm() for n in gains) / L  # s_e = 1, N = |g|
    eta = math.log((1 + math.sqrt(1 + 4 * G)) / 2)

    opt = AGD.from_model(model)
    opt.step()
    assert float(opt.eta) == pytest.approx(eta, rel=1e-5)
    for n, p in model.named_parameters():
        s_n = s.get(n, 1.0)
        expected = before[n] - (eta / L) * s_n * grads[n] / grads[n].norm()
        assert torch.allclose(p.detach(), expected, atol=1e-6), n


def test_no_prediction_sees_a_later_token():
    model = orthogonal_init_(_gpt(depth=2))
    tokens = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[0, 9] = (tokens[0, 9] + 1) % 64
    a, b = model(tokens), model(changed)
    assert torch.allclose(a[0, :9], b[0, :9], atol=1e-5)  # positions before the change
    assert not torch.allclose(a[0, 9:], b[0, 9:], atol=1e-3)  # the change is seen after


def test_shorter_sequences_and_bf16_autocast():
    model = orthogonal_init_(_gpt())
    tokens = torch.randint(0, 64, (2, 5))
    assert model(tokens).shape == (2, 5, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(tokens)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_build_model_takes_vocab_from_the_data_and_context_from_the_config():
    model = build_model(ModelConfig(arch="gpt", depth=1, width=64, context=16), BYTES)
    assert model.unembed.weight.shape == (256, 64) and model.cfg.heads == 1
    with pytest.raises(ValueError, match="image model"):
        build_model(ModelConfig(arch="fcn"), BYTES)


@pytest.mark.parametrize(
    "overrides,key,problem",
    [
        ({"model": {"arch": "gpt", "width": 96, "heads": 5}}, "model.heads", "do not divide"),
        ({"model": {"arch": "gpt"}}, "data.name", "image data"),
        ({"model": {"arch": "resnet18"}, "data": {"name": "pysrc"}}, "model.arch", "is text"),
        (
            {"model": {"arch": "gpt"}, "data": {"name": "pysrc"}, "train": {"loss": "mse"}},
            "train.loss",
            "cross-entropy",
        ),
        ({"model": {"arch": "fcn", "heads": 2}}, "model.heads", "only model.arch gpt"),
        ({"model": {"arch": "gpt"}, "data": {"name": "tokens"}}, "data.root", "set it"),
    ],
)
def test_bad_configs_are_refused_by_key(overrides, key, problem):
    with pytest.raises(ConfigError) as err:
        validate_config(overrides)
    assert str(err.value).startswith(key) and problem in str(err.value)


def test_gpt_defaults_and_loss():
    cfg = validate_config({"model": {"arch": "gpt"}, "data": {"name": "pysrc"}})
    m = cfg.model
    assert (m.depth, m.width, m.heads, m.context, m.vocab) == (4, 128, 2, 128, None)
    assert cfg.train.loss == "xent"
