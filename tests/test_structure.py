"""The structural half of the zero-overhead proof: canonical graph comparison (onnx only)."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from adaptsr.export.structure import canonical_nodes, compare_structure


def conv_relu(dilation: int, relu_first: bool, weight_seed: int = 0, prefix: str = ""):
    """x -> [ReLU] -> Conv 3x3 (dilation) -> [ReLU] -> y, the ReLU before or after the conv."""
    rng = np.random.default_rng(weight_seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), f"{prefix}w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), f"{prefix}b")
    conv = dict(kernel_shape=[3, 3], pads=[dilation] * 4, dilations=[dilation] * 2)
    if relu_first:
        nodes = [
            helper.make_node("Relu", ["x"], [f"{prefix}r"], name=f"{prefix}relu"),
            helper.make_node("Conv", [f"{prefix}r", w.name, b.name], ["y"], **conv),
        ]
    else:
        nodes = [
            helper.make_node("Conv", ["x", w.name, b.name], [f"{prefix}c"], **conv),
            helper.make_node("Relu", [f"{prefix}c"], ["y"], name=f"{prefix}relu"),
        ]
    graph = helper.make_graph(
        nodes,
        f"{prefix}g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_wiring_and_attributes_count_not_just_op_statistics():
    """Same ops, same initializer shapes, same parameters; different dilation and ReLU place."""
    a, b = conv_relu(2, relu_first=True), conv_relu(1, relu_first=False)
    result = compare_structure(a, b)
    assert not result["identical"] and result["verdict"] == "FAIL"
    assert result["params"][0] == result["params"][1]  # the old statistics could not tell
    assert result["first_difference"] == "#0 Relu 'relu' vs #0 Conv 'c': op Relu vs Conv"
    # only the dilation differs: named as an attribute
    dilated = compare_structure(conv_relu(2, False), conv_relu(1, False))
    assert "attribute dilations" in dilated["first_difference"], dilated
    # only the ReLU's place differs
    moved = compare_structure(conv_relu(1, True), conv_relu(1, False))
    assert not moved["identical"]


def test_weight_values_and_names_do_not_count():
    a = conv_relu(2, relu_first=True, weight_seed=0)
    b = conv_relu(2, relu_first=True, weight_seed=1, prefix="other_")
    assert compare_structure(a, b)["identical"]


def test_independent_nodes_in_another_order_still_match():
    def two_branches(swap: bool):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
        first = helper.make_node("Relu", ["x"], ["p"])
        second = helper.make_node("Sigmoid", ["x"], ["q"])
        add = helper.make_node("Sub", ["p", "q"], ["y"])
        nodes = [second, first, add] if swap else [first, second, add]
        return helper.make_model(helper.make_graph(nodes, "g", [x], [y]))

    assert compare_structure(two_branches(False), two_branches(True))["identical"]
    # but which value feeds which slot of a non-commutative op does count
    swapped = two_branches(False)
    swapped.graph.node[2].input[:] = ["q", "p"]
    result = compare_structure(two_branches(False), swapped)
    assert not result["identical"] and "input 0" in result["first_difference"]


def test_initializer_dtype_and_shape_by_slot_count():
    a = conv_relu(1, False)
    b = conv_relu(1, False)
    b.graph.initializer[1].CopyFrom(
        numpy_helper.from_array(np.zeros(4, np.float16), b.graph.initializer[1].name)
    )
    result = compare_structure(a, b)
    assert not result["identical"] and "input 2" in result["first_difference"]


def test_an_extra_dead_node_and_extra_outputs_count():
    a, b = conv_relu(1, False), conv_relu(1, False)
    b.graph.node.append(helper.make_node("Identity", ["y"], ["y2"]))
    result = compare_structure(a, b)
    assert not result["identical"]
    c = conv_relu(1, False)
    c.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    assert not compare_structure(a, c)["identical"]


def test_canonical_order_is_topological_and_deterministic():
    model = conv_relu(1, True)
    order, labels = canonical_nodes(model.graph)
    assert [sig[0] for sig in order[:-1]] == ["Relu", "Conv"]
    assert order[-1] == ("graph outputs", ("node 1 output 0",))
    onnx.checker.check_model(model)
    assert canonical_nodes(model.graph) == (order, labels)
