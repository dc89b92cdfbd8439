"""Each parameter's role in the network, read from the module structure.

    layers = weight_layers(model)      # [Layer(name, weight, extras=[(role, param), ...]), ...]
    opt = AGD.from_model(model)        # AGD with these layers

A *weight layer* is a ``Linear`` or ``Conv`` module; its weight is one of AGD's
W_k and the network's depth L counts these only. Every other trainable parameter
belongs to exactly one weight layer:

- ``bias``: a Linear/Conv bias belongs to its own layer.
- ``gain`` / ``shift``: a normalisation layer's (BatchNorm, LayerNorm, GroupNorm)
  weight and bias belong to the weight layer whose input it normalises: the layer
  its output reaches through pointwise operations (ReLU, pooling, dropout,
  flatten). A pre-activation block's ``bn1 -> relu -> conv1`` ties bn1 to conv1,
  ``bn2 -> relu -> conv2`` ties bn2 to conv2: after normalisation, the gain and
  shift only set the scale and offset of what that layer reads. When the output
  reaches several weight layers (a pre-activation block's conv1 and its projection
  shortcut), the one on the longer path to the next residual addition wins (the
  main branch, not the shortcut). When it reaches none before an addition (a
  post-norm block's last BatchNorm, ``conv3 -> bn3 -> +``), the norm belongs to
  the weight layer that produced its input (conv3).

The data flow comes from a ``torch.fx`` trace, never from tensor shapes or the
order in which modules were registered.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import fx, nn

Role = Literal["weight", "bias", "gain", "shift"]

WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
# Modules and functions a value passes through without leaving its layer.
POINTWISE_MODULES = (
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
    nn.Flatten,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
)
POINTWISE_FUNCTIONS = {
    torch.relu,
    torch.flatten,
    torch.nn.functional.relu,
    torch.nn.functional.gelu,
    torch.nn.functional.adaptive_avg_pool2d,
    torch.nn.functional.avg_pool2d,
    torch.nn.functional.max_pool2d,
    torch.nn.functional.dropout,
    operator.mul,  # a constant factor (the FCN's ReLU * sqrt 2)
    operator.truediv,
}
POINTWISE_METHODS = {"relu", "flatten", "view", "reshape", "mul", "div", "contiguous"}
MERGES = {operator.add, torch.add, torch.cat}


@dataclass
class Layer:
    """One weight layer: its weight W_k and the parameters that belong to it."""

    name: str
    weight: nn.Parameter
    extras: list[tuple[Role, nn.Parameter]] = field(default_factory=list)


class _Tracer(fx.Tracer):
    """Keeps weight layers, norms and the pointwise modules whole in the graph."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, WEIGHT_LAYERS + NORMS + POINTWISE_MODULES) or super().is_leaf_module(
            m, qualname
        )


def weight_layers(model: nn.Module) -> list[Layer]:
    """The model's weight layers, each with its bias and the gains/shifts tied to it.

    Raises ValueError when a trainable parameter has no role (a module this
    function does not know) or the model cannot be traced.
    """
    modules = dict(model.named_modules())
    layers = {
        name: Layer(name, m.weight)
        for name, m in modules.items()
        if isinstance(m, WEIGHT_LAYERS) and m.weight.requires_grad
    }
    for name, layer in layers.items():
        bias = modules[name].bias
        if bias is not None and bias.requires_grad:
            layer.extras.append(("bias", bias))

    norms = {n: m for n, m in modules.items() if isinstance(m, NORMS) and _trainable(m)}
    if norms:
        try:
            graph = _Tracer().trace(model)
        except Exception as err:  # fx cannot trace data-dependent control flow
            raise ValueError(f"cannot trace the model to tie its norms to layers: {err}") from err
        flow = _DataFlow(graph, modules)
        for name, norm in norms.items():
            owner = flow.owner_of_norm(name)
            if owner is None or owner not in layers:
                raise ValueError(f"{name}: no weight layer reads or feeds this normalisation")
            if norm.weight is not None and norm.weight.requires_grad:
                layers[owner].extras.append(("gain", norm.weight))
            if norm.bias is not None and norm.bias.requires_grad:
                layers[owner].extras.append(("shift", norm.bias))

    assigned = {id(layer.weight) for layer in layers.values()}
    assigned |= {id(p) for layer in layers.values() for _, p in layer.extras}
    for pname, p in model.named_parameters():
        if p.requires_grad and id(p) not in assigned:
            raise ValueError(f"{pname}: AGD does not know this parameter's role")
    return list(layers.values())


def parameter_roles(model: nn.Module) -> dict[str, tuple[Role, str]]:
    """{parameter name: (role, name of the weight layer it belongs to)}."""
    names = {id(p): n for n, p in model.named_parameters()}
    roles = {}
    for layer in weight_layers(model):
        roles[names[id(layer.weight)]] = ("weight", layer.name)
        for role, p in layer.extras:
            roles[names[id(p)]] = (role, layer.name)
    return roles


def execution_order(model: nn.Module) -> list[str]:
    """The names of the model's weight layers in the order its forward pass calls
    them (from the fx trace, not registration order)."""
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    called = [n.target for n in graph.nodes if n.op == "call_module"]
    return [name for name in called if isinstance(modules.get(name), WEIGHT_LAYERS)]


def _trainable(m: nn.Module) -> bool:
    return any(p.requires_grad for p in m.parameters(recurse=False))


class _DataFlow:
    """Walks a traced graph between weight layers, through pointwise operations."""

    def __init__(self, graph: fx.Graph, modules: dict[str, nn.Module]):
        self.modules = modules
        self.nodes = {n.target: n for n in graph.nodes if n.op == "call_module"}

    def _kind(self, node: fx.Node) -> str:
        """weight | norm | pointwise | merge | other."""
        if node.op == "call_module":
            m = self.modules[node.target]
            if isinstance(m, WEIGHT_LAYERS):
                return "weight"
            if isinstance(m, NORMS):
                return "norm"
            return "pointwise" if isinstance(m, POINTWISE_MODULES) else "other"
        if node.op == "call_function":
            if node.target in MERGES:
                return "merge"
            return "pointwise" if node.target in POINTWISE_FUNCTIONS else "other"
        if node.op == "call_method":
            return "pointwise" if node.target in POINTWISE_METHODS else "other"
        return "other"

    def consumers(self, node: fx.Node) -> list[fx.Node]:
        """Weight layers that ``node``'s output reaches through pointwise operations."""
        found, stack, seen = [], list(node.users), set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            kind = self._kind(n)
            if kind == "weight":
                found.append(n)
            elif kind == "pointwise":
                stack.extend(n.users)
        return found

    def producer(self, node: fx.Node) -> fx.Node | None:
        """The single weight layer whose output reaches ``node``'s input, if there is one."""
        n = node.args[0] if node.args else None
        while isinstance(n, fx.Node):
            kind = self._kind(n)
            if kind == "weight":
                return n
            if kind != "pointwise":
                return None
            n = n.args[0] if n.args else None
        return None

    def layers_to_merge(self, node: fx.Node) -> int:
        """Weight layers on the longest path from ``node`` to the next merge (or output)."""
        best, stack = 0, [(node, 1)]
        seen: dict[fx.Node, int] = {}
        while stack:
            n, count = stack.pop()
            if seen.get(n, -1) >= count:
                continue
            seen[n] = count
            best = max(best, count)
            for user in n.users:
                if self._kind(user) == "merge" or user.op == "output":
                    continue
                stack.append((user, count + (self._kind(user) == "weight")))
        return best

    def owner_of_norm(self, name: str) -> str | None:
        node = self.nodes.get(name)
        if node is None:
            return None  # the norm is never called in forward()
        consumers = self.consumers(node)
        if consumers:
            return max(consumers, key=self.layers_to_merge).target
        producer = self.producer(node)
        return producer.target if producer is not None else None
