"""Generating text: a one-token step with weights laid out once, and the sampling controls.

``nn.LSTM`` called once per character re-packs its weights on every call; the ``Stepper``
instead keeps pre-transposed, gate-fused matrices with pre-summed biases, and folds the first
layer's input product into a lookup table (embedding x input weights), so each character costs
one matrix-vector product per weight matrix and a handful of element-wise operations.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Iterator

import torch

from charrnn.cells import CUSTOM_CELLS, cifg_step, peephole_step
from charrnn.errors import CharrnnError
from charrnn.model import LSTM_FAMILY, CharRNN, State
from charrnn.precision import STEP_PRECISIONS, step_dtype


@dataclass
class SampleOptions:
    length: int = 1000
    temp: float = 0.8
    greedy: bool = False
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stops: list[str] = field(default_factory=list)
    keep_stop: bool = False
    precision: str = "auto"

    def check(self) -> None:
        if self.length < 0:
            raise CharrnnError(f"--length must be >= 0 (got {self.length})")
        if not self.greedy and not self.temp > 0:
            raise CharrnnError(f"--temp must be > 0 (got {self.temp})")
        if self.top_k is not None and self.top_k < 1:
            raise CharrnnError(f"--top-k must be >= 1 (got {self.top_k})")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharrnnError(f"--top-p must be in (0, 1] (got {self.top_p})")
        if any(s == "" for s in self.stops):
            raise CharrnnError("--stop must not be empty")
        if self.precision not in STEP_PRECISIONS:
            raise CharrnnError(f"--precision must be one of {', '.join(STEP_PRECISIONS)} (got {self.precision!r})")


def filter_logits(logits: torch.Tensor, temp: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p), as logits with excluded tokens at -inf."""
    logits = logits.float() / temp
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs
        # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before
        # it is still below top_p (the most likely token always stays).
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick(
    logits: torch.Tensor, opts: SampleOptions, gen: torch.Generator | None = None, race: torch.Tensor | None = None
) -> torch.Tensor:
    """One token per row of ``logits`` (batch, vocab); ``race`` is each row's own Exp(1) draws
    (from ``RowNoise``), else they come from ``gen`` (or the global RNG) for the whole batch."""
    if opts.greedy:
        return logits.argmax(-1)
    probs = filter_logits(logits, opts.temp, opts.top_k, opts.top_p).softmax(-1)
    # One draw per row by the exponential race: argmax(p_k / E_k) with E_k ~ Exp(1) picks k with
    # probability p_k, what torch.multinomial does for one sample, without its per-call checks
    # (a quarter of the per-character overhead at batch 1). Excluded tokens have p = 0.
    if race is None:
        race = torch.empty_like(probs).exponential_(generator=gen)
    return probs.div_(race).argmax(-1)


def pick_rows(
    logits: torch.Tensor, temp: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None, race: torch.Tensor
) -> torch.Tensor:
    """``pick`` with settings per row, for a batch of unrelated requests: ``temp`` (batch, 1),
    0 meaning greedy; ``top_k`` (batch, 1) with the vocabulary size for none; ``top_p``
    (batch, 1) with inf for none. A row gets bit for bit the token ``pick`` gives it alone:
    the same operations on the same values, row by row."""
    greedy = temp == 0
    x = logits.float() / torch.where(greedy, 1.0, temp)
    if top_k is not None:
        kth = x.sort(-1, descending=True).values.gather(-1, top_k - 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p is not None:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        probs = sorted_x.softmax(-1)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        x = x.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), float("-inf"))
    tokens = x.softmax(-1).div_(race).argmax(-1)
    if bool(greedy.any()):
        tokens = torch.where(greedy[:, 0], logits.argmax(-1), tokens)
    return tokens


class RowNoise:
    """Each row's Exp(1) draws from its own ``torch.Generator`` (seeded S + i for row i), so a
    row's text depends on its seed alone, not on its batch or its place in it.

    A generator fills ``block`` steps' worth at once (the same numbers, in the same order, as
    one call per step: torch draws element by element), so the per-step cost is one gather
    for the whole batch instead of a call per row.
    """

    def __init__(self, seeds: list[int], vocab_size: int) -> None:
        self.block = max(1, min(64, 65536 // vocab_size))
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.buf = torch.empty(len(seeds), self.block, vocab_size)
        self.used = [self.block] * len(seeds)

    def draw(self) -> torch.Tensor:
        """The next step's draws, (batch, vocab): a view while every row is at the same step
        (as in ``generate``), gathered when rows joined at different ticks (the server)."""
        used = self.used
        for i, u in enumerate(used):
            if u == self.block:
                self.buf[i].exponential_(generator=self.gens[i])
                used[i] = 0
        first = used[0]
        if all(u == first for u in used):
            race = self.buf[:, first]
        else:
            race = self.buf[torch.arange(len(used)), torch.tensor(used)]
        self.used = [u + 1 for u in used]
        return race

    def keep(self, rows: list[int]) -> None:
        """Only these rows go on (the others' requests ended)."""
        self.gens = [self.gens[i] for i in rows]
        self.used = [self.used[i] for i in rows]
        self.buf = self.buf[torch.tensor(rows, dtype=torch.long)]

    def extend(self, other: "RowNoise") -> None:
        """Append ``other``'s rows (new requests joining the batch)."""
        self.gens += other.gens
        self.used += other.used
        self.buf = torch.cat([self.buf, other.buf])


class Stepper:
    """The model's own recurrence, one token at a time, for generation (no dropout).

    The custom cells (peephole, cifg) run the very step functions their layers loop over in
    training, fed from the same token table, so sampling cannot drift from the trained model.

    ``precision`` (see ``charrnn.precision.step_dtype``) is the dtype of the recurrent matrices:
    with bfloat16 each of their products reads half the bytes, accumulates in float32 and joins
    its float32 bias, so the state, the gate arithmetic and the logits stay float32. The first
    layer's token table (a step reads one row) and the small output layer stay float32.
    """

    def __init__(self, model: CharRNN, precision: str = "float32") -> None:
        cfg = model.cfg
        self.kind = cfg.model
        self.layers = cfg.layers
        self.hidden = cfg.hidden
        self.dtype = step_dtype(precision, cfg.model, cfg.hidden)
        rnn = model.rnn
        with torch.no_grad():
            w = lambda name: getattr(rnn, name).detach().float()
            self.w_hh = [w(f"weight_hh_l{i}").t().contiguous() for i in range(cfg.layers)]
            self.w_ih = [w(f"weight_ih_l{i}").t().contiguous() for i in range(cfg.layers)]
            if self.kind in CUSTOM_CELLS:
                # One bias per layer already; the recurrent product stays inside the step function.
                self.b_ih = [w(f"bias_l{i}") for i in range(cfg.layers)]
                if self.kind == "peephole":
                    self.peep = [w(f"peephole_l{i}") for i in range(cfg.layers)]
            else:
                b_ih = [w(f"bias_ih_l{i}") for i in range(cfg.layers)]
                b_hh = [w(f"bias_hh_l{i}") for i in range(cfg.layers)]
                if self.kind == "gru":
                    # The reset gate multiplies (W_hn h + b_hn), so b_hn cannot join the input bias.
                    self.b_ih, self.b_hh = b_ih, b_hh
                else:
                    self.b_ih = [a + b for a, b in zip(b_ih, b_hh)]
                    if self.kind == "lstm":
                        # Gate columns reordered i, f, g, o -> i, f, o, g: one sigmoid over the
                        # first three gates and one tanh per step instead of four calls.
                        H = cfg.hidden
                        order = torch.cat([torch.arange(2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
                        self.w_hh = [m[:, order].contiguous() for m in self.w_hh]
                        self.w_ih = [m[:, order].contiguous() for m in self.w_ih]
                        self.b_ih = [b[order] for b in self.b_ih]
                    # Layers above the first: one product of [x, h] with the stacked matrices.
                    self.w_cat = [None] + [torch.cat([self.w_ih[i], self.w_hh[i]], 0) for i in range(1, cfg.layers)]
            # Layer 0's input product depends only on the token: precompute it for every token.
            self.table = torch.addmm(self.b_ih[0], model.embed.weight.detach().float(), self.w_ih[0])
            self.w_out = model.head.weight.detach().float().t().contiguous()
            self.b_out = model.head.bias.detach().float().clone()
            if self.dtype == torch.bfloat16:
                self.w_hh = [_pack_bfloat16(m) for m in self.w_hh]
                if self.kind == "gru":
                    self.w_ih = [_pack_bfloat16(m) for m in self.w_ih]
                else:
                    self.w_cat = [None] + [_pack_bfloat16(m) for m in self.w_cat[1:]]

    @staticmethod
    def _mm(bias: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``bias + x @ w`` in float32, ``w`` a float32 matrix or one packed by ``_pack_bfloat16``."""
        if w.dtype == torch.float32:
            return torch.addmm(bias, x, w)
        # The product's bfloat16 result joins the float32 bias as float32 (type promotion).
        return torch.add(bias, torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), w, None, "none", [], ""))

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Logits for the next token after ``tokens`` (batch,), and the new state.

        The new state is written layer by layer into fresh tensors (no stacking at the end)."""
        H, L, kind = self.hidden, self.layers, self.kind
        paired = kind in LSTM_FAMILY
        h_all, c_all = state if paired else (state, None)
        if kind in CUSTOM_CELLS:
            return self._custom_step(tokens, h_all, c_all)
        h_next = torch.empty_like(h_all)
        c_next = torch.empty_like(c_all) if paired else None
        x = None
        for i in range(L):
            h = h_all[i]
            if kind == "gru":
                gi = torch.embedding(self.table, tokens) if i == 0 else self._mm(self.b_ih[i], x, self.w_ih[i])
                gh = self._mm(self.b_hh[i], h, self.w_hh[i])
                r = torch.sigmoid(gi[:, :H] + gh[:, :H])
                z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
                n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
                x = torch.add(n, z * (h - n), out=h_next[i])
                continue
            if i == 0:
                g = self._mm(torch.embedding(self.table, tokens), h, self.w_hh[0])
            else:
                g = self._mm(self.b_ih[i], torch.cat([x, h], 1), self.w_cat[i])
            if kind == "lstm":
                gates = torch.sigmoid(g[:, : 3 * H])
                c = torch.addcmul(gates[:, H : 2 * H] * c_all[i], gates[:, :H], torch.tanh(g[:, 3 * H :]), out=c_next[i])
                x = torch.mul(gates[:, 2 * H :], torch.tanh(c), out=h_next[i])
            else:
                x = torch.tanh(g, out=h_next[i])
        logits = self._mm(self.b_out, x, self.w_out)
        return logits, ((h_next, c_next) if paired else h_next)

    def _custom_step(self, tokens: torch.Tensor, h_all: torch.Tensor, c_all: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Peephole and CIFG: the layers' own step functions (float32 only)."""
        hs, cs = [], []
        x = None
        for i in range(self.layers):
            gx = torch.embedding(self.table, tokens) if i == 0 else torch.addmm(self.b_ih[i], x, self.w_ih[i])
            # The step functions take W_hh as the layer stores it, (G*H, H): the transpose
            # of our pre-transposed copy, a view.
            if self.kind == "peephole":
                x, c = peephole_step(gx, h_all[i], c_all[i], self.w_hh[i].t(), self.peep[i])
            else:
                x, c = cifg_step(gx, h_all[i], c_all[i], self.w_hh[i].t())
            hs.append(x)
            cs.append(c)
        logits = torch.addmm(self.b_out, x, self.w_out)
        return logits, (torch.stack(hs), torch.stack(cs))


def _pack_bfloat16(w: torch.Tensor) -> torch.Tensor:
    """A (in, out) float32 matrix as bfloat16 in oneDNN's own blocked layout for one-row products,
    laid out once. A bfloat16 ``torch.mm`` on a plain matrix re-lays it out on every call: on a
    2-core Xeon with AMX the step's three products took 404 us that way against 265 us in
    float32, and 200 us packed (one process, same minute)."""
    return torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous().to(torch.bfloat16), 1)


def encode_prime(vocab, prime: str, unknown: str = "error", what: str = "prime text") -> list[int]:
    """Prime text (or any ``what`` a user gives) as ids; characters outside the vocabulary are
    an error or skipped."""
    from charrnn.vocab import describe_chars

    missing = vocab.missing(prime)
    if missing:
        if unknown != "skip":
            raise CharrnnError(
                f"{what} has characters the vocabulary lacks: {describe_chars(missing)} "
                "(use --unknown skip to drop them)"
            )
        prime = "".join(c for c in prime if c not in set(missing))
    return vocab.encode(prime).tolist()


def start_ids(vocab, prime_ids: list[int]) -> list[int]:
    """What the model reads before generating: the prime, or a newline (start of a line)."""
    if prime_ids:
        return prime_ids
    newline = vocab.missing("\n") == []
    return vocab.encode("\n").tolist() if newline else [0]


@torch.no_grad()
def warm_up(model: CharRNN, ids: list[int], batch: int) -> tuple[torch.Tensor, State]:
    """Run the start text through the full-sequence model; the logits after it and the state.

    It is read once and copied to every row, so each row starts bit for bit as a lone run does
    (a batched pass may round differently)."""
    logits, state = model(torch.tensor(ids, dtype=torch.long, device=model.embed.weight.device)[None])
    logits = logits[:, -1].float().expand(batch, -1).contiguous()
    if isinstance(state, tuple):
        return logits, tuple(s.expand(-1, batch, -1).contiguous() for s in state)
    return logits, state.expand(-1, batch, -1).contiguous()


class StopCutter:
    """Emits a row's text as it grows, holding back only what could still begin a stop string."""

    def __init__(self, stops: list[str], keep: bool) -> None:
        self.stops = stops
        self.keep = keep
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""
        self.done = False

    def feed(self, text: str) -> str:
        self.pending += text
        if self.stops:
            hits = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
            if hits:
                pos, stop = min(hits)
                self.done = True
                out = self.pending[: pos + (len(stop) if self.keep else 0)]
                self.pending = ""
                return out
        if self.hold == 0:
            out, self.pending = self.pending, ""
        else:
            out, self.pending = self.pending[: -self.hold], self.pending[-self.hold :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@torch.no_grad()
def generate(
    model: CharRNN, vocab, opts: SampleOptions, prime_ids: list[int], num_samples: int = 1
) -> Iterator[tuple[int, str]]:
    """Yield (row, text) pieces as ``num_samples`` rows are generated together in one batch.

    Each row ends after ``opts.length`` characters or at its first stop string. With a seed S
    row i draws from its own stream seeded S + i, so it is the text a lone run with seed S + i
    gives.
    """
    opts.check()
    model.eval()
    stepper = Stepper(model, opts.precision)
    logits, state = warm_up(model, start_ids(vocab, prime_ids), num_samples)
    # Tokens are bytes decoded per row as they arrive: a subword's byte pieces may split a
    # character, and the decoder emits it once complete. ``--length`` counts characters.
    pieces = vocab.token_bytes()
    decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(num_samples)]
    cutters = [StopCutter(opts.stops, opts.keep_stop) for _ in range(num_samples)] if opts.stops else None
    counts = [0] * num_samples
    active = list(range(num_samples))
    noise = None
    if opts.seed is not None and not opts.greedy:
        noise = RowNoise([opts.seed + i for i in range(num_samples)], logits.shape[-1])
    while active:
        token_list = pick(logits, opts, race=noise.draw() if noise is not None else None).tolist()
        still = []
        for row in active:
            piece = decoders[row].decode(pieces[token_list[row]])
            room = opts.length - counts[row]
            if len(piece) > room:
                piece = piece[:room]
            counts[row] += len(piece)
            finished = counts[row] >= opts.length
            if cutters is not None:
                cut = cutters[row]
                piece = cut.feed(piece)
                if cut.done:
                    finished = True
                elif finished:
                    piece += cut.flush()
            if piece:
                yield row, piece
            if not finished:
                still.append(row)
        active = still
        if active:
            logits, state = stepper.step(torch.tensor(token_list), state)


@torch.no_grad()
def beam_search(model: CharRNN, vocab, prime_ids: list[int], width: int, length: int) -> tuple[str, float]:
    """The most likely continuation of ``length`` tokens found with ``width`` beams (for a
    subword vocabulary the text is then cut to ``length`` characters).

    The greedy path runs alongside as one extra row that is never pruned, so the result is
    never less likely than greedy decoding (plain beam search can, rarely, lose it).
    Returns the text and its log-probability in nats.
    """
    if width < 1:
        raise CharrnnError(f"--beam-width must be >= 1 (got {width})")
    model.eval()
    stepper = Stepper(model)
    logits, state = warm_up(model, start_ids(vocab, prime_ids), 1)
    logp = logits.log_softmax(-1)
    V = logp.shape[-1]
    scores = torch.zeros(1, dtype=torch.float64)
    seqs = torch.zeros(1, 0, dtype=torch.long)
    greedy_score = torch.zeros((), dtype=torch.float64)
    greedy_seq: list[int] = []
    greedy_logp, greedy_state = logp[0], state
    for _ in range(length):
        g = int(greedy_logp.argmax())
        greedy_score += float(greedy_logp[g])
        greedy_seq.append(g)
        total = (scores[:, None] + logp.double()).flatten()
        k = min(width, total.numel())
        top = torch.topk(total, k)
        rows, toks = top.indices // V, top.indices % V
        scores = top.values
        seqs = torch.cat([seqs[rows], toks[:, None]], 1)
        state = tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]
        # One step for the beams and the greedy row together.
        both = torch.cat([toks, torch.tensor([g])])
        if isinstance(state, tuple):
            joint = tuple(torch.cat([s, gs], 1) for s, gs in zip(state, greedy_state))
        else:
            joint = torch.cat([state, greedy_state], 1)
        out, joint = stepper.step(both, joint)
        out = out.log_softmax(-1)
        logp, greedy_logp = out[:-1], out[-1]
        if isinstance(joint, tuple):
            state, greedy_state = tuple(s[:, :-1] for s in joint), tuple(s[:, -1:] for s in joint)
        else:
            state, greedy_state = joint[:, :-1], joint[:, -1:]
    best = int(scores.argmax())
    if float(greedy_score) > float(scores[best]):
        return vocab.decode(greedy_seq)[:length], float(greedy_score)
    return vocab.decode(seqs[best].tolist())[:length], float(scores[best])
