"""The Taylor rules of ``agd_ray.optim.taylor``: for each operation by name, the value
(the operation itself, recorded by autograd) and its coefficients (y1, y2) from its
inputs' (x0, x1, x2), None for zero. Each rule is rule(mode, func, args, kwargs)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten


class TaylorUnsupported(RuntimeError):
    """An operation on a value that depends on u has no Taylor rule."""


ZERO = {"detach", "data", *(f"{k}_like" for k in "zeros ones empty full rand randn".split())}
"""Results that do not move with u."""


def wide(t: Tensor) -> Tensor:
    """t in fp32 or fp64 (a half-precision value widened), for sums of exponentials."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def sum_terms(terms) -> Tensor | None:
    """The sum of the terms that are not None (zero), or None."""
    terms = [t for t in terms if t is not None]
    return None if not terms else terms[0] if len(terms) == 1 else sum(terms[1:], terms[0])


def _pairs(k: int):
    return [(i, k - i) for i in range(k + 1)]


def series_product(prod, a: list, b: list, k: int) -> Tensor | None:
    """The k-th coefficient of prod(a(t), b(t)), prod bilinear, from the two series'
    coefficients (None: zero): the sum over i + j = k of prod(a_i, b_j)."""
    pairs = [(i, j) for i, j in _pairs(k) if a[i] is not None and b[j] is not None]
    return sum_terms(prod(a[i], b[j]) for i, j in pairs)


def series(m, x) -> list:
    """[x0, x1, x2] of a tensor, or [x, None, None] of a constant (a number too)."""
    return [x, *m.of(x)] if isinstance(x, Tensor) else [x, None, None]


def _product(m, prod, a, b, k: int) -> Tensor | None:
    return series_product(prod, series(m, a), series(m, b), k)


def _with_coefficients(m, tree, k: int, affine: bool):
    """``tree`` with every float tensor replaced by its k-th coefficient (zeros for a
    constant), and, for an affine operation, every top-level number by 0; None where
    no input has a k-th coefficient."""
    leaves, spec = tree_flatten(tree)
    if not any(m.carries(t) and m.of(t)[k - 1] is not None for t in leaves):
        return None
    out = []
    for t in leaves:  # an affine operation's integer operand is a constant too
        if isinstance(t, Tensor) and (t.is_floating_point() or (affine and not m.carries(t))):
            c = m.of(t)[k - 1]
            t = c if c is not None else torch.zeros_like(t)
        out.append(t)
    args, kwargs = tree_unflatten(out, spec)
    if affine:
        args = tuple(0 if type(a) in (int, float) else a for a in args)
    return args, kwargs


def add_in_place(m, func, args, kwargs):
    """x += alpha * y (add_, __iadd__): x's coefficients, read before it changes, plus
    alpha times y's."""
    x, y, alpha = args[0], args[1], kwargs.get("alpha", 1)
    xs, ys = series(m, x), series(m, y)
    out = func(*args, **kwargs)
    with torch.no_grad():
        cs = [sum_terms([xs[k], None if ys[k] is None else alpha * ys[k]]) for k in (1, 2)]
    return out, *cs


def linear(affine: bool = False):
    """y_k = op(x_k) for an operation linear in its float inputs (reshape, sum, cat,
    pooling); ``affine``: +, - (a number or constant added moves nothing)."""

    def rule(m, func, args, kwargs):
        out = func(*args, **kwargs)
        cs = []
        with torch.no_grad():
            for k in (1, 2):
                swapped = _with_coefficients(m, (args, kwargs), k, affine)
                cs.append(None if swapped is None else func(*swapped[0], **swapped[1]))
        return out, *cs

    return rule


def bilinear(m, func, args, kwargs):
    """a * b, a @ b, linear(x, W, bias), conv(x, W, bias, ...): bilinear in (a, b),
    linear in the bias."""
    out = func(*args, **kwargs)
    a, b, rest = args[0], args[1], list(args[2:])
    kwargs = dict(kwargs)
    bias = rest.pop(0) if rest else kwargs.pop("bias", None)
    has_bias = func in (F.linear, F.conv1d, F.conv2d, F.conv3d)
    if not has_bias and bias is not None:
        raise TaylorUnsupported(f"no Taylor rule for {func.__name__} with extra operands")

    def prod(x, y):
        return func(x, y, None, *rest, **kwargs) if has_bias else func(x, y, **kwargs)

    cs = []
    with torch.no_grad():
        for k in (1, 2):
            c = _product(m, prod, a, b, k)
            bk = series(m, bias)[k]
            if bk is not None:  # conv: one per output channel
                bk = bk if func is F.linear else bk.reshape(-1, *[1] * (out.dim() - 2))
                c = bk if c is None else c + bk
            cs.append(c)
    return out, *cs


def quotient(m, func, args, kwargs):
    """a / b (and c / x): a times the Taylor series of 1 / b."""
    if kwargs.get("rounding_mode") is not None:
        raise TaylorUnsupported("no Taylor rule for a rounded division")
    out = func(*args, **kwargs)
    swap = func.__name__ in ("__rdiv__", "__rtruediv__")
    a, b = (args[1], args[0]) if swap else (args[0], args[1])
    with torch.no_grad():
        _, b1, b2 = series(m, b)
        r = 1 / b
        r1 = None if b1 is None else -b1 * r * r
        r2 = sum_terms(
            [None if b2 is None else -b2 * r * r, None if b1 is None else b1 * b1 * r**3]
        )
        inverse = [r, r1, r2]
        cs = [series_product(torch.mul, series(m, a), inverse, k) for k in (1, 2)]
    return out, *cs


def _chain(x1, x2, d1, d2):
    """y1 = f'(x0) x1, y2 = f'(x0) x2 + f''(x0)/2 x1^2, from d1 = f'(x0), d2 = f''(x0)/2."""
    y1 = None if x1 is None else d1 * x1
    y2 = sum_terms(
        [None if x2 is None else d1 * x2, None if x1 is None or d2 is None else d2 * x1 * x1]
    )
    return y1, y2


def pointwise(derivatives):
    """f applied elementwise to args[0]; derivatives(x0, y0, args, kwargs) -> (f', f''/2)."""

    def rule(m, func, args, kwargs):
        x0 = args[0]
        x1, x2 = m.of(x0)  # before an in-place ReLU overwrites x0 (its rule reads y0 only)
        out = func(*args, **kwargs)
        with torch.no_grad():
            return out, *_chain(x1, x2, *derivatives(x0, out, args, kwargs))

    return rule


def _pow(x0, y, args, kwargs):
    p = args[1] if len(args) > 1 else kwargs["exponent"]
    if isinstance(p, Tensor):
        raise TaylorUnsupported("no Taylor rule for a tensor exponent")
    d1 = p * x0 ** (p - 1) if p != 0 else torch.zeros_like(x0)
    return d1, (p * (p - 1) / 2 * x0 ** (p - 2) if p not in (0, 1) else None)


def _gelu(x0, y, args, kwargs):
    if kwargs.get("approximate", "none") != "none" or len(args) > 1:
        raise TaylorUnsupported("no Taylor rule for gelu's tanh approximation")
    pdf = torch.exp(-x0 * x0 / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(x0 / math.sqrt(2)))
    return cdf + x0 * pdf, pdf * (2 - x0 * x0) / 2


DERIVATIVES = {  # f'(x0) and f''(x0)/2, from x0 and y0 = f(x0)
    "relu": lambda x, y, *_: ((y > 0).to(y.dtype), None),
    "relu_": lambda x, y, *_: ((y > 0).to(y.dtype), None),
    "exp": lambda x, y, *_: (y, y / 2),
    "log": lambda x, y, *_: (1 / x, -1 / (2 * x * x)),
    "tanh": lambda x, y, *_: (1 - y * y, -y * (1 - y * y)),
    "sigmoid": lambda x, y, *_: (y * (1 - y), y * (1 - y) * (1 - 2 * y) / 2),
    "square": lambda x, y, *_: (2 * x, torch.ones_like(x)),
    "sqrt": lambda x, y, *_: (1 / (2 * y), -1 / (8 * y**3)),
    "rsqrt": lambda x, y, *_: (-(y**3) / 2, 3 / 8 * y**5),
    "pow": _pow,
    "__pow__": _pow,
    "gelu": _gelu,
}


def log_softmax_coefs(l0: Tensor, z1, z2, dim: int):
    """log softmax's (l1, l2) along ``dim``: l1 = z1 - <p, z1>, l2 = z2 - <p, z2> -
    Var_p(z1) / 2, with p = exp(l0) the softmax."""
    p = l0.exp()

    def mean(x):
        return (p * x).sum(dim, keepdim=True)

    l1 = None if z1 is None else z1 - mean(z1)
    parts = [None if z2 is None else z2 - mean(z2)]
    if z1 is not None:
        parts.append((-(mean(z1 * z1) - mean(z1) ** 2) / 2).expand_as(z1))
    return l1, sum_terms(parts)


def _dim(args, kwargs):
    return args[1] if len(args) > 1 else kwargs["dim"]


def log_softmax(m, func, args, kwargs):
    out = func(*args, **kwargs)
    with torch.no_grad():
        return out, *log_softmax_coefs(wide(out), *m.of(args[0]), _dim(args, kwargs))


def softmax(m, func, args, kwargs):
    """s = exp(l): s1 = s l1, s2 = s (l2 + l1^2 / 2)."""
    out = func(*args, **kwargs)
    with torch.no_grad():
        s = wide(out)
        l1, l2 = log_softmax_coefs(s.clamp_min(1e-45).log(), *m.of(args[0]), _dim(args, kwargs))
        s1 = None if l1 is None else s * l1
        s2 = sum_terms([None if l2 is None else s * l2, None if l1 is None else s * l1 * l1 / 2])
        return out, s1, s2


def cross_entropy(m, func, args, kwargs):
    """The mean (or sum) over targets of -log softmax(z)[y]; class dimension 1."""
    names = ("weight", "size_average", "ignore_index", "reduce", "reduction", "label_smoothing")
    opts = {**dict(zip(names, args[2:], strict=False)), **kwargs}
    reduction = opts.get("reduction", "mean")
    plain = opts.get("weight") is None and not opts.get("label_smoothing", 0.0)
    if not plain or reduction not in ("mean", "sum"):
        raise TaylorUnsupported("no Taylor rule for cross_entropy with weights or smoothing")
    if opts.get("size_average") is not None or opts.get("reduce") is not None:
        raise TaylorUnsupported("no Taylor rule for cross_entropy's deprecated arguments")
    z, y = args[0], args[1]
    out = func(*args, **kwargs)
    with torch.no_grad():
        l1, l2 = log_softmax_coefs(F.log_softmax(wide(z), 1), *m.of(z), 1)
        valid = y != opts.get("ignore_index", -100)
        target = torch.where(valid, y, 0).unsqueeze(1)
        count = valid.sum() if reduction == "mean" else 1

        def nll(lk):
            return None if lk is None else -(lk.gather(1, target).squeeze(1) * valid).sum() / count

        return out, nll(l1), nll(l2)
