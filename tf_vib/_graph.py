"""Walking a tf_keras functional graph: shared by wrapping and stripping."""

__all__ = ["graph_nodes", "as_list", "node_outputs", "tensor_users"]


def graph_nodes(model):
    """The model's call nodes in topological order, without its input layers."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        yield from (n for n in model._nodes_by_depth[depth] if not n.is_input)


def as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def node_outputs(node):
    return as_list(node.outputs)


def tensor_users(model):
    """``{id(tensor): [node, ...]}``: the call nodes of ``model`` that take each tensor."""
    users = {}
    for node in graph_nodes(model):
        for tensor in node.keras_inputs:
            users.setdefault(id(tensor), []).append(node)
    return users
