"""<H u, u> in the forward pass that takes the gradient: second-order Taylor mode.

    value, g, uhu = taylor_pass(loss_fn, params, u)           # uhu = <H u, u>, g: the gradient
    value, _, uhu = taylor_pass(loss_fn, params, u, grad=False)   # a forward alone

For the batch loss f and a direction u, phi(t) = f(theta + t u) = f0 + t f1 + t^2 f2 + ...
with f1 = <g, u> and f2 = <H u, u> / 2. Every value the forward computes from theta is
carried with its first two Taylor coefficients along u, x(t) = x0 + t x1 + t^2 x2, by
a torch function mode (``taylor_rules`` and ``taylor_layers`` hold each operation's rule):

- a product B(a, b) (matmul, linear, convolution, *): y1 = B(a1, b0) + B(a0, b1),
  y2 = B(a2, b0) + B(a1, b1) + B(a0, b2); a weight W + t U has W1 = U and W2 = 0, so
  a layer's W x costs four more products: W x1, U x0, W x2, U x1;
- a linear operation (reshape, sum, pooling, +): y_k = op(x_k);
- a smooth pointwise f: y1 = f'(x0) x1, y2 = f'(x0) x2 + f''(x0) x1^2 / 2 (ReLU's f'' = 0);
- log-softmax (cross-entropy, softmax), batch and layer norm, attention: theirs.

x0 is the forward itself, recorded by autograd as usual, so g is the ordinary backward
of the same pass. With the gradient (``grad=True``), x2 is not carried at all: the
adjoint form (``Jet``) takes each operation's local second-order term s_v and f2 =
sum_v <dL/dv, s_v>, the dL/dv from that same backward. Per weight matrix that is 6
products (the forward's W x0, then W x1, U x0 and the local U x1; two in the backward)
against a plain step's 3, where H u by a second backward through the kept gradient
graph (reverse-over-reverse, or torch's forward-over-reverse) costs 9, since it
computes every entry of the vector H u, of which the step needs one number. A
forward alone (``grad=False``) carries x2: 5 products per matrix.

Memory: every value's two coefficients are kept to the end of the pass (as autograd
keeps the values), so the activations take about three times their plain size.

An operation with no rule whose float result depends on u raises ``TaylorUnsupported``
(the forward stops there); the curvature step then falls back to reverse-over-reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_leaves, tree_unflatten

from agd_ray.optim.taylor_layers import RULES
from agd_ray.optim.taylor_rules import ZERO, TaylorUnsupported, wide

__all__ = ["Jet", "LossFn", "TaylorUnsupported", "taylor_pass"]

LossFn = Callable[[Sequence[Tensor]], Tensor | tuple[Tensor, ...]]


def op_name(func) -> str:
    """The operation's name: ``torch.relu``, ``F.relu`` and ``Tensor.relu`` are all
    "relu"; a property read (``x.T``, ``x.shape``) is the property's name."""
    name = getattr(func, "__name__", repr(func))
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


class Jet(TorchFunctionMode):
    """The coefficients (x1, x2) of every value derived from the seeds; None is zero.

    ``update_stats=False``: a batch norm runs on batch statistics without updating its
    running ones or counting the batch (a second forward over the same batch).

    ``adjoint=True``: second coefficients are not carried forward. Each operation's
    rule, given inputs with x2 = 0, yields its local term s_v (a product's B(a1, b1),
    a pointwise f's f''(x0) x1^2 / 2, ...), kept in ``local``; since x2 moves forward
    linearly, f2 = sum_v <dL/dv, s_v>, with dL/dv from the gradient's own backward.
    A layer's products are then W x1, U x0 and U x1: one fewer."""

    def __init__(
        self,
        seeds: Sequence[tuple[Tensor, Tensor]],
        update_stats: bool = True,
        adjoint: bool = False,
    ):
        super().__init__()
        # id -> (the value, kept alive so that no id is reused during the pass, x1, x2)
        self.coefs: dict[int, tuple[Tensor, Tensor | None, Tensor | None]] = {
            id(p): (p, u, None) for p, u in seeds
        }
        self.update_stats, self.adjoint = update_stats, adjoint
        self.local: dict[int, tuple[Tensor, Tensor]] = {}  # id -> (v, s_v), with adjoint
        self.used: set[int] = set()  # the values some operation has read

    def of(self, x) -> tuple[Tensor | None, Tensor | None]:
        """x's (x1, x2): (None, None) for a constant."""
        entry = self.coefs.get(id(x)) if isinstance(x, Tensor) else None
        return (None, None) if entry is None else entry[1:]

    def carries(self, x) -> bool:
        return isinstance(x, Tensor) and id(x) in self.coefs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not any(self.carries(t) for t in tree_leaves((args, kwargs))):
            if self.update_stats:
                return func(*args, **kwargs)
            counter = bool(args) and isinstance(args[0], Tensor) and not args[0].is_floating_point()
            if counter and getattr(func, "__name__", "") == "add_":
                return args[0]  # a batch norm's batch counter: this pass counts no batch
            if func is not F.batch_norm:
                return func(*args, **kwargs)
        name = op_name(func)
        rule = RULES.get(name)
        in_place = _in_place(name, args, kwargs)
        if rule is None:
            if in_place:  # it would change a value (or a view of one) behind its coefficients
                raise TaylorUnsupported(f"no Taylor rule for {name!r} (in place)")
            out = func(*args, **kwargs)
            # no result that moves with u: shapes, comparisons, argmax, detach
            if name in ZERO or not any(
                isinstance(t, Tensor) and t.is_floating_point() for t in tree_leaves(out)
            ):
                return out
            raise TaylorUnsupported(f"no Taylor rule for {name!r}")
        target = args[0] if args else None
        if in_place:
            # only a value nothing has read yet, and not a view: every earlier reader,
            # and the tensor the view shares, would keep what the operation overwrote
            if id(target) in self.used or (isinstance(target, Tensor) and target._base is not None):
                raise TaylorUnsupported(f"{name!r} in place on a value already used, or a view")
            if self.adjoint and id(target) in self.local:
                # the value is overwritten: its local term moves through this operation
                x1, s = self.coefs[id(target)][1], self.local.pop(id(target))[1]
                self.coefs[id(target)] = (target, x1, s)
        read = (t for t in tree_leaves((args, kwargs)) if not (in_place and t is target))
        self.used.update(id(t) for t in read if self.carries(t))
        out, c1, c2 = rule(self, func, args, kwargs)
        outs, spec = tree_flatten(out)
        c1s = tree_flatten(c1)[0] if c1 is not None else [None] * len(outs)
        c2s = tree_flatten(c2)[0] if c2 is not None else [None] * len(outs)
        for o, a, b in zip(outs, c1s, c2s, strict=True):
            if isinstance(o, Tensor) and (a is not None or b is not None):
                if self.adjoint:
                    if not o.requires_grad:  # its dL/dv would not come from the backward
                        raise TaylorUnsupported(f"{name!r} computed without gradient tracking")
                    if b is not None:
                        self.local[id(o)] = (o, b)
                    b = None
                self.coefs[id(o)] = (o, a, b)
        return tree_unflatten(outs, spec)


def _in_place(name: str, args, kwargs) -> bool:
    """relu_, x += y, x[i] = y, F.relu(x, inplace=True): args[0] is changed."""
    flag = kwargs.get("inplace") or (name == "relu" and len(args) > 1 and args[1] is True)
    return bool(flag) or name in IN_PLACE_DUNDERS or (name.endswith("_") and name[:2] != "__")


IN_PLACE_DUNDERS = {f"__i{op}__" for op in "add sub mul truediv div pow matmul".split()}
IN_PLACE_DUNDERS.add("__setitem__")


def taylor_pass(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    u: Sequence[Tensor],
    grad: bool = True,
    update_stats: bool = True,
) -> tuple[Tensor | tuple[Tensor, ...], list[Tensor] | None, Tensor]:
    """One forward of ``loss_fn`` at ``params`` carrying u's Taylor coefficients:
    (its value, detached; with ``grad`` the gradient, by the ordinary backward of that
    forward, else None; <H u, u>, 0-dim fp32). Raises ``TaylorUnsupported`` (see the
    module docstring). ``update_stats=False``: batch norms keep their running
    statistics (for a forward that repeats one the step has already taken)."""
    seeds = list(zip(params, (x.detach() for x in u), strict=True))
    mode = Jet(seeds, update_stats, adjoint=grad)
    with torch.enable_grad() if grad else torch.no_grad(), mode:
        value = loss_fn(params)
    loss = value[0] if isinstance(value, tuple) else value
    g = None
    if grad:  # the gradient, and dL/dv for every local term s_v: f2 = sum <dL/dv, s_v>
        local = [(v, s) for v, s in mode.local.values() if v.requires_grad]
        inputs = [*params, *(v for v, _ in local)]
        grads = torch.autograd.grad(loss, inputs, materialize_grads=True)
        g = list(grads[: len(params)])
        terms = [
            torch.sum(lam * s) for lam, (_, s) in zip(grads[len(params) :], local, strict=True)
        ]
        f2 = torch.stack(terms).sum() if terms else None
    else:
        f2 = mode.of(loss)[1]
    del mode  # the coefficients
    uhu = torch.zeros((), device=loss.device) if f2 is None else wide(2 * f2.detach())
    return detached(value), g, uhu


def detached(value: Tensor | tuple) -> Tensor | tuple:
    """A loss function's value (a tensor, or a tuple such as (loss, output)), detached."""
    if isinstance(value, tuple):
        return tuple(x.detach() if isinstance(x, Tensor) else x for x in value)
    return value.detach()
