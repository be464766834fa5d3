"""Frozen copies of the decision code as it was before the speed work of issue 12 (session 16).

The equivalence tests (tests/unit/test_decision_equivalence.py) run these and the live
modules on the same generated inputs and require identical values and stored JSON.
Not to be edited: they are the reference.
"""
