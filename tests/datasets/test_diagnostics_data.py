"""Diagnostic probes: each answer is what the paper's definition says it is, the data is a
function of the seed, the splits are disjoint, bad knobs name the knob, the export round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seqzoo.cli import main
from seqzoo.datasets.diagnostics import (
    IGNORE,
    MQARDataModule,
    MultiQueryAssociativeRecall,
    PasskeyRetrieval,
    SelectivBenchDataModule,
    SelectivBenchGrammar,
    SelectiveCopying,
    make_probe,
    read_diagnostics,
)
from seqzoo.errors import ConfigError, DataError


def _sample(probe, n=200, seed=0):
    return probe.sample(n, np.random.default_rng(seed))


def test_mqar_answer_is_the_value_bound_to_the_queried_key():
    probe = MultiQueryAssociativeRecall(vocab_size=32, seq_len=40, n_pairs=6, n_queries=4)
    inputs, targets = _sample(probe)
    half = 16
    for x, y in zip(inputs, targets):
        keys, values = x[0:12:2], x[1:12:2]
        assert len(set(keys)) == 6 and (keys >= 1).all() and (keys < half).all() and (values >= half).all()
        bound = dict(zip(keys, values))
        answers = np.flatnonzero(y != IGNORE)
        assert len(answers) == 4 and (answers >= 12).all() and (answers % 2 == 0).all()
        for t in answers:
            assert y[t] == bound[x[t]], "the answer at a query is the value bound to that key"


def test_mqar_queries_every_key_by_default_and_gaps_favour_near_queries():
    probe = MultiQueryAssociativeRecall(vocab_size=64, seq_len=64, n_pairs=4)
    inputs, targets = _sample(probe, n=2000)
    assert ((targets != IGNORE).sum(axis=1) == 4).all()
    positions = np.nonzero(targets != IGNORE)[1]
    first, last = positions < 8 + 24, positions >= 8 + 24  # near and far halves of the query region
    assert first.sum() > 1.5 * last.sum(), "Zoology's power law (a = 0.01) puts most queries near the pairs"


def test_selective_copy_targets_are_the_non_noise_tokens_in_order():
    probe = SelectiveCopying(vocab_size=10, seq_len=30, n_copy=5)
    inputs, targets = _sample(probe)
    for x, y in zip(inputs, targets):
        context = x[:25]
        data = context[context != SelectiveCopying.noise_token]
        assert len(data) == 5 and (data >= 2).all()
        assert (x[25:] == SelectiveCopying.cue_token).all()
        assert (y[:25] == IGNORE).all() and (y[25:] == data).all()


def test_grammar_targets_follow_the_rules_and_gaps_break_them():
    probe = SelectivBenchGrammar(n_symbols=8, n_states=14, branching=2, seq_len=80, gap_prob=0.5, gap_min=1, gap_max=4)
    inputs, targets = _sample(probe, n=100)
    assert len(set(probe.symbols.tolist())) < probe.n_states, "some states share a symbol (ambiguity)"
    for x, y in zip(inputs, targets):
        assert y[0] == 0 and x[0] == probe.symbols[0]
        gaps = 0
        for t in range(1, len(x)):
            if x[t] not in probe.allowed(y[t - 1]):
                assert y[t] == y[t - 1], "a rule-breaking distractor keeps the state"
                gaps += 1
                continue
            # a grammatical token: a successor of the previous state, emitting its symbol
            assert y[t] in probe.successors[y[t - 1]], (t, x, y)
            assert x[t] == probe.symbols[y[t]]
        assert gaps > 0


def test_grammar_state_is_recoverable_from_the_grammatical_history():
    """Bayes accuracy 1: replaying the rules on the tokens, skipping rule-breakers, recovers every target."""
    probe = SelectivBenchGrammar(seq_len=60, gap_prob=0.4)
    inputs, targets = _sample(probe, n=100)
    for x, y in zip(inputs, targets):
        state = 0
        for t in range(1, len(x)):
            nxt = [s for s in probe.successors[state] if probe.symbols[s] == x[t]]
            if nxt:
                state = int(nxt[0])
            assert state == y[t]


def test_passkey_answers_are_the_digits_after_the_marker():
    probe = PasskeyRetrieval(vocab_size=20, seq_len=40, passkey_len=5)
    inputs, targets = _sample(probe)
    for x, y in zip(inputs, targets):
        (marker,) = np.flatnonzero(x[:35] == PasskeyRetrieval.marker_token)
        digits = x[marker + 1:marker + 6]
        assert ((digits >= 2) & (digits < 12)).all()
        assert (y[35:] == digits).all() and (y[:35] == IGNORE).all()


@pytest.mark.parametrize("task", ["mqar", "selective_copy", "selectivbench", "passkey"])
def test_same_seed_same_data_and_splits_are_disjoint(task):
    from seqzoo.datasets.diagnostics import generate_splits

    probe = make_probe(task, seq_len=32)
    sizes = {"train": 300, "val": 50, "test": 50}
    a, b = generate_splits(probe, sizes, seed=3), generate_splits(probe, sizes, seed=3)
    other = generate_splits(probe, sizes, seed=4)
    for split in sizes:
        np.testing.assert_array_equal(a[split][0], b[split][0])
        np.testing.assert_array_equal(a[split][1], b[split][1])
    assert not np.array_equal(a["train"][0], other["train"][0])
    rows = {split: {r.tobytes() for r in a[split][0]} for split in sizes}
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]


def test_dims_come_from_init_arguments_without_generating_data():
    dm = MQARDataModule(vocab_size=32, seq_len=24, n_pairs=4)
    assert dm.dims == {"vocab_size": 32, "n_classes": 32, "seq_len": 24} and dm.datasets == {}
    grammar = SelectivBenchDataModule(n_symbols=9, n_states=15, seq_len=30)
    assert grammar.dims == {"vocab_size": 9, "n_classes": 15, "seq_len": 30}


@pytest.mark.parametrize("task, knobs, knob", [
    ("mqar", {"vocab_size": 16, "n_pairs": 8, "seq_len": 64}, "n_pairs"),
    ("mqar", {"n_pairs": 8, "seq_len": 20}, "seq_len"),
    ("mqar", {"n_pairs": 4, "n_queries": 5}, "n_queries"),
    ("mqar", {"seq_len": 63}, "seq_len"),
    ("selective_copy", {"n_copy": 8, "seq_len": 15}, "seq_len"),
    ("selectivbench", {"n_symbols": 5, "branching": 4}, "branching"),
    ("selectivbench", {"n_symbols": 12, "n_states": 8}, "n_states"),
    ("passkey", {"passkey_len": 5, "seq_len": 10}, "seq_len"),
    ("passkey", {"vocab_size": 12}, "vocab_size"),
])
def test_bad_knobs_name_the_knob(task, knobs, knob):
    with pytest.raises(ConfigError, match=rf"^{knob}: "):
        make_probe(task, **knobs)


def test_unknown_knob_and_task_are_config_errors():
    with pytest.raises(ConfigError, match="no knob.*n_copy"):
        make_probe("mqar", n_copy=3)
    with pytest.raises(ConfigError, match="unknown diagnostic task 'nope'"):
        make_probe("nope")


def test_synth_cli_writes_splits_that_the_reader_reads_back(tmp_path, capsys):
    out = tmp_path / "mqar"
    assert main(["data", "synth", "diagnostics", "--out", str(out), "--task", "mqar", "--n_train", "50",
                 "--n_val", "10", "--n_test", "10", "--knobs", json.dumps({"n_pairs": 4, "seq_len": 24})]) == 0
    meta, splits = read_diagnostics(out)
    assert meta["task"] == "mqar" and meta["knobs"]["n_pairs"] == 4 and meta["seq_len"] == 24
    assert splits["train"][0].shape == (50, 24) and splits["test"][1].shape == (10, 24)
    (out / "val.npz").unlink()
    with pytest.raises(DataError, match="val split not found"):
        read_diagnostics(out)
    np.savez(out / "val.npz", inputs=np.full((2, 24), 99), targets=np.full((2, 24), IGNORE))
    with pytest.raises(DataError, match=r"val.npz: token ids must be in \[0, 64\)"):
        read_diagnostics(out)
