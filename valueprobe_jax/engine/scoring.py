"""Option scoring: label-token logits (token method) and continuation log-likelihoods (seq method).

Requests are plain records (lm-eval-harness style): a generation-ready prompt, the continuation
text of every displayed option, and the displayed labels. ``score`` returns, per request, the raw
numbers both methods need (``representations.py`` turns them into distributions).

Four interchangeable strategies compute the same numbers (within float32 rounding):

- ``naive``: the paper's procedure, the reference: one full forward (LM head at every position)
  per option over prompt + option, plus one over the prompt alone for the label logits.
- ``padded``: every (prompt + option) its own row of a padded batch; LM head only where needed.
- ``packed`` (default): token sequences packed as a *prefix tree* into rows. A row holds a
  forest in depth-first order: a prompt once, then each option's tokens below it; prompts that
  share leading tokens (same system text, default vs prefixed style of one question) share those
  nodes too. Every token attends to its ancestors only and its position is its depth, so each
  option sees exactly the context of a full forward over prompt + option. The LM head runs only
  at nodes whose next-token distribution is needed.
- ``prefix_cache``: prompts are grouped by a long common token prefix (system instruction,
  one-shot example, shared template text); each group's prefix is prefilled once into a KV cache,
  kept on the ``Scorer`` for later calls, and broadcast into the cache of every row that continues
  it; the rest of each prompt and its options are packed on top as in ``packed``.

Tree mask in one vector: nodes are stored in depth-first (pre)order, so node s is an ancestor of
(or equal to) node t exactly when ``s <= t < end[s]`` with ``end[s] = s + size of s's subtree``.
Rows therefore ship ``end[B, T]`` instead of a ``[B, T, T]`` mask, and the mask is built inside
the jitted function. Padding slots have ``end = s + 1`` (they see only themselves; nobody sees
them).

Tokenization (per request): prompt ids use the tokenizer's default special tokens unless the text
already starts with the BOS string (chat templates that write BOS themselves); continuations are
cut from ``tokenize(prompt + continuation)`` when the prompt ids are a prefix of it, otherwise
(the tokenizer merged across the boundary) the continuation is tokenized on its own, without
special tokens, and the request is flagged ``boundary_split``. Label tokens: the bare label ("A")
and the space-prefixed label (" A"); a label that is more than one token uses its first token and
is flagged in ``label_multi_token``.

Packing plan: requests are sorted by prompt tokens; neighbours sharing at least half their prompt
(e.g. the default and prefixed styles of one question) form a unit; units go into rows by
best-fit decreasing, each unit's size measured against the row's existing tree. All rows of a
plan have one length, the candidate with the lowest modelled cost (dense FLOPs plus attention
FLOPs priced at ``ATTENTION_WEIGHT``): short rows repeat shared prefixes and waste their tails,
long rows pay for the dense T x T masked attention.

Shapes are bucketed (row length, batch size, number of LM-head positions) so jit compiles once per
bucket; every jitted core is a pure function ``(params, arrays) -> arrays`` built by a factory that
takes optional ``in_shardings`` / ``out_shardings``, so the same code runs on a device mesh
(``Scorer(mesh=...)`` uses ``sharding.py``'s rules).

Float32 note: strategies run different shapes, so XLA sums in different orders; on SmolLM2 two
runs of the *same* forward at two padded lengths already differ by ~3e-5 on logits of size ~30
(1e-6 relative) and ~1e-5 per token on log-likelihoods; on small random models all strategies
agree within 1e-5 absolute.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from valueprobe_jax.errors import InputError
from valueprobe_jax.models.config import ModelConfig
from valueprobe_jax.models.decoder import nest_params
from valueprobe_jax.models.layers import KVCache, forward
from valueprobe_jax.parallel.sharding import jit_with_shardings
from valueprobe_jax.vocabulary import RATINGS

STRATEGIES = ("naive", "padded", "packed", "prefix_cache")

# trace counter per core kind: one trace per new input signature = one XLA compile
TRACE_COUNTS: dict[str, int] = {}


# ============================================================================ records

@dataclasses.dataclass(frozen=True)
class ScoreRequest:
    """One prompt to score. ``prompt`` is generation-ready text ending where the answer begins;
    ``continuations[i]`` is the exact text scored for displayed option i (e.g. "A. text" plus the
    chat template's end of turn); ``labels[i]`` its displayed label ("A", "a", "0", ...)."""

    key: str
    prompt: str
    continuations: Sequence[str]
    labels: Sequence[str]


@dataclasses.dataclass
class ScoreResult:
    """Raw numbers of one request, in display order (float64)."""

    key: str
    token_logits: np.ndarray  # [k] logit of the bare label token at the answer position
    token_logits_space: np.ndarray  # [k] logit of the " A" token
    label_token_ids: np.ndarray  # [k, 2] int: (bare, space) token id used
    label_multi_token: np.ndarray  # [k, 2] bool: that label form is several tokens (first used)
    option_logprob: np.ndarray  # [n_cont] summed log-likelihood of each continuation
    option_ntokens: np.ndarray  # [n_cont] int
    n_prompt_tokens: int
    boundary_split: bool  # some continuation had to be tokenized apart from its prompt


@dataclasses.dataclass
class ScoreStats:
    """What a scoring run cost (accumulated over calls of one ``Scorer``)."""

    calls: int = 0  # jitted calls (prefills included)
    rows: int = 0
    tokens_processed: int = 0  # token slots run through the model, padding included
    tokens_real: int = 0  # non-padding token slots
    head_positions: int = 0  # positions the LM head ran on (padding included)
    flops: float = 0.0  # model FLOPs of the executed shapes (``flops_estimate``)
    compiles: int = 0  # new jit traces (= XLA compiles) caused by these calls
    shapes: dict = dataclasses.field(default_factory=dict)  # (kind, B, T, S, M, N) -> calls

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shapes"] = {" ".join(map(str, k)): v for k, v in sorted(self.shapes.items())}
        return d

    def _call(self, key: tuple) -> None:
        self.shapes[key] = self.shapes.get(key, 0) + 1


# ============================================================================ tokenization

@dataclasses.dataclass(frozen=True)
class Encoded:
    """A request as token ids."""

    key: str
    prompt: tuple[int, ...]
    options: tuple[tuple[int, ...], ...]
    label_ids: np.ndarray  # [k, 2] int
    label_multi: np.ndarray  # [k, 2] bool
    boundary_split: bool


def _ids(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def prompt_add_special_tokens(tokenizer: Any, prompt: str) -> bool:
    """Tokenizer defaults (e.g. Llama's BOS), except when the text already begins with the BOS
    string because the chat template wrote it (then adding it again would double it)."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and prompt.startswith(bos))


def label_token(tokenizer: Any, text: str) -> tuple[int, bool]:
    """(first token id of ``text``, whether ``text`` is more than one token)."""
    ids = _ids(tokenizer, text, False)
    if not ids:
        raise InputError(f"label {text!r}: tokenizes to nothing")
    return ids[0], len(ids) > 1


def encode_request(tokenizer: Any, req: ScoreRequest, *, add_special_tokens: bool | None = None,
                   label_cache: dict | None = None) -> Encoded:
    """Tokenize one request following the boundary rule (module docstring)."""
    if not isinstance(req.prompt, str) or not req.prompt:
        raise InputError(f"request {req.key!r}: empty prompt")
    add = prompt_add_special_tokens(tokenizer, req.prompt) if add_special_tokens is None \
        else add_special_tokens
    prompt = _ids(tokenizer, req.prompt, add)
    if not prompt:
        raise InputError(f"request {req.key!r}: prompt tokenizes to nothing")
    n = len(prompt)
    options, split = [], False
    for i, cont in enumerate(req.continuations):
        if not cont:
            raise InputError(f"request {req.key!r}: continuation {i} is empty")
        full = _ids(tokenizer, req.prompt + cont, add)
        if len(full) > n and full[:n] == prompt:
            options.append(tuple(full[n:]))
        else:
            options.append(tuple(_ids(tokenizer, cont, False)))
            split = True
    cache = {} if label_cache is None else label_cache
    k = len(req.labels)
    label_ids = np.zeros((k, 2), np.int64)
    multi = np.zeros((k, 2), bool)
    for i, lab in enumerate(req.labels):
        for j, text in enumerate((lab, " " + lab)):
            if text not in cache:
                cache[text] = label_token(tokenizer, text)
            label_ids[i, j], multi[i, j] = cache[text]
    return Encoded(req.key, tuple(prompt), tuple(options), label_ids, multi, split)


def min_token_count(encoded: Sequence[Encoded]) -> int:
    """Every distinct token once: the node count of the prefix tree of all prompt and
    prompt + option token sequences (a token in the same context is counted once)."""
    return _trie(encoded)[1]


# ============================================================================ FLOPs model

def flops_estimate(cfg: ModelConfig, batch: int, length: int, keys: int, head: int) -> float:
    """FLOPs of one forward as executed: ``batch`` rows of ``length`` new tokens, attention over
    ``keys`` key slots (masked slots included: the kernel is dense), LM head at ``head``
    positions per row. Matmuls count 2 per multiply-add; norms and softmaxes are left out."""
    e, h, kv, d, m, n = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                         cfg.intermediate_size, cfg.num_layers)
    per_layer = e * (h + 2 * kv) * d + h * d * e + (3 if cfg.mlp == "gated" else 2) * e * m
    dense = 2.0 * batch * length * n * per_layer
    attention = 2.0 * 2.0 * batch * length * keys * h * d * n  # QK^T and PV
    lm_head = 2.0 * batch * head * e * cfg.vocab_size
    return dense + attention + lm_head


# ============================================================================ packing

def bucket_length(n: int, minimum: int = 32, per_octave: int = 4) -> int:
    """Row-length bucket: multiples of 1/``per_octave`` of the power of two below n (a power of
    two; 4 gives at most 25% padding, 1 gives powers of two: fewer compiles), at least
    ``minimum``."""
    if n <= minimum:
        return minimum
    step = max(1, 1 << (max(n - 1, 1).bit_length() - 1 - (per_octave.bit_length() - 1)))
    return -(-n // step) * step


def _pow2(n: int, minimum: int = 1) -> int:
    return max(minimum, 1 << max(n - 1, 0).bit_length())


@dataclasses.dataclass
class _Item:
    """One request's part of a row: token ids below the row's prefix, and where results go."""

    req: int
    prompt: tuple[int, ...]  # tokens after the shared prefix (non-empty)
    options: tuple[tuple[int, ...], ...]
    option_index: tuple[int, ...]  # which continuation each entry of ``options`` is
    label_ids: tuple[int, ...]  # flat (bare, space) ids read at the prompt's last node; may be ()


class _Row:
    """A prefix forest of token ids, laid out in depth-first order."""

    def __init__(self) -> None:
        self.tok: list[int] = []
        self.depth: list[int] = []
        self.kids: list[dict[int, int]] = []
        self.roots: dict[int, int] = {}
        self.items: list[_Item] = []
        # per item: (prompt-end node, [per option: node ids of its tokens])
        self.paths: list[tuple[int, list[list[int]]]] = []

    def __len__(self) -> int:
        return len(self.tok)

    def _child(self, parent: int, t: int, dry: bool) -> int | None:
        table = self.roots if parent < 0 else self.kids[parent]
        node = table.get(t)
        if node is None and not dry:
            node = len(self.tok)
            table[t] = node
            self.tok.append(t)
            self.depth.append(0 if parent < 0 else self.depth[parent] + 1)
            self.kids.append({})
        return node

    def cost(self, items: _Item | Sequence[_Item]) -> int:
        """New nodes that adding ``items`` would create (a dry run; the items may share nodes
        among themselves too)."""
        virtual: dict[tuple[int, int], int] = {}

        def child(parent: int, t: int) -> int:
            if parent >= -1:
                real = self._child(parent, t, dry=True)
                if real is not None:
                    return real
            return virtual.setdefault((parent, t), -2 - len(virtual))

        for item in [items] if isinstance(items, _Item) else items:
            node = -1
            for t in item.prompt:
                node = child(node, t)
            end = node
            for o in item.options:
                node = end
                for t in o:
                    node = child(node, t)
        return len(virtual)

    def shared(self, trie: dict) -> int:
        """Nodes of a prefix tree (nested dicts token -> subtree) that this row already holds."""
        count, stack = 0, [(-1, trie)]
        while stack:
            node, sub = stack.pop()
            table = self.roots if node < 0 else self.kids[node]
            for t, child in sub.items():
                c = table.get(t)
                if c is not None:
                    count += 1
                    stack.append((c, child))
        return count

    def add(self, item: _Item) -> None:
        node = -1
        for t in item.prompt:
            node = self._child(node, t, dry=False)
        end = node
        opts = []
        for o in item.options:
            node, nodes = end, []
            for t in o:
                node = self._child(node, t, dry=False)
                nodes.append(node)
            opts.append(nodes)
        self.items.append(item)
        self.paths.append((end, opts))

    def layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(slot of every node, tokens, depths, subtree ends) in depth-first order."""
        n = len(self.tok)
        slot = np.zeros(n, np.int64)
        size = np.ones(n, np.int64)
        order: list[int] = []
        stack = list(reversed(list(self.roots.values())))
        while stack:
            v = stack.pop()
            slot[v] = len(order)
            order.append(v)
            stack.extend(reversed(list(self.kids[v].values())))
        for v in reversed(order):  # children come after parents in preorder
            for c in self.kids[v].values():
                size[v] += size[c]
        order_a = np.asarray(order, np.int64)
        toks = np.asarray(self.tok, np.int64)[order_a]
        depth = np.asarray(self.depth, np.int64)[order_a]
        ends = slot[order_a] + size[order_a]
        return slot, toks, depth, ends


@dataclasses.dataclass
class _RowArrays:
    """One laid-out row: nodes in depth-first order and the (logit position, token, target)
    reads. ``kind`` 1 = label logit (idx = 2 * label + form), 2 = option token (idx = option)."""

    tokens: np.ndarray
    positions: np.ndarray
    ends: np.ndarray
    logits_at: np.ndarray  # slots whose next-token distribution is read
    pair_at: np.ndarray  # index into logits_at
    pair_tok: np.ndarray
    pair_kind: np.ndarray
    pair_req: np.ndarray
    pair_idx: np.ndarray


def _finalize(row: _Row, offset: int) -> _RowArrays:
    slot, toks, depth, ends = row.layout()
    at: dict[int, int] = {}
    reads: list[tuple[int, int, int, int, int]] = []
    for item, (end, opts) in zip(row.items, row.paths):
        e = int(slot[end])
        for j, lid in enumerate(item.label_ids):
            reads.append((at.setdefault(e, len(at)), lid, 1, item.req, j))
        for oi, nodes in zip(item.option_index, opts):
            parent = e
            for node in nodes:
                reads.append((at.setdefault(parent, len(at)), row.tok[node], 2, item.req, oi))
                parent = int(slot[node])
    r = np.asarray(reads, np.int64).reshape(-1, 5)
    return _RowArrays(toks, depth + offset, ends, np.fromiter(at.keys(), np.int64, len(at)),
                      r[:, 0], r[:, 1], r[:, 2], r[:, 3], r[:, 4])


@dataclasses.dataclass
class _Call:
    """One jitted call: stacked rows padded to (B, T) with M head positions and N reads."""

    rows: list[_RowArrays]
    length: int  # T
    full_head: bool = False
    prefix: tuple[int, ...] | None = None  # prefix_cache: the cached prefix these rows continue

    def arrays(self) -> dict[str, np.ndarray]:
        b, t = len(self.rows), self.length
        m = max(len(r.logits_at) for r in self.rows)
        n = max(len(r.pair_at) for r in self.rows)
        # LM-head positions: little padding (each costs a vocab-sized matmul row); reads are
        # cheap gathers: powers of two with a generous minimum (fewer distinct shapes)
        m, n = bucket_length(m, minimum=16, per_octave=4), _pow2(n, 64)
        out = dict(tokens=np.zeros((b, t), np.int32), positions=np.zeros((b, t), np.int32),
                   ends=np.tile(np.arange(1, t + 1, dtype=np.int32), (b, 1)),
                   logits_at=np.zeros((b, m), np.int32), pair_at=np.zeros((b, n), np.int32),
                   pair_tok=np.zeros((b, n), np.int32))
        for i, r in enumerate(self.rows):
            k = len(r.tokens)
            out["tokens"][i, :k], out["positions"][i, :k], out["ends"][i, :k] = \
                r.tokens, r.positions, r.ends
            out["logits_at"][i, :len(r.logits_at)] = r.logits_at
            out["pair_at"][i, :len(r.pair_at)] = r.pair_at
            out["pair_tok"][i, :len(r.pair_tok)] = r.pair_tok
        return out


def _batch_sizes(n_rows: int, max_batch: int) -> list[int]:
    """Split ``n_rows`` into power-of-two batch sizes <= max_batch (no empty padding rows; at most
    log2(max_batch) + 1 distinct shapes)."""
    cap = 1 << (max(1, max_batch).bit_length() - 1)
    sizes = []
    while n_rows > 0:
        b = min(cap, 1 << (n_rows.bit_length() - 1))
        sizes.append(b)
        n_rows -= b
    return sizes


def _calls_of(rows: list[_RowArrays], length: int, tokens_per_call: int,
              max_batch: int | None = None, **kw: Any) -> list[_Call]:
    calls, i = [], 0
    cap = tokens_per_call // length
    for b in _batch_sizes(len(rows), min(cap, max_batch) if max_batch else cap):
        calls.append(_Call(rows[i:i + b], length, **kw))
        i += b
    return calls


def _units(items: list[_Item]) -> list[list[_Item]]:
    """Neighbours (in sorted order) that share at least half of their prompts stay together:
    e.g. the default and prefixed style of one question, whose prompts differ only at the end."""
    units = [[items[0]]]
    for a, b in zip(items, items[1:]):
        if 2 * _common_prefix(a.prompt, b.prompt) >= min(len(a.prompt), len(b.prompt)):
            units[-1].append(b)
        else:
            units.append([b])
    return units


def _trie(items: Sequence[_Item] | Sequence[Encoded]) -> tuple[dict, int, int]:
    """(prefix tree of the items' sequences as nested dicts, its node count, its prompt nodes);
    anything with ``prompt`` and ``options`` token tuples will do."""
    root: dict = {}
    nodes = prompt_nodes = 0
    for it in items:
        node = root
        for t in it.prompt:
            if t not in node:
                node[t] = {}
                nodes += 1
                prompt_nodes += 1
            node = node[t]
        for o in it.options:
            sub = node
            for t in o:
                if t not in sub:
                    sub[t] = {}
                    nodes += 1
                sub = sub[t]
    return root, nodes, prompt_nodes


@dataclasses.dataclass
class _Unit:
    items: list[_Item]
    trie: dict
    alone: int  # nodes of its own prefix tree
    lower: int  # fewest new nodes it can add to any row (a row can share at most its prompts)


def _unit(items: list[_Item]) -> _Unit:
    trie, alone, prompts = _trie(items)
    return _Unit(items, trie, alone, alone - prompts)


def _best_fit(units: list[tuple[_Unit, list[_Unit]]], capacity: int) -> list[_Row]:
    """Best-fit decreasing bin packing of units into rows of ``capacity`` nodes, sizes measured
    against each row's prefix tree (a unit costs less in a row that already holds its system
    text). A unit larger than a row is packed item by item (its ``parts``)."""
    flat = sorted((p for u, parts in units for p in ([u] if u.alone <= capacity else parts)),
                  key=lambda u: -u.alone)
    smallest = [0] * len(flat)  # smallest lower bound among the units still to place
    low = capacity + 1
    for i in range(len(flat) - 1, -1, -1):
        low = min(low, flat[i].lower)
        smallest[i] = low
    rows: list[_Row] = []
    open_rows: list[_Row] = []
    for i, u in enumerate(flat):
        open_rows = [r for r in open_rows if capacity - len(r) >= smallest[i]]
        best, best_left = None, None
        for r in open_rows:
            if capacity - len(r) < u.lower:
                continue
            left = capacity - len(r) - (u.alone - r.shared(u.trie))
            if left >= 0 and (best_left is None or left < best_left):
                best, best_left = r, left
        if best is None:
            best = _Row()
            rows.append(best)
            open_rows.append(best)
        for it in u.items:
            best.add(it)
    return rows


# The planner's price of an attention FLOP relative to a matmul FLOP: the dense masked
# attention (scores, mask, softmax over T x S per head) is memory-bound. Measured on a 2-core
# CPU with SmolLM2: time per token grows with the row length about 2.5x faster than its FLOPs.
ATTENTION_WEIGHT = 1.5


def _row_cost(cfg: ModelConfig, length: int, keys: int) -> float:
    dense = flops_estimate(cfg, 1, length, 0, 0)
    return dense + ATTENTION_WEIGHT * (flops_estimate(cfg, 1, length, keys, 0) - dense)


def _pack(cfg: ModelConfig, items: list[_Item], bucket: Callable[[int], int], *,
          extra_keys: int = 0, max_row: int = 2048) -> tuple[list[_Row], int]:
    """Pack items (in sorted, prefix-sharing order) into rows of one bucketed length, choosing the
    length with the lowest modelled cost (short rows waste their tails and repeat shared
    prefixes, long rows pay for the dense T x T attention). ``bucket(n)`` is the smallest allowed
    length >= n. Returns (rows, length)."""
    longest = max(_Row().cost(it) for it in items)
    first = bucket(longest)
    candidates, c = [first], first
    while c < max_row:
        try:
            c = bucket(c + 1)
        except InputError:  # no longer bucket allowed
            break
        candidates.append(c)
    nodes = _Row().cost(items)  # the whole prefix tree: no packing holds fewer nodes
    units = []
    for u in _units(items):
        unit = _unit(u)
        units.append((unit, [_unit([it]) for it in u] if len(u) > 1 else [unit]))
    best = None
    for c in candidates:
        if best is not None and -(-nodes // c) * _row_cost(cfg, c, c + extra_keys) >= best[0]:
            continue  # cannot beat the best even with perfectly full rows
        rows = _best_fit(units, c)
        cost = len(rows) * _row_cost(cfg, c, c + extra_keys)
        if best is None or cost < best[0]:
            best = (cost, rows, c)
        if len(rows) == 1:
            break
    return best[1], best[2]


# ============================================================================ jitted cores


def _count_trace(kind: str) -> None:
    TRACE_COUNTS[kind] = TRACE_COUNTS.get(kind, 0) + 1


def tree_mask(ends: jax.Array) -> jax.Array:
    """[B, T] subtree ends of depth-first-ordered nodes -> [B, T, T] mask: query t reads key s
    iff s is t or an ancestor of t (s <= t < end[s])."""
    s = jnp.arange(ends.shape[1])
    return (s[None, None, :] <= s[None, :, None]) & (s[None, :, None] < ends[:, None, :])


def read_pairs(logits: jax.Array, pair_at: jax.Array, pair_tok: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    """logits [B, M, V] -> (logit, log-probability) of token ``pair_tok`` at head position
    ``pair_at`` for every read [B, N]."""
    b, m, v = logits.shape
    lse = jax.nn.logsumexp(logits, axis=-1)
    flat = logits.reshape(b, m * v)
    logit = jnp.take_along_axis(flat, pair_at * v + pair_tok, axis=1)
    return logit, logit - jnp.take_along_axis(lse, pair_at, axis=1)


def make_tree_core(cfg: ModelConfig, *, full_head: bool = False, in_shardings: Any = None,
                   out_shardings: Any = None) -> Callable:
    """Jitted ``(params, tokens, positions, ends, logits_at, pair_at, pair_tok) -> (logit,
    logprob)`` over packed rows. ``full_head`` runs the LM head on every position first (the
    naive reference, as a plain full forward does)."""
    kind = "naive" if full_head else "tree"

    def core(params, tokens, positions, ends, logits_at, pair_at, pair_tok):
        _count_trace(kind)
        mask = tree_mask(ends)
        if full_head:
            logits, _ = forward(cfg, params, tokens, positions, mask)
            logits = jnp.take_along_axis(logits, logits_at[..., None], axis=1)
        else:
            logits, _ = forward(cfg, params, tokens, positions, mask, logits_at=logits_at)
        return read_pairs(logits, pair_at, pair_tok)

    return jit_with_shardings(core, in_shardings, out_shardings)


def make_prefill_core(cfg: ModelConfig, *, in_shardings: Any = None,
                      out_shardings: Any = None) -> Callable:
    """Jitted ``(params, tokens [1, P], length) -> KVCache`` of a shared prefix (slots at or past
    ``length`` are padding)."""

    def core(params, tokens, length):
        _count_trace("prefill")
        p = tokens.shape[1]
        valid = jnp.arange(p)[None, :] < length
        mask = jnp.tril(jnp.ones((p, p), bool))[None] & valid[:, None, :]
        positions = jnp.arange(p, dtype=jnp.int32)[None, :]
        cache = KVCache.zeros(cfg, 1, p)
        _, cache = forward(cfg, params, tokens, positions, mask, logits_at=jnp.zeros((1, 1), jnp.int32),
                           cache=cache, cache_index=0, return_hidden=True)
        return cache

    return jit_with_shardings(core, in_shardings, out_shardings)


def make_cached_core(cfg: ModelConfig, *, in_shardings: Any = None,
                     out_shardings: Any = None) -> Callable:
    """Jitted ``(params, prefix KVCache [1, P], prefix length, tokens, positions, ends, logits_at,
    pair_at, pair_tok) -> (logit, logprob)``: packed rows on top of a shared prefix whose
    keys/values are broadcast into every row's cache (slots 0..P-1; the row's own tokens follow)."""

    def core(params, prefix, length, tokens, positions, ends, logits_at, pair_at, pair_tok):
        _count_trace("cached")
        b, t = tokens.shape
        p = prefix.k.shape[2]

        def grow(x):  # [L, 1, P, ...] -> [L, B, P + T, ...]
            x = jnp.broadcast_to(x, (x.shape[0], b) + x.shape[2:])
            pad = jnp.zeros(x.shape[:2] + (t,) + x.shape[3:], x.dtype)
            return jnp.concatenate([x, pad], axis=2)

        pos = jnp.concatenate([jnp.broadcast_to(prefix.pos, (b, p)),
                               jnp.zeros((b, t), jnp.int32)], axis=1)
        cache = KVCache(grow(prefix.k), grow(prefix.v), pos)
        see_prefix = jnp.broadcast_to((jnp.arange(p) < length)[None, None, :], (b, t, p))
        mask = jnp.concatenate([see_prefix, tree_mask(ends)], axis=2)
        logits, _ = forward(cfg, params, tokens, positions, mask, logits_at=logits_at,
                            cache=cache, cache_index=p)
        return read_pairs(logits, pair_at, pair_tok)

    return jit_with_shardings(core, in_shardings, out_shardings)


@functools.lru_cache(maxsize=None)
def shared_core(cfg: ModelConfig, kind: str) -> Callable:
    """The unsharded jitted core of ``kind`` ("naive", "tree", "prefill", "cached"), one per
    config (jax caches its compiled shapes)."""
    if kind == "prefill":
        return make_prefill_core(cfg)
    if kind == "cached":
        return make_cached_core(cfg)
    return make_tree_core(cfg, full_head=kind == "naive")


def abstract_inputs(cfg: ModelConfig, key: tuple) -> tuple:
    """ShapeDtypeStructs of a core's array inputs (after params) for a ``ScoreStats.shapes``
    key ``(kind, B, T, S, M, N)``: for ahead-of-time lowering, e.g. XLA's cost analysis."""
    kind, b, t, s, m, n = key
    i32 = jnp.int32

    def arr(*shape):
        return jax.ShapeDtypeStruct(shape, i32)

    if kind == "prefill":
        return arr(1, t), arr()
    rows = (arr(b, t), arr(b, t), arr(b, t), arr(b, m), arr(b, n), arr(b, n))
    if kind == "cached":
        p = s - t
        kv = jax.ShapeDtypeStruct((cfg.num_layers, 1, p, cfg.num_kv_heads, cfg.head_dim),
                                  cfg.jnp_dtype)
        return (KVCache(kv, kv, arr(1, p)), arr()) + rows
    return rows


# ============================================================================ the scorer

def unpack_model(model: Any, tokenizer: Any = None) -> tuple[ModelConfig, dict[str, Any], Any]:
    """(cfg, params) / (cfg, params, tokenizer) / an object with .cfg, .params (attribute or
    method, as the NNX Decoder) and optionally .tokenizer -> (cfg, nested params, tokenizer)."""
    if isinstance(model, tuple):
        cfg, params = model[0], model[1]
        tok = model[2] if len(model) > 2 else None
    else:
        cfg, params = model.cfg, model.params
        params = params() if callable(params) else params
        tok = getattr(model, "tokenizer", None)
    tok = tokenizer if tokenizer is not None else tok
    if tok is None:
        raise InputError("model: no tokenizer given and the model carries none")
    flat = any("/" in k for k in params)
    return cfg, (nest_params(params) if flat else dict(params)), tok


class Scorer:
    """Scores requests with any strategy; owns the jitted functions, the prefilled prefixes (for
    ``prefix_cache``, reused across calls of a sweep) and the running ``stats``.

    ``tokens_per_call`` bounds B * T of one call; ``max_row`` the longest packed row tried;
    ``min_prefix`` the shortest shared prefix worth a cache; ``per_octave`` the row-length
    buckets per doubling (4: little padding; 1: powers of two, fewer compiles), or
    ``length_buckets`` an explicit list of allowed row lengths (e.g. one fixed shape for a pod);
    ``max_batch`` caps the rows per call;
    ``add_special_tokens`` overrides the
    BOS rule for prompts (None: tokenizer defaults unless the text starts with the BOS string).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, mesh: Any = None,
                 tokens_per_call: int = 4096, max_row: int = 2048, min_prefix: int = 32,
                 max_prefixes: int = 64, per_octave: int = 4,
                 length_buckets: Sequence[int] | None = None, max_batch: int | None = None,
                 add_special_tokens: bool | None = None):
        self.cfg, params, self.tokenizer = unpack_model(model, tokenizer)
        self.mesh = mesh
        if mesh is not None:
            from valueprobe_jax.parallel import sharding as sh  # noqa: PLC0415 (only with a mesh)

            self.params = sh.shard_params(params, mesh, self.cfg)
        else:
            self.params = jax.tree.map(jnp.asarray, params)
        self.tokens_per_call = int(tokens_per_call)
        self.max_row = int(max_row)
        self.min_prefix = int(min_prefix)
        self.max_prefixes = int(max_prefixes)
        if per_octave < 1 or per_octave & (per_octave - 1):
            raise InputError(f"per_octave: must be a power of two, got {per_octave}")
        self.per_octave = int(per_octave)
        self.length_buckets = sorted(int(b) for b in length_buckets) if length_buckets else None
        self.max_batch = max_batch
        self.add_special_tokens = add_special_tokens
        self.stats = ScoreStats()
        self._labels: dict[str, tuple[int, bool]] = {}
        self._prefixes: dict[tuple[int, ...], tuple[KVCache, int]] = {}  # insertion = LRU order
        self._fns: dict[tuple, Callable] = {}

    # -- public API

    def forget_prefixes(self) -> None:
        """Drop the prefilled prefixes kept from earlier calls. A caller that needs results to
        depend only on the current call (a resumable sweep: a chunk must give the same numbers
        whether or not earlier chunks ran in this process) calls this first."""
        self._prefixes.clear()

    def encode(self, requests: Sequence[ScoreRequest]) -> list[Encoded]:
        return [encode_request(self.tokenizer, r, add_special_tokens=self.add_special_tokens,
                               label_cache=self._labels) for r in requests]

    def score(self, requests: Sequence[ScoreRequest], strategy: str = "packed") -> list[ScoreResult]:
        return self.score_encoded(self.encode(requests), strategy)

    def score_encoded(self, encoded: Sequence[Encoded], strategy: str = "packed"
                      ) -> list[ScoreResult]:
        if strategy not in STRATEGIES:
            raise InputError(f"strategy {strategy!r}: unknown (choose from {', '.join(STRATEGIES)})")
        encoded = list(encoded)
        if not encoded:
            return []
        limit = self.cfg.max_position_embeddings
        for e in encoded:
            longest = len(e.prompt) + max(map(len, e.options), default=0)
            if longest > limit:
                raise InputError(f"request {e.key!r}: {longest} tokens exceed the model's "
                                 f"{limit} positions")
        before = sum(TRACE_COUNTS.values())
        calls = getattr(self, f"_plan_{strategy}")(encoded)
        outputs = self._run(calls)
        self.stats.compiles += sum(TRACE_COUNTS.values()) - before
        return self._collect(encoded, calls, outputs)

    def rate(self, prompts: Sequence[tuple[str, str]] | Mapping[str, str],
             strategy: str = "packed") -> list["RatingResult"]:
        return _rate(self, prompts, strategy)

    # -- plans: each returns the list of jitted calls

    def _plan_naive(self, enc: list[Encoded]) -> list[_Call]:
        calls = []
        for i, e in enumerate(enc):
            chains = [_Item(i, e.prompt, (), (), tuple(e.label_ids.ravel()))]
            chains += [_Item(i, e.prompt, (o,), (j,), ()) for j, o in enumerate(e.options)]
            for item in chains:
                row = _Row()
                row.add(item)
                calls.append(_Call([_finalize(row, 0)], self._bucket(len(row)), full_head=True))
        return calls

    def _plan_padded(self, enc: list[Encoded]) -> list[_Call]:
        by_len: dict[int, list[_RowArrays]] = {}
        for i, e in enumerate(enc):
            labels = tuple(e.label_ids.ravel())
            chains = [_Item(i, e.prompt, (o,), (j,), labels if j == 0 else ())
                      for j, o in enumerate(e.options)] or [_Item(i, e.prompt, (), (), labels)]
            for item in chains:
                row = _Row()
                row.add(item)
                by_len.setdefault(self._bucket(len(row)), []).append(_finalize(row, 0))
        calls = []
        for length in sorted(by_len):
            calls += _calls_of(by_len[length], length, self.tokens_per_call, self.max_batch)
        return calls

    @staticmethod
    def _items(enc: list[Encoded], order: Sequence[int], skip: int = 0) -> list[_Item]:
        return [_Item(i, enc[i].prompt[skip:], enc[i].options, tuple(range(len(enc[i].options))),
                      tuple(enc[i].label_ids.ravel())) for i in order]

    def _plan_packed(self, enc: list[Encoded]) -> list[_Call]:
        order = sorted(range(len(enc)), key=lambda i: enc[i].prompt)
        rows, length = _pack(self.cfg, self._items(enc, order), self._row_bucket,
                             max_row=self.max_row)
        return _calls_of([_finalize(r, 0) for r in rows], length, self.tokens_per_call,
                         self.max_batch)

    def _plan_prefix_cache(self, enc: list[Encoded]) -> list[_Call]:
        calls = []
        for prefix, idx in self._prefix_groups(enc):
            p = len(prefix)
            if p:
                self._ensure_prefix(prefix)
            items = [_Item(i, enc[i].prompt[p:], enc[i].options,
                           tuple(range(len(enc[i].options))), tuple(enc[i].label_ids.ravel()))
                     for i in idx]
            rows, length = _pack(self.cfg, items, self._row_bucket,
                                 extra_keys=self._bucket(p) if p else 0, max_row=self.max_row)
            calls += _calls_of([_finalize(r, p) for r in rows], length, self.tokens_per_call,
                               self.max_batch, prefix=prefix if p else None)
        return calls

    def _prefix_groups(self, enc: list[Encoded]) -> list[tuple[tuple[int, ...], list[int]]]:
        """Runs of prompts (in sorted order) whose neighbours share >= min_prefix leading tokens;
        a run's prefix is its common prefix (at most each prompt's length - 1, so every prompt
        keeps its own last token). A lone prompt reuses the longest prefix already cached that
        fits it, if any."""
        order = sorted(range(len(enc)), key=lambda i: enc[i].prompt)
        runs: list[list[int]] = []
        lcps: list[int] = []
        for i in order:
            if runs:
                a, b = enc[runs[-1][-1]].prompt, enc[i].prompt
                lcp = _common_prefix(a, b)
                if lcp >= self.min_prefix:
                    runs[-1].append(i)
                    lcps[-1] = min(lcps[-1], lcp)
                    continue
            runs.append([i])
            lcps.append(1 << 30)
        groups = []
        for run, lcp in zip(runs, lcps):
            first = enc[run[0]].prompt
            cap = min(len(enc[i].prompt) for i in run) - 1
            if len(run) > 1:
                p = min(lcp, cap)
            else:
                fits = [len(q) for q in self._prefixes if len(q) <= cap and first[:len(q)] == q]
                p = max(fits, default=0)
            groups.append((first[:p] if p >= self.min_prefix else (), run))
        return groups

    def _ensure_prefix(self, prefix: tuple[int, ...]) -> None:
        if prefix in self._prefixes:
            self._prefixes[prefix] = self._prefixes.pop(prefix)  # most recently used
            return
        p = self._bucket(len(prefix))
        tokens = np.zeros((1, p), np.int32)
        tokens[0, :len(prefix)] = prefix
        fn = self._core("prefill", p)
        cache = fn(self.params, tokens, np.int32(len(prefix)))
        self.stats.calls += 1
        self.stats.tokens_processed += p
        self.stats.tokens_real += len(prefix)
        self.stats.flops += flops_estimate(self.cfg, 1, p, p, 0)
        self.stats._call(("prefill", 1, p, p, 0, 0))
        self._prefixes[prefix] = (cache, len(prefix))
        while len(self._prefixes) > self.max_prefixes:
            self._prefixes.pop(next(iter(self._prefixes)))

    # -- execution

    def _row_bucket(self, n: int) -> int:
        """Packed rows: twice as many lengths per octave as single sequences (a packed row is
        long and one length serves the whole plan, so finer steps cost few extra compiles)."""
        if self.length_buckets is None:
            return bucket_length(n, minimum=64, per_octave=2 * self.per_octave)
        return self._bucket(n)

    def _bucket(self, n: int) -> int:
        if self.length_buckets is None:
            return bucket_length(n, per_octave=self.per_octave)
        for b in self.length_buckets:
            if b >= n:
                return b
        raise InputError(f"length_buckets: {n} tokens do not fit the largest bucket "
                         f"{self.length_buckets[-1]}")

    def _core(self, kind: str, *shape: int) -> Callable:
        if self.mesh is None:
            return shared_core(self.cfg, kind)
        key = (kind,) + shape
        if key not in self._fns:
            self._fns[key] = self._sharded_core(kind, *shape)
        return self._fns[key]

    def _sharded_core(self, kind: str, *shape: int) -> Callable:
        """The core pinned to ``self.mesh``: parameters by their logical axes, rows over the batch
        axes (data, fsdp), a prefix cache replicated over rows with kv heads over tensor."""
        from valueprobe_jax.parallel import sharding as sh  # noqa: PLC0415

        mesh, cfg = self.mesh, self.cfg
        ps, rep = sh.param_shardings(cfg, mesh), sh.replicated(mesh)
        if kind == "prefill":
            (p,) = shape
            return make_prefill_core(cfg, in_shardings=(ps, rep, rep),
                                     out_shardings=sh.cache_shardings(cfg, mesh, 1, p))
        b, t, m, n = shape[:4]
        bt, bm, bn = (sh.batch_sharding(mesh, s) for s in ((b, t), (b, m), (b, n)))
        rows = (bt, bt, bt, bm, bn, bn)
        if kind == "cached":
            cache = sh.cache_shardings(cfg, mesh, 1, shape[4])
            return make_cached_core(cfg, in_shardings=(ps, cache, rep) + rows,
                                    out_shardings=(bn, bn))
        return make_tree_core(cfg, full_head=kind == "naive", in_shardings=(ps,) + rows,
                              out_shardings=(bn, bn))

    def _run(self, calls: list[_Call]) -> list[tuple[np.ndarray, np.ndarray]]:
        pending = []
        for c in calls:
            a = c.arrays()
            b, t = a["tokens"].shape
            m, n = a["logits_at"].shape[1], a["pair_at"].shape[1]
            rows = (a["tokens"], a["positions"], a["ends"], a["logits_at"], a["pair_at"],
                    a["pair_tok"])
            if c.prefix is not None:
                cache, length = self._prefixes[c.prefix]
                p = cache.k.shape[2]
                fn = self._core("cached", b, t, m, n, p)
                out = fn(self.params, cache, np.int32(length), *rows)
                kind, keys = "cached", p + t
            else:
                kind = "naive" if c.full_head else "tree"
                fn = self._core(kind, b, t, m, n)
                out = fn(self.params, *rows)
                keys = t
            head = t if c.full_head else m
            st = self.stats
            st.calls += 1
            st.rows += b
            st.tokens_processed += b * t
            st.tokens_real += sum(len(r.tokens) for r in c.rows)
            st.head_positions += b * head
            st.flops += flops_estimate(self.cfg, b, t, keys, head)
            st._call((kind, b, t, keys, m, n))
            pending.append(out)
        return jax.device_get(pending)

    def _collect(self, enc: list[Encoded], calls: list[_Call],
                 outputs: list[tuple[np.ndarray, np.ndarray]]) -> list[ScoreResult]:
        labels = [np.full(e.label_ids.size, np.nan) for e in enc]
        opts = [np.zeros(len(e.options)) for e in enc]
        for c, (logit, logprob) in zip(calls, outputs):
            for i, r in enumerate(c.rows):
                n = len(r.pair_at)
                lg = logit[i, :n].astype(np.float64)
                lp = logprob[i, :n].astype(np.float64)
                for q in np.flatnonzero(r.pair_kind == 1):
                    labels[r.pair_req[q]][r.pair_idx[q]] = lg[q]
                for q in np.flatnonzero(r.pair_kind == 2):
                    opts[r.pair_req[q]][r.pair_idx[q]] += lp[q]
        return [ScoreResult(key=e.key, token_logits=lab[0::2], token_logits_space=lab[1::2],
                            label_token_ids=e.label_ids, label_multi_token=e.label_multi,
                            option_logprob=o,
                            option_ntokens=np.asarray([len(x) for x in e.options], np.int64),
                            n_prompt_tokens=len(e.prompt), boundary_split=e.boundary_split)
                for e, lab, o in zip(enc, labels, opts)]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def score(model: Any, tokenizer: Any = None, requests: Sequence[ScoreRequest] = (), *,
          strategy: str = "packed", mesh: Any = None, scorer: Scorer | None = None,
          **options: Any) -> list[ScoreResult]:
    """Score ``requests`` with ``strategy`` (one of STRATEGIES; all give the same numbers).

    ``model``: (cfg, params[, tokenizer]) or an object with .cfg/.params/.tokenizer (a
    ``checkpoints.LoadedModel``). ``options`` go to ``Scorer``; pass ``scorer`` to reuse one
    (its jitted functions, cached prefixes and stats) across calls.
    """
    s = scorer if scorer is not None else Scorer(model, tokenizer, mesh=mesh, **options)
    return s.score(requests, strategy=strategy)


# ============================================================================ action ratings

@dataclasses.dataclass
class RatingResult:
    """A 1-10 rating read from the next-token distribution.

    ``probs[r - 1]`` is P(rating r), renormalised over the ten ratings. When "10" is several
    tokens ("1" then "0"), the mass of the first token "1" is split with q = P("0" | prompt + "1"):
    P(10) = P("1") * q and P(1) = P("1") * (1 - q); anything else after "1" (end of turn, ".",
    another digit) counts as the rating 1.
    """

    key: str
    probs: np.ndarray  # [10]
    expected: float  # sum_r r * probs[r - 1]
    ten_split: bool  # "10" is more than one token for this tokenizer
    p_zero_after_one: float  # q above (nan when "10" is one token or could not be split)
    n_prompt_tokens: int



def _rate(scorer: Scorer, prompts: Sequence[tuple[str, str]] | Mapping[str, str],
          strategy: str) -> list[RatingResult]:
    items = list(prompts.items()) if isinstance(prompts, Mapping) else list(prompts)
    tok = scorer.tokenizer
    ten = _ids(tok, "10", False)
    ten_split = len(ten) > 1
    labels = [str(r) for r in RATINGS[:9]] + ([] if ten_split else ["10"])
    conts = ["1", "10"] if ten_split else []
    enc = scorer.encode([ScoreRequest(k, p, conts, labels) for k, p in items])
    results = scorer.score_encoded(enc, strategy)
    zero = label_token(tok, "0")[0]
    out = []
    for e, r in zip(enc, results):
        # candidate next tokens: every single-token form (bare "7", and " 7" where that is one
        # token); a form that is several tokens would only contribute its shared first token
        cand: dict[int, tuple[int, float]] = {}
        for i in range(len(labels)):
            for form, logits in ((0, r.token_logits), (1, r.token_logits_space)):
                if not e.label_multi[i, form]:
                    cand.setdefault(int(e.label_ids[i, form]), (i, float(logits[i])))
        probs = np.zeros(10)
        if cand:
            idx = np.asarray([i for i, _ in cand.values()])
            lg = np.asarray([v for _, v in cand.values()])
            p = np.exp(lg - lg.max())
            np.add.at(probs, idx, p / p.sum())
        q = float("nan")
        if ten_split:
            ok = (len(e.options[0]) == 1 and e.options[1] == e.options[0] + (zero,))
            if ok:
                q = float(np.exp(r.option_logprob[1] - r.option_logprob[0]))
                probs[9], probs[0] = probs[0] * q, probs[0] * (1.0 - q)
        total = probs.sum()
        probs = probs / total if total > 0 else probs
        out.append(RatingResult(e.key, probs, float(np.dot(RATINGS, probs)), ten_split, q,
                                len(e.prompt)))
    return out


def rating_distribution(model: Any, tokenizer: Any = None,
                        prompts: Sequence[tuple[str, str]] | Mapping[str, str] = (), *,
                        strategy: str = "packed", mesh: Any = None, scorer: Scorer | None = None,
                        **options: Any) -> list[RatingResult]:
    """Expected 1-10 rating of each (key, prompt) from the next-token distribution (see
    ``RatingResult``); prompts are generation-ready and end where the number begins. Uses the
    same scoring machinery (and strategies) as ``score``."""
    s = scorer if scorer is not None else Scorer(model, tokenizer, mesh=mesh, **options)
    return s.rate(prompts, strategy)


__all__ = ["STRATEGIES", "ScoreRequest", "ScoreResult", "ScoreStats", "Encoded", "Scorer",
           "score", "encode_request", "label_token", "prompt_add_special_tokens",
           "min_token_count", "flops_estimate", "bucket_length", "make_tree_core",
           "make_prefill_core", "make_cached_core", "shared_core", "abstract_inputs",
           "tree_mask", "read_pairs", "unpack_model", "RatingResult", "rating_distribution",
           "TRACE_COUNTS"]
