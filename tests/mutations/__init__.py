"""``make mutate``: break the code in small curated ways, one at a time, and check the tests notice.

``catalogue.py`` lists the mutations (file, exact snippet, replacement, the promise it breaks, the
tests to run); ``python -m tests.mutations`` applies each to a temporary copy of the tree, runs only
those tests there, and writes ``experiments/mutations.md``.
"""
