"""NAV conflation (``[nav] eval_interval_ms``): under a fast feed, each changed scope is evaluated
at most once per interval instead of in every batch, and a stored NAV never looks better or
fresher than the inputs Redis holds would make it.

Why: at a desk's event rate nearly every batch moves nearly every price, so every scope was
valued, stored and published in every batch, which cost more than reading the events. A reader
needs a NAV that is never wrong about being ``ok``, not one per batch.

The rules (docs/nav.md, "Conflation"):

- every batch still stores its inputs; the accounts its winning events touch are marked dirty (a
  price or a source report: every account); a copy read afresh (distrusted: another consumer
  wrote, or none was held) marks every account: when in doubt, evaluate;
- a round evaluates the dirty accounts, then venues, ``exchange`` and ``total``: in the batch
  that marks them if the last round is at least ``eval_interval_ms`` old (leading edge), else in
  the first batch past the interval; every tick evaluates everything, as always;
- a dirty account waiting for its round whose stored snapshot reads ``ok`` is checked in every
  batch (:func:`outlook`, the status and ``fresh_until`` rules of ``value_account`` without the
  money): if the current inputs would not leave it ``ok``, or would leave it fresh for less
  long, it is evaluated at once. A failing report, a missing or diverging price, a new asset or
  account, an input older than the stored NAV's horizon: none of these waits.

Only the value waits (at most until the first batch after the interval, never beyond the next
tick), and a snapshot that already reads as not ``ok`` (the gate vetoes on it whatever it says).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from navstream import numbers

from .config import AccountSpec, NavConfig
from .market import Holding, Market, Quote, SourceState
from .money import MAX_DIGITS
from .snapshot import Snapshot

Key = tuple[str, str]


@dataclass
class Conflation:
    """One consumer's marks: which accounts changed since they were last evaluated, and when
    the last round was. Kept beside the cached inputs, never with them, so dropping a
    distrusted copy drops no mark."""

    dirty: set[Key] = field(default_factory=set)
    #: Every account is dirty (a price or source report, or inputs read afresh).
    everything: bool = False
    #: The batch or tick clock of the last round; None: none yet (the next change is evaluated).
    last_round: int | None = None
    #: Whether :func:`exact_values` holds for the config last seen (checked once per config).
    #: The config last judged and its verdict (kept, so its identity cannot pass to another).
    exact: tuple[NavConfig | None, bool] = (None, False)

    def mark(self, keys: set[Key] | None) -> None:
        """Accounts whose inputs changed (None: every account)."""
        if keys is None:
            self.everything = True
        else:
            self.dirty |= keys

    def done(self, now_ms: int) -> None:
        """Every scope was evaluated at ``now_ms`` (a tick, or a round of every account)."""
        self.dirty.clear()
        self.everything = False
        self.last_round = now_ms

    def due(self, interval_ms: int, now_ms: int) -> bool:
        """Whether a round may run now: none yet, the interval is over, or the clock went back."""
        last = self.last_round
        return last is None or not last <= now_ms < last + interval_ms

    def exact_for(self, config: NavConfig) -> bool:
        if self.exact[0] is not config:
            self.exact = (config, exact_values(config))
        return self.exact[1]


def plan(
    state: Conflation,
    config: NavConfig,
    balances: Mapping[Key, Mapping[str, Holding]],
    known: Mapping[Key, Snapshot],
    quotes: Iterable[Quote],
    sources: Iterable[SourceState],
    now_ms: int,
) -> tuple[set[Key] | None, bool, Market | None]:
    """Which accounts this batch evaluates (None: all, an empty set: none), whether that is a
    round, and the market it judged them in (None if it needed none). Marks are not cleared
    here: :func:`settle` does, once the evaluation is done."""
    if not state.everything and not state.dirty:
        return set(), False, None
    if state.due(config.eval_interval_ms, now_ms):
        return (None if state.everything else set(state.dirty)), True, None
    if state.everything:  # some may be evaluated now, the others still wait: name them
        state.dirty = set(balances) | {(s.venue, s.account) for s in config.accounts} | set(known)
        state.everything = False
    specs: dict[Key, AccountSpec] | None = None
    market: Market | None = None
    urgent = set()
    for key in state.dirty:
        stored = known.get(key)
        if stored is None:  # a new scope: shown at once
            urgent.add(key)
            continue
        if stored.status != "ok" or stored.fresh_until <= now_ms:
            continue  # already read as not ok by everyone: nothing to hide
        if not state.exact_for(config):
            urgent.add(key)
            continue
        if market is None:
            market = Market(config, quotes, sources, now_ms)
            specs = {(s.venue, s.account): s for s in config.accounts}
        assert specs is not None
        ok, fresh_until = outlook(key[0], key[1], specs.get(key), balances.get(key, {}), market)
        if not ok or fresh_until < stored.fresh_until:
            urgent.add(key)
    return urgent, False, market


def settle(state: Conflation, only: set[Key] | None, evaluated: list[Snapshot], now_ms: int, round_: bool) -> None:
    """After an evaluation of ``only`` (None: all): its accounts (and any the evaluation valued
    again because their ``fresh_until`` had passed) are clean; a round restarts the interval."""
    if only is None:
        state.done(now_ms)
        return
    state.dirty -= {(s.venue, s.account) for s in evaluated if s.scope == "account"}
    if round_:
        state.last_round = now_ms


def outlook(
    venue: str, account: str, spec: AccountSpec | None, holdings: Mapping[str, Holding], market: Market
) -> tuple[bool, int]:
    """Whether ``value_account`` would find this account ``ok`` now, and if so its
    ``fresh_until``: the same rules on the same inputs, without valuing anything (the units come
    from ``market``, as ``value_account`` takes them). Exactness is the one rule left out: it
    holds whenever :func:`exact_values` does. tests/plugins/nav/test_nav_conflation.py checks
    both functions agree."""
    limit = market.now_ms - market.max_age_ms
    horizon = market.now_ms
    reported = False
    for s in market.by_venue.get(venue, ()):
        if s.account is not None and s.account != account:
            continue
        reported = True
        seen = s.seen
        if not s.ok or seen < limit:
            return False, 0
        if seen < horizon:
            horizon = seen
    if not holdings or (not reported and (spec is None or spec.requires_source_status)):
        return False, 0
    unit_of = market.unit
    for asset, h in holdings.items():
        seen = h.received if h.received < h.ts else h.ts  # h.seen, inlined: every batch, every holding
        if seen < limit:
            return False, 0
        if seen < horizon:
            horizon = seen
        pnl = h.unrealized_pnl
        if (h.balance == -pnl) if pnl else not h.balance:  # a zero holding needs no price
            continue
        unit = unit_of(asset)
        if unit.value is None or unit.stale:
            return False, 0
        if unit.oldest < horizon:
            horizon = unit.oldest
    return True, horizon + market.max_age_ms + 1


def exact_values(config: NavConfig) -> bool:
    """Whether every value and sum a NAV computes under ``config`` is exact within
    ``MAX_DIGITS``, for any amounts and prices the contract accepts (at most
    ``MAX_INTEGER_DIGITS`` digits before the point and ``MAX_FRACTION_DIGITS`` after): then a new
    balance or price can change a NAV's value but never make it ``value_inexact``. Bounded by the
    longest chain of priced hops and the pegs' digits; a few hops are far inside it."""
    hops = 1
    for asset in config.routes:
        n, step = 0, asset
        while step != config.quote and step not in config.pegs:
            n += 1
            step = config.routes[step].partition("/")[2] if step in config.routes else config.quote
        hops = max(hops, n)
    factors = 1 + hops  # the amount, and one price per hop (a peg at most once more)
    low = -numbers.MAX_FRACTION_DIGITS * factors + min([0, *(int(p.as_tuple().exponent) for p in config.pegs.values())])
    # +1 a factor: the amount is a sum of two, and a product carries; +12: sums of 10**12 terms
    high = (numbers.MAX_INTEGER_DIGITS + 1) * factors + max([0, *(p.adjusted() + 1 for p in config.pegs.values())]) + 12
    return high - low + 1 <= MAX_DIGITS
