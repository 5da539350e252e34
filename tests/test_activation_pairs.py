"""(operation, activation) pairs, the discrete side of issue 16: names ("sep_conv_3x3/silu"),
op specs, modules with the chosen activation everywhere inside, genotypes of both spaces
(text forms, validation, one canonical name), networks, `nas info`, retraining and the
ONNX export. Published genotypes keep their names and mean ReLU."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest
import torch
from torch import nn

from nas.cli.main import main
from search_spaces.activations import (
    ACTIVATIONS,
    DEFAULT_ACTIVATION,
    PAIR_SEPARATOR,
    NamedActivation,
    activation_module,
    pair_name,
    register_activation,
    split_pair,
)
from search_spaces.complexity import count_macs, count_parameters
from search_spaces.darts_space import DARTS_SPACE
from search_spaces.errors import InputError, UnknownOperationError
from search_spaces.genotype import Genotype, load_genotype, parse_darts_literal
from search_spaces.genotype_library import DARTS_V2
from search_spaces.nb201 import NB201_NAMESPACE, Nb201Arch, parse_arch
from search_spaces.nb201_space import NB201_SPACE
from search_spaces.op_spec import check_op_names, find_op_spec, op_spec, visible_op_names
from search_spaces.ops import DilConv, ReLUConvBN, SepConv, build_op
from search_spaces.space import load_architecture

torch.set_num_threads(1)

#: each activation module type, by name
MODULE_TYPES = {"relu": nn.ReLU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU,
                "hardswish": nn.Hardswish}

#: a DARTS genotype using every non-default activation once, and its all-ReLU twin
PAIRS = Genotype(
    normal=(("sep_conv_3x3/silu", 0), ("sep_conv_5x5/hardswish", 1),
            ("dil_conv_3x3/elu", 0), ("skip_connect", 1),
            ("dil_conv_5x5/leaky_relu", 1), ("max_pool_3x3", 0),
            ("sep_conv_3x3", 0), ("avg_pool_3x3", 3)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("sep_conv_3x3/silu", 0), ("max_pool_3x3", 1),
            ("skip_connect", 0), ("dil_conv_3x3/hardswish", 2),
            ("sep_conv_5x5", 1), ("avg_pool_3x3", 0),
            ("skip_connect", 2), ("dil_conv_5x5/elu", 3)),
    reduce_concat=(2, 3, 4, 5),
)
PLAIN = Genotype(
    normal=tuple((split_pair(op)[0], i) for op, i in PAIRS.normal),
    normal_concat=PAIRS.normal_concat,
    reduce=tuple((split_pair(op)[0], i) for op, i in PAIRS.reduce),
    reduce_concat=PAIRS.reduce_concat,
)
NB201_PAIRS = ("|nor_conv_3x3/silu~0|+|skip_connect~0|nor_conv_1x1/hardswish~1|"
               "+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")
#: digits-sized networks: cheap to build, count and run
SMALL = ["--dataset", "digits", "--channels", "4", "--layers", "3"]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def kinds(module: nn.Module) -> Counter[str]:
    """How many modules of each activation type `module` holds."""
    return Counter(name for m in module.modules() for name, t in MODULE_TYPES.items()
                   if type(m) is t)


# ------------------------------------------------------------------------ names


def test_split_pair_and_pair_name() -> None:
    assert PAIR_SEPARATOR == "/" and DEFAULT_ACTIVATION == "relu"
    assert split_pair("sep_conv_3x3/silu") == ("sep_conv_3x3", "silu")
    assert split_pair("sep_conv_3x3") == ("sep_conv_3x3", None)
    assert pair_name("sep_conv_3x3", "silu") == "sep_conv_3x3/silu"
    # ReLU is every shipped op's activation: its pair is the plain name
    assert pair_name("sep_conv_3x3", "relu") == pair_name("sep_conv_3x3", None) == "sep_conv_3x3"
    assert pair_name(*split_pair("nor_conv_1x1/elu")) == "nor_conv_1x1/elu"
    for bad in ("a/b/c", "/silu", "sep_conv_3x3/", "/"):
        with pytest.raises(UnknownOperationError) as exc:
            split_pair(bad)
        assert "\n" not in str(exc.value) and repr(bad) in str(exc.value)
    with pytest.raises(UnknownOperationError):
        pair_name("sep_conv_3x3/silu", "elu")


def test_activation_modules() -> None:
    for name, module_type in MODULE_TYPES.items():
        assert type(activation_module(name)) is module_type
    assert activation_module("leaky_relu").negative_slope == 0.01
    relu = activation_module("relu")
    assert isinstance(relu, nn.ReLU) and not relu.inplace
    x = torch.randn(2, 3, 4, 4)
    for name, fn in ACTIVATIONS.items():  # the module computes the supernet's function
        assert torch.equal(activation_module(name)(x), fn(x))
    with pytest.raises(UnknownOperationError, match="unknown activation 'nope'"):
        activation_module("nope")
    # a registered function without a module type of its own is wrapped by name
    register_activation("pairtest_softsign", torch.nn.functional.softsign)
    try:
        m = activation_module("pairtest_softsign")
        assert isinstance(m, NamedActivation)
        assert torch.equal(m(x), torch.nn.functional.softsign(x))
        sep = SepConv(4, 4, 3, 1, 1, activation="pairtest_softsign")
        assert sum(isinstance(mm, NamedActivation) for mm in sep.modules()) == 2
    finally:
        del ACTIVATIONS["pairtest_softsign"]


# ---------------------------------------------------------------------- op specs


def test_op_spec_resolves_pairs() -> None:
    base = op_spec("sep_conv_3x3")
    assert base.takes_activation and base.batched_activated is not None
    spec = op_spec("sep_conv_3x3/silu")
    assert spec is op_spec("sep_conv_3x3/silu") is find_op_spec("sep_conv_3x3/silu")  # cached
    assert spec.name == "sep_conv_3x3/silu" and spec.family == "conv" and spec.heavy
    assert (spec.zero, spec.supernet_bn, spec.namespace) == (False, False, "")
    assert dict(spec.layers) == dict(base.layers)
    assert not spec.takes_activation  # its activation is chosen already
    assert kinds(spec.build(4, 2, False)) == {"silu": 2}
    batched = spec.batched
    assert batched is not None and batched(4, 1, 3).activation == "silu"
    for op in ("sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"):
        assert op_spec(op).takes_activation
        assert op_spec(f"{op}/elu").batched(4, 1, 2).activation == "elu"
    for op in ("nor_conv_1x1", "nor_conv_3x3"):
        assert op_spec(op, NB201_NAMESPACE).takes_activation
        pair = op_spec(f"{op}/hardswish", NB201_NAMESPACE)
        assert kinds(pair.build(4, 1, True)) == {"hardswish": 1}
        assert pair.batched(4, 1, 2).activation == "hardswish"
    # pairs are looked up, not listed
    assert all(PAIR_SEPARATOR not in n for n in visible_op_names(NB201_NAMESPACE))
    check_op_names(["sep_conv_3x3/silu", "dil_conv_5x5/leaky_relu", "none"])
    check_op_names(["nor_conv_3x3/elu"], ("nor_conv_3x3", "none"), NB201_NAMESPACE)


@pytest.mark.parametrize(("name", "namespace", "needle"), [
    ("skip_connect/silu", "", "operation 'skip_connect' carries no activation choice; "
     "pairs are only for: sep_conv_3x3"),
    ("max_pool_3x3/silu", "", "'max_pool_3x3' carries no activation choice"),
    ("avg_pool_3x3/elu", NB201_NAMESPACE, "'avg_pool_3x3' carries no activation choice"),
    ("none/silu", "", "'none' carries no activation choice"),
    ("sep_conv_3x3/gelu", "", "unknown activation 'gelu'; known activations: relu, silu"),
    ("conv_9x9/silu", "", "unknown operation 'conv_9x9'"),
    ("sep_conv_3x3/silu/elu", "", "malformed operation name"),
])
def test_bad_pairs_are_one_line(name, namespace, needle) -> None:
    assert find_op_spec(name, namespace) is None
    for call in (lambda: op_spec(name, namespace), lambda: check_op_names([name], None,
                                                                           namespace)):
        with pytest.raises(UnknownOperationError) as exc:
            call()
        assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_nb201_pairs_list_only_the_spaces_ops() -> None:
    with pytest.raises(UnknownOperationError) as exc:
        check_op_names(["skip_connect/silu"], ("none", "skip_connect", "nor_conv_3x3"),
                       NB201_NAMESPACE)
    assert str(exc.value).endswith("pairs are only for: nor_conv_3x3")


# ------------------------------------------------------------------------ modules


def test_activated_module_has_the_activation_everywhere() -> None:
    plain, silu = build_op("sep_conv_3x3", 8, 1), build_op("sep_conv_3x3/silu", 8, 1)
    assert count_parameters(plain) == count_parameters(silu)
    assert kinds(plain) == {"relu": 2} and kinds(silu) == {"silu": 2}
    assert not any(isinstance(m, nn.ReLU) for m in silu.modules())
    assert list(plain.state_dict()) == list(silu.state_dict())
    # "/relu" and the default argument build the module of old, key for key
    for a, b in ((SepConv(8, 8, 3, 2, 1), SepConv(8, 8, 3, 2, 1, activation="relu")),
                 (DilConv(8, 8, 3, 1, 2, 2), build_op("dil_conv_3x3/relu", 8, 1)),
                 (ReLUConvBN(8, 8, 3, 1, 1), build_op("nor_conv_3x3/relu", 8, 1)),
                 (build_op("sep_conv_5x5", 8, 1), build_op("sep_conv_5x5/relu", 8, 1))):
        assert repr(a) == repr(b) and list(a.state_dict()) == list(b.state_dict())
    assert list(SepConv(8, 8, 3, 1, 1).state_dict()) == [
        f"{i}.{layer}" for i in (0, 1) for layer in (
            "1.weight", "2.weight", "3.weight", "3.bias", "3.running_mean", "3.running_var",
            "3.num_batches_tracked")]
    assert kinds(DilConv(8, 8, 5, 2, 4, 2, activation="elu")) == {"elu": 1}
    assert kinds(ReLUConvBN(8, 8, 1, 1, 0, activation="leaky_relu")) == {"leaky_relu": 1}
    # stride-2 skip keeps its ReLU: it carries no activation choice
    assert kinds(build_op("skip_connect", 8, 2)) == {"relu": 1}


# ---------------------------------------------------------------------- genotypes


def test_darts_genotype_text_forms_round_trip_pairs(tmp_path) -> None:
    assert DARTS_SPACE.parse(PAIRS.to_dict()) == PAIRS
    assert Genotype.from_dict(json.loads(json.dumps(PAIRS.to_dict()))) == PAIRS
    text = str(PAIRS)
    assert "('sep_conv_3x3/silu', 0)" in text and parse_darts_literal(text) == PAIRS
    assert DARTS_SPACE.parse(text) == PAIRS
    DARTS_SPACE.save(PAIRS, tmp_path / "g.json")
    assert load_architecture(str(tmp_path / "g.json")) == PAIRS
    (tmp_path / "g.py").write_text(f"MINE = {PAIRS}\n")
    assert load_architecture(str(tmp_path / "g.py")) == PAIRS
    # published genotypes paste in unchanged and mean ReLU
    assert DARTS_SPACE.parse(str(DARTS_V2)) == DARTS_V2 == load_architecture("DARTS_V2")
    assert DARTS_SPACE.parse(str(DARTS_V2)) is not None and DARTS_V2.canonical() is DARTS_V2


def test_relu_pairs_take_the_plain_name(tmp_path) -> None:
    spelled = Genotype(
        normal=tuple((op if PAIR_SEPARATOR in op or op not in ("sep_conv_3x3", "sep_conv_5x5")
                      else f"{op}/relu", i) for op, i in PAIRS.normal),
        normal_concat=PAIRS.normal_concat, reduce=PAIRS.reduce,
        reduce_concat=PAIRS.reduce_concat)
    assert spelled != PAIRS and "sep_conv_3x3/relu" in str(spelled)
    assert spelled.canonical() == PAIRS
    assert DARTS_SPACE.parse(spelled.to_dict()) == PAIRS
    assert DARTS_SPACE.parse(str(spelled)) == PAIRS
    (tmp_path / "relu.json").write_text(json.dumps(spelled.to_dict()))
    assert load_architecture(str(tmp_path / "relu.json")) == PAIRS
    assert load_genotype(tmp_path / "relu.json") == spelled  # the file is read as it is


@pytest.mark.parametrize(("op", "needle"), [
    ("skip_connect/silu", "'skip_connect' carries no activation choice; pairs are only for: "
     "sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5"),
    ("avg_pool_3x3/elu", "'avg_pool_3x3' carries no activation choice"),
    ("sep_conv_3x3/swish", "unknown activation 'swish'"),
    ("nor_conv_3x3/silu", "unknown operation 'nor_conv_3x3'"),  # NB201's, not DARTS's
    ("sep_conv_3x3//silu", "malformed operation name"),
    ("conv_7x7", "unknown operation 'conv_7x7'"),
])
def test_invalid_pairs_in_a_genotype_are_one_line(op, needle, tmp_path, capsys) -> None:
    data = PAIRS.to_dict()
    data["reduce"][3][0] = op
    with pytest.raises(UnknownOperationError) as exc:
        DARTS_SPACE.parse(data, source="mine.json")
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg and msg.startswith("mine.json: ")
    assert "'reduce' edge 3" in msg
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    code, out, err = run_cli(["info", str(path)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and needle in err


def test_nb201_arch_strings_with_pairs() -> None:
    arch = NB201_SPACE.parse(NB201_PAIRS)
    assert arch.ops[0] == "nor_conv_3x3/silu" and arch.ops[2] == "nor_conv_1x1/hardswish"
    assert str(arch) == NB201_PAIRS and parse_arch(str(arch)) == arch
    assert NB201_SPACE.parse(json.loads(json.dumps(arch.to_dict()))) == arch
    assert load_architecture(NB201_PAIRS) == arch
    relu = NB201_PAIRS.replace("nor_conv_3x3~2", "nor_conv_3x3/relu~2")
    assert parse_arch(relu) == arch and Nb201Arch(tuple(arch.ops)) == arch
    assert NB201_SPACE.equivalents(arch) == ()
    for bad, needle in (("avg_pool_3x3/silu~1", "'avg_pool_3x3' carries no activation choice; "
                         "pairs are only for: nor_conv_1x1, nor_conv_3x3"),
                        ("skip_connect/elu~1", "'skip_connect' carries no activation choice"),
                        ("nor_conv_1x1/gelu~1", "unknown activation 'gelu'"),
                        ("sep_conv_3x3/silu~1", "unknown NB201 operation 'sep_conv_3x3/silu'")):
        text = NB201_PAIRS.replace("avg_pool_3x3~1", bad)
        with pytest.raises(InputError) as exc:
            parse_arch(text)
        assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_encodings_refuse_activation_pairs_and_keep_plain_ones() -> None:
    with pytest.raises(InputError) as exc:
        DARTS_SPACE.encode(PAIRS)
    assert str(exc.value) == ("the plain latency encoding has no column for "
                              "sep_conv_3x3/silu; the activation-aware one has (space "
                              "darts-act / nb201-act)")
    with pytest.raises(InputError, match=r"no column for nor_conv_3x3/silu"):
        NB201_SPACE.encode(NB201_SPACE.parse(NB201_PAIRS))
    spelled = Genotype(normal=(("sep_conv_3x3/relu", 0),) + PLAIN.normal[1:],
                       normal_concat=PLAIN.normal_concat, reduce=PLAIN.reduce,
                       reduce_concat=PLAIN.reduce_concat)
    assert (DARTS_SPACE.encode(spelled) == DARTS_SPACE.encode(PLAIN)).all()


# ------------------------------------------------------------------------ networks


def test_pair_network_runs_and_applies_its_activations() -> None:
    torch.manual_seed(0)
    net = DARTS_SPACE.build_network(PAIRS, 8, 3, 10, auxiliary=False).eval()
    plain = DARTS_SPACE.build_network(PLAIN, 8, 3, 10, auxiliary=False).eval()
    calls: Counter[str] = Counter()
    for m in net.modules():
        for name, t in MODULE_TYPES.items():
            if type(m) is t and name != "relu":
                m.register_forward_hook(lambda *_, n=name: calls.update([n]))
    with torch.no_grad():
        logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux is None and torch.isfinite(logits).all()
    # layers=3: one normal and two reduction cells; sep convs hold two activations
    expected = Counter({"silu": 2 + 2 * 2, "hardswish": 2 + 2 * 1, "elu": 1 + 2 * 1,
                        "leaky_relu": 1})
    assert calls == expected
    got, relu = kinds(net), kinds(plain)
    assert {k: v for k, v in got.items() if k != "relu"} == expected
    assert relu["relu"] - got["relu"] == sum(expected.values())
    assert count_parameters(net) == count_parameters(plain)
    assert count_macs(net, (3, 32, 32)) == count_macs(plain, (3, 32, 32))
    # NB201: the benchmark's network with the pair cell
    nb = NB201_SPACE.build_network(NB201_PAIRS, 4, 1).eval()
    nb_plain = NB201_SPACE.build_network(
        NB201_PAIRS.replace("/silu", "").replace("/hardswish", ""), 4, 1)
    with torch.no_grad():
        assert nb(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert kinds(nb)["silu"] == 3 and kinds(nb)["hardswish"] == 3
    assert count_parameters(nb) == count_parameters(nb_plain)


def test_nas_info_on_pairs_matches_relu(tmp_path, capsys) -> None:
    DARTS_SPACE.save(PAIRS, tmp_path / "pairs.json")
    DARTS_SPACE.save(PLAIN, tmp_path / "plain.json")
    sizes = []
    for name in ("pairs", "plain"):
        code, out, err = run_cli(["info", str(tmp_path / f"{name}.json"), *SMALL, "--json"],
                                 capsys)
        assert code == 0, err
        sizes.append(json.loads(out))
    assert sizes[0]["params"] > 0 and sizes[0]["macs"] > 0
    for key in ("params", "macs", "additions", "bit_operations"):
        assert sizes[0][key] == sizes[1][key]  # activations add no MACs
    code, out, err = run_cli(["info", str(tmp_path / "pairs.json"), *SMALL], capsys)
    assert code == 0 and f"{sizes[0]['params']:,}" in out and err == ""
    code, out, err = run_cli(["info", NB201_PAIRS, "--json"], capsys)
    assert code == 0, err
    code, plain_out, _ = run_cli(["info", NB201_PAIRS.replace("/silu", "").replace(
        "/hardswish", ""), "--json"], capsys)
    assert json.loads(out)["params"] == json.loads(plain_out)["params"]
    assert json.loads(out)["macs"] == json.loads(plain_out)["macs"]


def test_latency_of_pairs_reads_the_activation_aware_predictor(tmp_path, capsys) -> None:
    """A genotype with pairs is predicted by the profile's darts-act predictor; a profile
    without one says, in one line, how to make it."""
    DARTS_SPACE.save(PAIRS, tmp_path / "pairs.json")
    code, out, err = run_cli(["latency", str(tmp_path / "pairs.json"), "--hardware", "p100",
                              "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["space"] == "darts-act" and result["predicted_ms"] > 0
    assert result["predictor"].endswith("p100.darts-act.predictor")
    code, out, err = run_cli(["latency", str(tmp_path / "pairs.json"), "--hardware", "h100"],
                             capsys)
    assert code == 2 and out == ""
    assert "h100.darts-act.predictor" in err and "--space darts-act" in err
    assert len(err.strip().splitlines()) == 1


def test_measuring_pairs_still_times_them_without_a_prediction(tmp_path, capsys) -> None:
    """--measure times a pair genotype on a profile with no activation-aware predictor
    (cpu has none): the network is measured and no prediction is guessed; a plain
    predictor named for it is refused in one line (its columns are not the pairs')."""
    from latency.hardware import profiles_dir

    DARTS_SPACE.save(PAIRS, tmp_path / "pairs.json")
    code, out, err = run_cli(["latency", str(tmp_path / "pairs.json"), "--hardware", "cpu",
                              "--measure", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["predicted_ms"] is None and result["measured_ms"] > 0
    assert result["space"] == "darts-act"
    code, out, err = run_cli(["latency", str(tmp_path / "pairs.json"), "--hardware", "cpu",
                              "--measure", "--predictor",
                              str(profiles_dir() / "p100.predictor")], capsys)
    assert code == 2 and "was trained on op set" in err
    assert len(err.strip().splitlines()) == 1


def test_retrain_on_pairs(tmp_path, capsys) -> None:
    from nas.retrain.export import load_trained

    DARTS_SPACE.save(PAIRS, tmp_path / "pairs.json")
    out = tmp_path / "run"
    code, stdout, err = run_cli(["retrain", "--genotype", str(tmp_path / "pairs.json"),
                                 "--epochs", "1", "--channels", "4", "--layers", "3",
                                 "--limit", "64", "--batch-size", "32", "--no-measure",
                                 "--hardware", "p100", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert 0.0 <= report["test_acc"] <= 1.0
    # predicted by p100's activation-aware predictor
    assert report["predicted_latency"]["ms"] > 0
    assert report["predicted_latency"]["predictor"].endswith("p100.darts-act.predictor")
    if importlib.util.find_spec("onnx") is not None:  # the `onnx` extra: exported too
        assert "onnx_note" not in report and (out / "model.onnx").is_file()
    assert DARTS_SPACE.parse(json.loads((out / "genotype.json").read_text())) == PAIRS
    net, _, genotype = load_trained(out)
    assert genotype == PAIRS and kinds(net)["silu"] == 6
    code, info, _ = run_cli(["info", str(out), *SMALL, "--json"], capsys)
    assert (report["params"], report["macs"]) == (json.loads(info)["params"],
                                                   json.loads(info)["macs"])


def test_onnx_export_of_pairs_runs_in_onnx_runtime(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from latency.measure import export_onnx

    torch.manual_seed(0)
    net = DARTS_SPACE.build_network(PAIRS, 4, 3, 10, in_channels=1, auxiliary=False).eval()
    path = export_onnx(net, (1, 8, 8), tmp_path / "pairs.onnx")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        logits, _ = net(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    assert torch.allclose(torch.from_numpy(got), logits, atol=1e-4, rtol=1e-4)
