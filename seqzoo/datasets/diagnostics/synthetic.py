"""Seeded generators of the synthetic memory and selectivity probes.

Every probe is a token sequence ``inputs`` (N, L) int64 with ``targets`` (N, L) int64
holding the answer at *answer positions* and :data:`IGNORE` (-100) elsewhere; a model
reads ``inputs`` causally and is scored only where ``targets != IGNORE``. Each generator
checks its knobs on construction (a :class:`~seqzoo.errors.ConfigError` names the knob)
and draws samples from a ``numpy.random.Generator``, so a seed fixes the data.

* :class:`MultiQueryAssociativeRecall` -- MQAR, Arora, Eyuboglu et al. 2023, "Zoology:
  Measuring and improving recall in efficient language models" (sec. 3, App. E), also the
  probe of Arora et al. 2024, "Just read twice". ``n_pairs`` key-value pairs come first
  (keys from the lower half of the vocabulary, values from the upper half, no key
  repeated); then the query region, where ``n_queries`` of the keys reappear at even
  offsets whose gaps follow Zoology's power law p(g) ∝ a g^(a-1) (a = ``power_a``) and
  every other position holds a random token. The answer at a query key is its bound value
  (next-token prediction).
* :class:`SelectiveCopying` -- Gu & Dao 2023, "Mamba: linear-time sequence modeling with
  selective state spaces" (sec. 3.1, Fig. 2, App. E.1): ``n_copy`` data tokens at random
  positions of a context of noise tokens, then ``n_copy`` copy cues; the answers at the
  cues are the data tokens in their order of appearance.
* :class:`SelectivBenchGrammar` -- after Bouhadjar et al. 2026, "Dissecting linear
  recurrent models: how different gating strategies drive selectivity and generalization"
  (SelectivBench, arXiv:2601.12598): a random rule-based grammar (hidden states that emit
  symbols; ``n_states - n_symbols`` states re-use a symbol, so the state is ambiguous from
  the current symbol alone) walked with uniform transitions, where after each grammatical
  token a gap of distractor tokens follows with probability ``gap_prob``. Distractors are
  symbols that *break the transition rules* (no successor of the current state emits
  them), as in SelectivBench's ``add_nongramm_gap``. The answer at every position is the
  grammar state of the most recent grammatical token, which fixes the set of grammatical
  next tokens (SelectivBench's classification targets; a model must read the rule-bound
  tokens and ignore the distractors).
* :class:`PasskeyRetrieval` -- the state-capacity probe of Chen et al. 2024, "Stuffed
  Mamba: oversized states lead to the inability to forget" (sec. 5): a ``passkey_len``-digit
  passkey after a marker token, hidden at a random depth in filler tokens; ``passkey_len``
  cues at the end ask for the digits. Sweeping ``seq_len`` at fixed model size gives the
  recall-vs-context-length curve whose knee is the state capacity.

Deviations (also in docs/fidelity.md): MQAR allows ``n_queries < n_pairs`` (Zoology queries
every key); selective copying places the noise token and cues in a small reserved range;
the grammar is a random automaton built so that the state is always recoverable from the
grammatical history (Bayes accuracy 1), and its tokens are one-hot ids rather than
SelectivBench's optional image/spike encodings; passkey filler is random tokens, not
repeated natural text.
"""

from __future__ import annotations

import abc
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from seqzoo.datasets.base import atomic_dir, register_synth
from seqzoo.errors import ConfigError

IGNORE = -100
"""Target value of positions that are not scored."""

SPLITS = ("train", "val", "test")


def _need(condition: bool, knob: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{knob}: {message}")


@dataclass(frozen=True)
class Probe(abc.ABC):
    """Common interface: knobs as fields, ``vocab_size`` (input tokens), ``n_classes``
    (answer classes), ``length`` and ``sample(n, rng) -> (inputs, targets)``."""

    name: ClassVar[str] = ""

    @property
    def n_classes(self) -> int:
        return self.vocab_size

    @property
    @abc.abstractmethod
    def length(self) -> int:
        """Tokens per sequence."""

    @abc.abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` sequences: inputs and targets (n, length), targets :data:`IGNORE` where not scored."""

    def knobs(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------
# multi-query associative recall (Zoology)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MultiQueryAssociativeRecall(Probe):
    """MQAR (Zoology): recall the value bound to each queried key.

    Args:
        vocab_size: tokens; keys come from [1, V/2), values from [V/2, V).
        seq_len: sequence length (even), key-value pairs plus the query region.
        n_pairs: key-value pairs at the start of each sequence.
        n_queries: keys queried again in the query region (Zoology: all, = n_pairs).
        power_a: Zoology's power-law exponent of the query gaps (1 = uniform; 0.01 default).
    """

    vocab_size: int = 64
    seq_len: int = 64
    n_pairs: int = 8
    n_queries: int | None = None
    power_a: float = 0.01
    name: ClassVar[str] = "mqar"

    def __post_init__(self) -> None:
        _need(self.vocab_size >= 4 and self.vocab_size % 2 == 0, "vocab_size",
              f"must be an even number >= 4, got {self.vocab_size}")
        _need(self.n_pairs >= 1, "n_pairs", f"must be >= 1, got {self.n_pairs}")
        _need(self.n_pairs <= self.vocab_size // 2 - 1, "n_pairs",
              f"{self.n_pairs} pairs need {self.n_pairs} distinct keys but vocab_size {self.vocab_size} "
              f"has only {self.vocab_size // 2 - 1} key tokens (keys in [1, V/2)); raise vocab_size")
        _need(self.seq_len % 2 == 0, "seq_len", f"must be even (key-value pairs), got {self.seq_len}")
        queries = self.queries
        _need(1 <= queries <= self.n_pairs, "n_queries", f"must be in 1..n_pairs ({self.n_pairs}), got {queries}")
        room = (self.seq_len - 2 * self.n_pairs) // 2
        _need(room >= queries, "seq_len",
              f"{self.seq_len} is too short for {self.n_pairs} pairs and {queries} queries "
              f"(needs >= {2 * self.n_pairs + 2 * queries})")
        _need(self.power_a > 0, "power_a", f"must be > 0, got {self.power_a}")

    @property
    def queries(self) -> int:
        return self.n_pairs if self.n_queries is None else self.n_queries

    @property
    def length(self) -> int:
        return self.seq_len

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        v, p, q, length = self.vocab_size, self.n_pairs, self.queries, self.seq_len
        half = v // 2
        keys = _choose_rows(rng, n, np.arange(1, half), p)
        values = _choose_rows(rng, n, np.arange(half, v), p)
        inputs = rng.integers(0, v, size=(n, length))
        inputs[:, 0:2 * p:2] = keys
        inputs[:, 1:2 * p:2] = values
        targets = np.full((n, length), IGNORE, dtype=np.int64)
        space = (length - 2 * p) // 2
        weights = self.power_a * np.arange(1, space + 1, dtype=np.float64) ** (self.power_a - 1)
        weights /= weights.sum()
        rows = np.arange(n)[:, None]
        gaps = _choose_rows(rng, n, np.arange(space), q, weights)
        which = _choose_rows(rng, n, np.arange(p), q)  # which pairs are queried (all when q == p)
        positions = 2 * p + 2 * gaps
        inputs[rows, positions] = keys[rows, which]
        targets[rows, positions] = values[rows, which]
        return inputs.astype(np.int64), targets


def _choose_rows(rng: np.random.Generator, n: int, pool: np.ndarray, k: int, p: np.ndarray | None = None) -> np.ndarray:
    """``k`` distinct draws from ``pool`` per row (n, k); with weights ``p`` if given."""
    if p is None:
        return pool[np.argsort(rng.random((n, len(pool))), axis=1)[:, :k]]
    # Weighted sampling without replacement: Gumbel top-k (Efraimidis-Spirakis).
    scores = np.log(p)[None, :] - np.log(-np.log(rng.random((n, len(pool)))))
    return pool[np.argsort(-scores, axis=1)[:, :k]]


# ---------------------------------------------------------------------------------------
# selective copying (Mamba)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectiveCopying(Probe):
    """Selective copying (Mamba): copy the non-noise tokens, in order, after the context.

    Token 0 is noise, 1 the copy cue, 2..V-1 data. Layout: a context of ``seq_len - n_copy``
    positions (``n_copy`` data tokens at random positions, noise elsewhere), then ``n_copy``
    cues whose answers are the data tokens in order.

    Args:
        vocab_size: tokens including noise (0) and the cue (1); data tokens are 2..V-1.
        seq_len: total length: context plus the ``n_copy`` cue positions.
        n_copy: data tokens to memorise and copy back.
    """

    vocab_size: int = 16
    seq_len: int = 64
    n_copy: int = 8
    name: ClassVar[str] = "selective_copy"
    noise_token: ClassVar[int] = 0
    cue_token: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _need(self.vocab_size >= 3, "vocab_size", f"needs noise, cue and >= 1 data token (>= 3), got {self.vocab_size}")
        _need(self.n_copy >= 1, "n_copy", f"must be >= 1, got {self.n_copy}")
        _need(self.seq_len >= 2 * self.n_copy, "seq_len",
              f"{self.seq_len} is too short to hold {self.n_copy} tokens and {self.n_copy} cues "
              f"(needs >= {2 * self.n_copy})")

    @property
    def length(self) -> int:
        return self.seq_len

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k, context = self.n_copy, self.seq_len - self.n_copy
        data = rng.integers(2, self.vocab_size, size=(n, k))
        slots = np.sort(_choose_rows(rng, n, np.arange(context), k), axis=1)
        inputs = np.full((n, self.seq_len), self.noise_token, dtype=np.int64)
        inputs[np.arange(n)[:, None], slots] = data
        inputs[:, context:] = self.cue_token
        targets = np.full((n, self.seq_len), IGNORE, dtype=np.int64)
        targets[:, context:] = data
        return inputs, targets


# ---------------------------------------------------------------------------------------
# SelectivBench-style grammar with rule-breaking gaps
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectivBenchGrammar(Probe):
    """Rule-based grammar with irregular gaps of rule-breaking distractors (SelectivBench).

    The grammar (fixed by ``grammar_seed``, shared by every split): state s emits symbol
    sym(s); states 0..S-1 emit their own symbol, states S..N-1 re-use a random symbol in
    1..S-1 (ambiguous); every state has ``branching`` successors emitting distinct symbols,
    so the state is a function of the previous state and the current symbol. Walks start
    in state 0 (its symbol 0 is unambiguous). Targets: at every position, the state of the
    last grammatical token.

    Args:
        n_symbols: grammar symbols S = input tokens (distractors come from them too).
        n_states: hidden grammar states N (>= S); N - S of them are ambiguous.
        branching: successors per state (< S, so some symbols break the rules).
        seq_len: tokens per sequence (grammatical tokens plus gaps).
        gap_prob: probability that a gap follows a grammatical token.
        gap_min: shortest gap (distractor tokens).
        gap_max: longest gap; lengths are uniform in [gap_min, gap_max].
        grammar_seed: seed of the grammar itself (data seeds only vary the walks).
    """

    n_symbols: int = 12
    n_states: int = 20
    branching: int = 3
    seq_len: int = 64
    gap_prob: float = 0.3
    gap_min: int = 1
    gap_max: int = 6
    grammar_seed: int = 0
    name: ClassVar[str] = "selectivbench"

    def __post_init__(self) -> None:
        _need(self.n_symbols >= 3, "n_symbols", f"must be >= 3, got {self.n_symbols}")
        _need(self.n_states >= self.n_symbols, "n_states", f"must be >= n_symbols ({self.n_symbols}), got {self.n_states}")
        _need(1 <= self.branching < self.n_symbols - 1, "branching",
              f"must be in 1..n_symbols-2 ({self.n_symbols - 2}) so that rule-breaking distractors exist, "
              f"got {self.branching}")
        _need(0.0 <= self.gap_prob <= 1.0, "gap_prob", f"must be in [0, 1], got {self.gap_prob}")
        _need(0 <= self.gap_min <= self.gap_max, "gap_max", f"need 0 <= gap_min <= gap_max, got {self.gap_min}, {self.gap_max}")
        _need(self.seq_len >= 2, "seq_len", f"must be >= 2, got {self.seq_len}")
        object.__setattr__(self, "_grammar", self._build())

    @property
    def vocab_size(self) -> int:
        return self.n_symbols

    @property
    def n_classes(self) -> int:
        return self.n_states

    @property
    def length(self) -> int:
        return self.seq_len

    @property
    def symbols(self) -> np.ndarray:
        """sym(s) for every state s, (N,)."""
        return self._grammar[0]

    @property
    def successors(self) -> np.ndarray:
        """Successor states of every state, (N, branching)."""
        return self._grammar[1]

    def allowed(self, state: int) -> set[int]:
        """Symbols that may follow ``state`` under the rules."""
        return {int(self.symbols[t]) for t in self.successors[state]}

    def _build(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.grammar_seed)
        s, n = self.n_symbols, self.n_states
        symbols = np.concatenate([np.arange(s), rng.integers(1, s, size=n - s)])
        by_symbol = {int(sym): np.flatnonzero(symbols == sym) for sym in np.unique(symbols)}
        successors = np.empty((n, self.branching), dtype=np.int64)
        for state in range(n):
            # distinct symbols per successor set, symbol 0 (the start) never re-entered
            chosen = rng.choice(np.arange(1, s), size=self.branching, replace=False)
            successors[state] = [rng.choice(by_symbol[int(sym)]) for sym in chosen]
        return symbols, successors

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        symbols, successors, length = self.symbols, self.successors, self.seq_len
        # rule-breaking symbols of each state, padded: (N, S) with a count per state
        breaking = [np.setdiff1d(np.arange(self.n_symbols), symbols[successors[st]]) for st in range(self.n_states)]
        counts = np.array([len(b) for b in breaking])
        table = np.zeros((self.n_states, self.n_symbols), dtype=np.int64)
        for st, b in enumerate(breaking):
            table[st, :len(b)] = b
        inputs = np.zeros((n, length + self.gap_max + 1), dtype=np.int64)  # room to overrun, cut below
        targets = np.zeros_like(inputs)
        rows = np.arange(n)
        state = np.zeros(n, dtype=np.int64)
        t = np.zeros(n, dtype=np.int64)
        offsets = np.arange(self.gap_max)
        while (t < length).any():
            live = rows[t < length]
            st, at = state[live], t[live]
            inputs[live, at], targets[live, at] = symbols[st], st
            at = at + 1
            if self.gap_max > 0:
                gap = np.where(rng.random(len(live)) < self.gap_prob,
                               rng.integers(self.gap_min, self.gap_max + 1, size=len(live)), 0)
                fill = offsets[None, :] < gap[:, None]  # (live, gap_max)
                pick = (rng.random((len(live), self.gap_max)) * counts[st][:, None]).astype(np.int64)
                r, c = np.nonzero(fill)
                inputs[live[r], at[r] + c] = table[st[r], pick[r, c]]
                targets[live[r], at[r] + c] = st[r]
                at = at + gap
            t[live] = at
            state[live] = successors[st, rng.integers(self.branching, size=len(live))]
        return inputs[:, :length], targets[:, :length]


# ---------------------------------------------------------------------------------------
# passkey retrieval (Stuffed Mamba's state-capacity probe)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PasskeyRetrieval(Probe):
    """Passkey retrieval (Stuffed Mamba): recall a digit string hidden in filler.

    Tokens: 0 marker ("the pass key is"), 1 cue, 2..11 the ten digits, 12..V-1 filler.
    Layout: filler with ``[marker, d_1..d_k]`` inserted at a uniform random depth, then
    ``k`` cues whose answers are d_1..d_k.

    Args:
        vocab_size: tokens; 12 are reserved, the rest is filler (>= 13).
        seq_len: total length (the context length swept for state capacity).
        passkey_len: digits in the passkey (Stuffed Mamba: 5).
    """

    vocab_size: int = 32
    seq_len: int = 64
    passkey_len: int = 5
    name: ClassVar[str] = "passkey"
    marker_token: ClassVar[int] = 0
    cue_token: ClassVar[int] = 1
    first_digit: ClassVar[int] = 2

    def __post_init__(self) -> None:
        _need(self.vocab_size >= 13, "vocab_size", f"needs 12 reserved tokens plus filler (>= 13), got {self.vocab_size}")
        _need(self.passkey_len >= 1, "passkey_len", f"must be >= 1, got {self.passkey_len}")
        _need(self.seq_len >= 2 * self.passkey_len + 1, "seq_len",
              f"{self.seq_len} is too short for a marker, {self.passkey_len} digits and {self.passkey_len} cues "
              f"(needs >= {2 * self.passkey_len + 1})")

    @property
    def length(self) -> int:
        return self.seq_len

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k, context = self.passkey_len, self.seq_len - self.passkey_len
        inputs = rng.integers(self.first_digit + 10, self.vocab_size, size=(n, self.seq_len))
        digits = rng.integers(self.first_digit, self.first_digit + 10, size=(n, k))
        start = rng.integers(0, context - k, size=n)  # marker position; digits follow it
        rows = np.arange(n)[:, None]
        inputs[np.arange(n), start] = self.marker_token
        inputs[rows, start[:, None] + 1 + np.arange(k)] = digits
        inputs[:, context:] = self.cue_token
        targets = np.full((n, self.seq_len), IGNORE, dtype=np.int64)
        targets[:, context:] = digits
        return inputs.astype(np.int64), targets


PROBES: dict[str, type[Probe]] = {cls.name: cls for cls in
                                  (MultiQueryAssociativeRecall, SelectiveCopying, SelectivBenchGrammar, PasskeyRetrieval)}


def make_probe(task: str, **knobs) -> Probe:
    """The probe named ``task`` with its knobs (``vocab_size`` for the token-vocabulary ones)."""
    if task not in PROBES:
        raise ConfigError(f"unknown diagnostic task {task!r}; known: {', '.join(PROBES)}")
    cls = PROBES[task]
    fields = set(cls.__dataclass_fields__)
    unknown = sorted(set(knobs) - fields)
    if unknown:
        raise ConfigError(f"task {task!r} has no knob(s) {', '.join(unknown)}; its knobs: {', '.join(sorted(fields))}")
    return cls(**knobs)


def split_rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators for train, val and test (SeedSequence spawning)."""
    children = np.random.SeedSequence(seed).spawn(len(SPLITS))
    return {split: np.random.default_rng(child) for split, child in zip(SPLITS, children)}


def generate_splits(probe: Probe, sizes: dict[str, int], seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train/val/test from independent streams of one seed. Test and validation sequences
    that also occur in train are redrawn, so the splits are disjoint."""
    rngs = split_rngs(seed)
    out = {"train": probe.sample(sizes["train"], rngs["train"])}
    seen = {row.tobytes() for row in out["train"][0]}
    for split in ("val", "test"):
        inputs, targets = probe.sample(sizes[split], rngs[split])
        for _ in range(100):
            clash = np.array([row.tobytes() in seen for row in inputs], dtype=bool)
            if not clash.any():
                break
            new_inputs, new_targets = probe.sample(int(clash.sum()), rngs[split])
            inputs[clash], targets[clash] = new_inputs, new_targets
        else:
            raise ConfigError(f"{probe.name}: cannot draw {sizes[split]} {split} sequences that differ from the "
                              "training ones; the knobs leave too few distinct sequences (raise seq_len or vocab_size)")
        seen |= {row.tobytes() for row in inputs}
        out[split] = (inputs, targets)
    return out


@register_synth("diagnostics")
def synth_diagnostics(
    out: str,
    task: str = "mqar",
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 500,
    seed: int = 0,
    knobs: dict | None = None,
) -> Path:
    """Memory/selectivity probes (mqar, selective_copy, selectivbench, passkey) as .npz splits.

    Writes ``{train,val,test}.npz`` (``inputs``, ``targets`` int64 (N, L); -100 = not
    scored) and ``probe.json`` (task, knobs, vocab_size, n_classes, seq_len, seed).
    ``knobs`` are the probe's own, e.g. ``--knobs '{"n_pairs": 16}'``.
    """
    probe = make_probe(task, **dict(knobs or {}))
    splits = generate_splits(probe, {"train": n_train, "val": n_val, "test": n_test}, seed)
    with atomic_dir(out) as tmp:
        for split, (inputs, targets) in splits.items():
            np.savez_compressed(tmp / f"{split}.npz", inputs=inputs, targets=targets)
        meta = {"task": task, "knobs": probe.knobs(), "seed": seed,
                "vocab_size": probe.vocab_size, "n_classes": probe.n_classes, "seq_len": probe.length}
        (tmp / "probe.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)
