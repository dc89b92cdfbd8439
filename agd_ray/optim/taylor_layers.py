"""The Taylor rules of the layers (batch and layer norm, attention, max-pooling) and the
table of every rule by operation name, for ``agd_ray.optim.taylor``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from agd_ray.optim.taylor_rules import (
    DERIVATIVES,
    TaylorUnsupported,
    add_in_place,
    bilinear,
    cross_entropy,
    linear,
    log_softmax,
    log_softmax_coefs,
    pointwise,
    quotient,
    series,
    series_product,
    softmax,
    sum_terms,
    wide,
)


def _options(names: tuple[str, ...], args, kwargs) -> dict:
    return {**dict(zip(names, args, strict=False)), **kwargs}


def _normalized(x: list, dims, eps: float) -> list:
    """[n0, n1, n2] of n = (x - mean) / sqrt(var + eps) over ``dims`` (the biased
    variance), from x's [x0, x1, x2]:

        c_k = x_k - mean(x_k),  v = mean(c^2): v1 = 2 mean(c0 c1), v2 = mean(2 c0 c2 + c1^2),
        r = (v + eps)^(-1/2):   r1 = -r0^3 v1 / 2,  r2 = -r0^3 v2 / 2 + 3/8 r0^5 v1^2,
        n = c r."""

    def mean(t):
        return None if t is None else t.mean(dims, keepdim=True)

    c = [None if t is None else t - mean(t) for t in x]
    v1 = None if c[1] is None else 2 * mean(c[0] * c[1])
    v2 = sum_terms(
        [None if c[2] is None else 2 * mean(c[0] * c[2]), None if c[1] is None else mean(c[1] ** 2)]
    )
    r0 = torch.rsqrt(mean(c[0] ** 2) + eps)
    r1 = None if v1 is None else -(r0**3) * v1 / 2
    r2 = sum_terms(
        [None if v2 is None else -(r0**3) * v2 / 2, None if v1 is None else 3 / 8 * r0**5 * v1**2]
    )
    r = [r0, r1, r2]
    return [series_product(torch.mul, c, r, k) for k in range(3)]


def _affine(m, n: list, weight, bias, shape) -> tuple:
    """(y1, y2) of y = n * weight + bias, the weight and bias reshaped to ``shape``."""

    def shaped(t):
        return None if t is None else t.reshape(shape)

    w = [shaped(t) for t in series(m, weight)] if weight is not None else [1.0, None, None]
    b = [None, *(shaped(t) for t in series(m, bias)[1:])] if bias is not None else [None] * 3
    return tuple(sum_terms([series_product(torch.mul, n, w, k), b[k]]) for k in (1, 2))


def batch_norm(m, func, args, kwargs):
    """Batch statistics in training (a forward that must not update the running ones,
    ``update_stats=False``, passes none), the running ones in evaluation."""
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum")
    o = _options((*names, "eps"), args, kwargs)
    x, eps = o["input"], o.get("eps", 1e-5)
    training = o.get("training", False) or o["running_mean"] is None
    if training and not m.update_stats:
        o.update(running_mean=None, running_var=None)
        out = func(**o)
    else:
        out = func(*args, **kwargs)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    with torch.no_grad():
        xs = series(m, x)
        if training:
            n = _normalized(xs, [0, *range(2, x.dim())], eps)
        else:
            r = torch.rsqrt(o["running_var"] + eps).reshape(shape)
            n = [(xs[0] - o["running_mean"].reshape(shape)) * r] + [
                None if t is None else t * r for t in xs[1:]
            ]
        return out, *_affine(m, n, o.get("weight"), o.get("bias"), shape)


def layer_norm(m, func, args, kwargs):
    o = _options(("input", "normalized_shape", "weight", "bias", "eps"), args, kwargs)
    x, dims = o["input"], len(o["normalized_shape"])
    out = func(*args, **kwargs)
    with torch.no_grad():
        n = _normalized(series(m, x), list(range(x.dim() - dims, x.dim())), o.get("eps", 1e-5))
        return out, *_affine(m, n, o.get("weight"), o.get("bias"), tuple(o["normalized_shape"]))


def attention(m, func, args, kwargs):
    """softmax(q k^T * scale + mask) v, its scores' series through log-softmax's rule."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    o = _options(names, args, kwargs)
    if o.get("dropout_p", 0.0) or o.get("enable_gqa", False):
        raise TaylorUnsupported("no Taylor rule for attention with dropout or grouped queries")
    out = func(*args, **kwargs)
    q, k, v, mask = o["query"], o["key"], o["value"], o.get("attn_mask")
    scale = o.get("scale") or 1 / math.sqrt(q.shape[-1])
    with torch.no_grad():

        def scores(a, b):
            return (a @ b.transpose(-2, -1)) * scale

        s = [series_product(scores, series(m, q), series(m, k), i) for i in range(3)]
        if o.get("is_causal"):
            L, S = q.shape[-2], k.shape[-2]
            causal = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
            s[0] = s[0].masked_fill(~causal, -math.inf)
        if mask is not None:
            s[0] = s[0].masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else s[0] + mask
        l0 = F.log_softmax(wide(s[0]), -1)
        l1, l2 = log_softmax_coefs(l0, s[1], s[2], -1)
        p0 = l0.exp()
        p1 = None if l1 is None else p0 * l1
        p2 = sum_terms([None if l2 is None else p0 * l2, None if l1 is None else p0 * l1 * l1 / 2])
        p = [None if t is None else t.to(out.dtype) for t in (p0, p1, p2)]
        return out, *(series_product(torch.matmul, p, series(m, v), i) for i in (1, 2))


def max_pool(m, func, args, kwargs):
    """The maximum's position is fixed near t = 0: y_k = x_k at it."""
    if kwargs.get("return_indices") or (len(args) > 6 and args[6]):
        raise TaylorUnsupported("no Taylor rule for max-pooling that returns indices")
    out = func(*args, **kwargs)
    x = args[0]
    with torch.no_grad():
        _, where = func(*args, **{**kwargs, "return_indices": True})

        def at(t):
            return None if t is None else t.flatten(2).gather(2, where.flatten(2)).view_as(out)

        return out, *(at(t) for t in m.of(x))


_LINEAR = (
    "view reshape flatten unflatten transpose permute t T mT movedim contiguous expand "
    "expand_as view_as reshape_as squeeze unsqueeze __getitem__ narrow select sum mean "
    "neg __neg__ cat concat stack chunk split unbind clone to float double half bfloat16 "
    "type_as embedding avg_pool1d avg_pool2d adaptive_avg_pool1d adaptive_avg_pool2d"
).split()

RULES = {name: linear() for name in _LINEAR}
RULES |= {n: linear(affine=True) for n in "add __add__ __radd__ sub __sub__ __rsub__ rsub".split()}
RULES |= {"add_": add_in_place, "__iadd__": add_in_place}
RULES |= {n: bilinear for n in "mul __mul__ __rmul__ matmul __matmul__ mm bmm linear".split()}
RULES |= {n: bilinear for n in "conv1d conv2d conv3d".split()}
RULES |= {n: quotient for n in "div __div__ __truediv__ true_divide __rdiv__ __rtruediv__".split()}
RULES |= {name: pointwise(d) for name, d in DERIVATIVES.items()}
RULES |= {
    "log_softmax": log_softmax,
    "softmax": softmax,
    "cross_entropy": cross_entropy,
    "batch_norm": batch_norm,
    "layer_norm": layer_norm,
    "scaled_dot_product_attention": attention,
    "max_pool1d": max_pool,
    "max_pool2d": max_pool,
}
"""Every rule, by operation name (``agd_ray.optim.taylor.op_name``)."""

__all__ = ["RULES"]
