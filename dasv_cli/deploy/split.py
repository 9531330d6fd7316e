"""An exported extractor cut in two for chunked embedding (eval.chunked): its front-end (normalised
log-mel -> frame vectors) and its head (frame vectors -> embedding), as onnxruntime sessions.

`dasv export` traces the network with module scopes in the node names, so the front-end is the set of
nodes under `/front_end/`: the one tensor entering it from outside and the one leaving it bound the
two sub-graphs, which are cut out of the file (the nodes between them). Works on any export of this network,
old ones included; a graph where the boundary is not found gives None (the caller then runs whole).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dasv_cli.deploy.extra import import_extra
from dasv_cli.deploy.metadata import OUTPUT_NAME

FRONT_END_SCOPE = "/front_end/"
POOLING_SCOPE = "/pooling/"


def front_end_boundary(graph: Any, scope: str = FRONT_END_SCOPE) -> tuple[str, str] | None:
    """(the tensor entering the module `scope` names, the tensor leaving it) of an ONNX graph, or None."""
    inside = [n for n in graph.node if scope in n.name]
    if not inside:
        return None
    made = {o for n in inside for o in n.output}
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                         for o in n.output}
    entering = {i for n in inside for i in n.input if i and i not in made and i not in constants}
    used_outside = {i for n in graph.node if scope not in n.name for i in n.input}
    used_outside |= {o.name for o in graph.output}
    leaving = made & used_outside
    if len(entering) != 1 or len(leaving) != 1:
        return None
    return entering.pop(), leaving.pop()


def sub_model(model: Any, source: str, target: str) -> Any:
    """The ONNX model computing tensor `target` from tensor `source` (the nodes between them, the
    initializers they use), or None when `target` needs another graph input."""
    onnx = import_extra("onnx")
    graph = model.graph
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    inputs = {i.name for i in graph.input}
    keep: set[int] = set()
    seen: set[str] = set()
    stack = [target]
    while stack:
        name = stack.pop()
        if name in seen or name == source or not name:
            continue
        seen.add(name)
        if name in producer:
            if producer[name] not in keep:
                keep.add(producer[name])
                stack.extend(graph.node[producer[name]].input)
        elif name in inputs:
            return None
    nodes = [n for i, n in enumerate(graph.node) if i in keep]
    values = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in (source, target)]
    sub = onnx.helper.make_graph(nodes, f"{graph.name}:{target}", values[:1], values[1:],
                                 initializer=[t for t in graph.initializer if t.name in seen])
    return onnx.helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)


def split_sessions(path: str | Path, make_session: Any) -> tuple[Any, Any, str, str] | None:
    """(front-end session, head session, front-end input name, frame-vector name), or None when the
    front-end cannot be found; `make_session(bytes)` builds an onnxruntime session."""
    onnx = import_extra("onnx")

    model = onnx.load(str(path))
    bounds = front_end_boundary(model.graph)
    if bounds is None:
        return None
    entering, leaving = bounds
    front, head = sub_model(model, entering, leaving), sub_model(model, leaving, OUTPUT_NAME)
    del model
    if front is None or head is None:
        return None
    return make_session(front.SerializeToString()), make_session(head.SerializeToString()), entering, leaving


def pooling_cut(path: str | Path, make_session: Any) -> tuple[list[Any], Any, str] | None:
    """(the pooling's weights as arrays, in the order its nodes use them, a session computing the
    embedding from the pooled vector, that vector's name), or None when the graph has no such cut:
    what a streamed pooling (model.pooling_stream) needs to run an export's pooling a chunk at a time."""
    onnx = import_extra("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(path))
    bounds = front_end_boundary(model.graph, POOLING_SCOPE)
    if bounds is None:
        return None
    initializers = {t.name: t for t in model.graph.initializer}
    weights: list[str] = []
    for n in model.graph.node:
        if POOLING_SCOPE in n.name:
            weights += [i for i in n.input if i in initializers and i not in weights]
    head = sub_model(model, bounds[1], OUTPUT_NAME)
    if head is None:
        return None
    return [numpy_helper.to_array(initializers[w]) for w in weights], make_session(head.SerializeToString()), bounds[1]
