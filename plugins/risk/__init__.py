"""Built-in plugin ``risk`` (in progress, issue 6): the pre-trade gate that fails closed.

So far: the ``[risk]`` limits (:mod:`.config`), the rules that judge one order
(:mod:`.decide`), trading state and drawdown (:mod:`.trading`) and the audit log
(:mod:`.audit`). It is not registered as an entry point yet, so navstream does not load it
and does not read ``P:orders``: an order gate must not answer before every part of it (stored
first decisions, trading state, audit log) is in place.
"""
