"""One ``apply_defaults`` level per operator (issue 24, P4).

Airflow's operator metaclass wraps the ``__init__`` of every class in an operator's hierarchy in
``apply_defaults``, and each level merges the DAG's default args and deep-copies its params again:
a polymigrate task paid that two to four times where an ``EmptyOperator`` pays it once, 3,200 times
for the parse bench's 200 DAGs.
"""

from __future__ import annotations


def one_init_level(base: type, *classes: type) -> None:
    """Run each class's own ``__init__`` without its ``apply_defaults`` wrapper.

    Each of ``classes`` must call ``base.__init__`` (still wrapped), which merges default args and
    params once, for every argument Airflow knows; our own arguments (specs root, domain, region…)
    never come from default_args. Airflow's wrapper recognises the outermost level by
    ``self.__init__.__wrapped__`` (it then resolves XComArg dependencies and marks the operator
    instantiated), so that names ``base``'s function. Subclasses without an ``__init__`` of their
    own inherit the unwrapped one (the metaclass wraps only an ``__init__`` a class defines).
    """
    target = base.__init__.__wrapped__
    for cls in classes:
        own = cls.__dict__["__init__"]
        raw = getattr(own, "__wrapped__", own)
        raw.__wrapped__ = target
        cls.__init__ = raw
