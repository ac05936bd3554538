"""A sequential baseline: GRU4Rec (Hidasi et al., 2016), a recurrent network over each user's positive items in time
order predicting the next one, small enough to train in minutes on 2 cores (PyTorch, the `.[train]` extra).

Trained with a sampled softmax (each position's next item against SAMPLED items drawn per batch) over the modelled
items (the catalog up to MAX_ITEMS, else its most interacted-with items: the rest are never predicted). Sequences
are right-padded: the recurrence reads a user's items before any padding. How many epochs is tuned on a validation slice
(the best of several checks while training on the part before it), then the model is trained afresh for that many
epochs on everything. `tuned_top` does both on one thread, to run beside other work (learning/beside.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from learning.metrics import mean_ndcg, top_k

__all__ = ["MAX_ITEMS", "Gru4Rec", "SequentialParams", "check_epochs", "fit_gru4rec", "sequences", "tune_gru4rec",
           "tuned_top"]

MAX_ITEMS = 50_000  # items modelled at most
SAMPLED = 512  # negatives per batch, shared by its positions


@dataclass(frozen=True)
class SequentialParams:
    dim: int = 64
    layers: int = 1
    max_length: int = 50  # the latest items a user's sequence keeps
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch: int = 64
    epochs: int = 30


def check_epochs(params: SequentialParams, checks: int = 6) -> list[int]:
    """The epochs after which training measures the validation NDCG (about `checks` of them, the last included)."""
    every = max(params.epochs // checks, 1)
    return list(range(every, params.epochs + 1, every))


def sequences(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, positive: np.ndarray) -> dict[int, np.ndarray]:
    """Each user's positive item rows (item id - 1) in time order (log order within a second)."""
    keep = np.flatnonzero(positive)
    order = keep[np.lexsort((keep, timestamps[keep], users[keep]))]
    who, rows = users[order], items[order] - 1
    if not len(who):
        return {}
    starts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
    ends = np.r_[starts[1:], len(who)]
    return {int(who[a]): rows[a:b] for a, b in zip(starts.tolist(), ends.tolist())}


def _network(torch, n_tokens: int, params: SequentialParams):
    nn = torch.nn

    class Network(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(n_tokens, params.dim, padding_idx=0)  # token 0: padding; token t: modelled item t-1
            self.gru = torch.nn.GRU(params.dim, params.dim, params.layers, batch_first=True,
                                    dropout=params.dropout if params.layers > 1 else 0.0)
            self.dropout = nn.Dropout(params.dropout)

        def forward(self, tokens):  # [b, L], right-padded -> hidden [b, L, dim]
            x = self.dropout(self.items(tokens))
            out, _ = self.gru(x)
            return out

        def logits(self, hidden):  # tied output layer: scores over every token
            return hidden @ self.items.weight.T

    return Network()


class Gru4Rec:
    """A trained model: scores over the catalog for users from their histories."""

    def __init__(self, network, columns: np.ndarray, items: int, params: SequentialParams, epochs: int) -> None:
        self.network, self.columns, self.items, self.params, self.epochs = network, columns, items, params, epochs
        self.token = np.zeros(items, np.int64)  # catalog row -> token (0: not modelled)
        self.token[columns] = np.arange(1, len(columns) + 1)

    def _tokens(self, histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded token rows and where each one's newest item stands."""
        length = self.params.max_length
        out = np.zeros((len(histories), length), np.int64)
        last = np.zeros(len(histories), np.int64)
        for n, rows in enumerate(histories):
            tokens = self.token[rows]
            tokens = tokens[tokens > 0][-length:]
            out[n, :len(tokens)] = tokens
            last[n] = max(len(tokens) - 1, 0)
        return out, last

    def scores(self, histories: list[np.ndarray], block: int = 512) -> np.ndarray:
        """[len(histories), items]: the next-item scores after each history (item rows, oldest first)."""
        import torch

        out = np.zeros((len(histories), self.items), np.float32)
        self.network.eval()
        with torch.no_grad():
            for start in range(0, len(histories), block):
                tokens, last = self._tokens(histories[start:start + block])
                hidden = self.network(torch.from_numpy(tokens))[torch.arange(len(tokens)), torch.from_numpy(last)]
                out[start:start + len(tokens), self.columns] = self.network.logits(hidden).numpy()[:, 1:]
        empty = [n for n, h in enumerate(histories) if not len(h)]
        out[empty] = 0.0
        return out


def fit_gru4rec(histories: dict[int, np.ndarray], items: int, params: SequentialParams = SequentialParams(), seed: int = 0,
               check: Callable[[Gru4Rec], float] | None = None, checks: int = 6,
               report: Callable[[int, float], None] | None = None,
               each_epoch: Callable[[int], None] | None = None) -> tuple[Gru4Rec, dict[int, float]]:
    """Train on every user's sequence (in pieces of max_length + 1 items: each position predicts the next). With
    `check` (a model -> validation NDCG), it is measured `checks` times along the way, and the measures are
    returned by epoch; the model returned is the last. `each_epoch` hears of every epoch done."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    counts = np.zeros(items, np.int64)
    for rows in histories.values():
        np.add.at(counts, rows, 1)
    columns = np.arange(items) if items <= MAX_ITEMS else np.sort(np.argsort(-counts)[:MAX_ITEMS])
    model = Gru4Rec(_network(torch, len(columns) + 1, params), columns, items, params, params.epochs)
    length = params.max_length
    windows = []  # every user's whole history, cut from its newest end into pieces of max_length + 1
    for rows in histories.values():
        tokens = model.token[rows]
        tokens = tokens[tokens > 0]
        for end in range(len(tokens), 1, -length):
            windows.append(tokens[max(end - length - 1, 0):end])
    data = np.zeros((len(windows), length + 1), np.int64)
    for n, w in enumerate(windows):
        data[n, :len(w)] = w
    inputs, targets = torch.from_numpy(data[:, :-1]), torch.from_numpy(data[:, 1:])
    optimiser = torch.optim.Adam(model.network.parameters(), lr=params.learning_rate, betas=(0.9, 0.98))
    tokens = len(columns) + 1
    sampled = min(SAMPLED, len(columns))
    checked = set(check_epochs(params, checks))
    measured: dict[int, float] = {}
    for epoch in range(1, params.epochs + 1):
        model.network.train()
        order = torch.from_numpy(rng.permutation(len(data)))
        for start in range(0, len(data), params.batch):
            index = order[start:start + params.batch]
            target = targets[index]
            wanted = target != 0
            hidden = model.network(inputs[index])[wanted]  # [m, dim]: positions with a next item
            embeddings = model.network.items.weight
            positive = (hidden * embeddings[target[wanted]]).sum(-1, keepdim=True)
            others = torch.from_numpy(rng.choice(np.arange(1, tokens), sampled, replace=False))
            logits = torch.cat([positive, hidden @ embeddings[others].T], dim=1)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if check is not None and epoch in checked:
            measured[epoch] = check(model)
            if report is not None:
                report(epoch, measured[epoch])
        if each_epoch is not None:
            each_epoch(epoch)
    return model, measured


def tune_gru4rec(train: dict[int, np.ndarray], validate: Callable[[Gru4Rec], float], everything: dict[int, np.ndarray],
                items: int, params: SequentialParams = SequentialParams(), seed: int = 0,
                report: Callable[[int, float], None] | None = None,
                final: Callable[[int], Callable[[int], None]] | None = None) -> tuple[Gru4Rec, int]:
    """Train on `train`, measuring the validation NDCG along the way; then train afresh on `everything` for the
    epochs that measured best. Returns the model and those epochs. `final`, told those epochs, returns what hears
    of each epoch of the second training (a progress bar)."""
    _, measured = fit_gru4rec(train, items, params, seed, validate, report=report)
    best = max(measured, key=lambda e: measured[e]) if measured else params.epochs
    model, _ = fit_gru4rec(everything, items, replace(params, epochs=best), seed,
                           each_epoch=final(best) if final is not None else None)
    return model, best


def tuned_top(tell: Callable[..., None], early: dict[int, np.ndarray], everything: dict[int, np.ndarray],
              fit_part: sp.csr_matrix, check_part: sp.csr_matrix, rows: np.ndarray, seen: sp.csr_matrix, k: int,
              params: SequentialParams, seed: int) -> tuple[np.ndarray, int]:
    """tune_gru4rec on one thread: its epochs tuned on the validation slice (`early` histories, `fit_part` seen,
    `check_part` held out), then trained on `everything`. Returns the top k of `rows` (after their histories in
    `everything`, leaving out `seen`) and the epochs. `tell` hears ("checked", epoch, ndcg), ("final", epochs) and
    ("epoch", epoch)."""
    import torch

    torch.set_num_threads(1)  # the caller's own work has the other core (a second thread gained 3% here)
    checked = np.flatnonzero(np.diff(check_part.indptr) > 0)
    empty = np.zeros(0, np.int64)

    def validate(model: Gru4Rec) -> float:
        return mean_ndcg(lambda part: model.scores([early.get(int(u), empty) for u in part]), fit_part, check_part,
                         checked, k)

    def final(epochs: int) -> Callable[[int], None]:
        tell("final", epochs)
        return lambda epoch: tell("epoch", epoch)

    model, epochs = tune_gru4rec(early, validate, everything, fit_part.shape[1], params, seed,
                                 report=lambda epoch, ndcg: tell("checked", epoch, ndcg), final=final)
    return top_k(model.scores([everything.get(int(u), empty) for u in rows]), seen, rows, k), epochs
