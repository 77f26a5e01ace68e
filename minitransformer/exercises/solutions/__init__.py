"""Reference solutions, kept apart from the stubs.

Each file holds only the backward functions of its exercise. It runs in the namespace of
the exercise file (it is appended to it: the later ``def`` wins), so it may use the
exercise's ``np``, ``forward`` and helpers. The tests check every one of them, and
``docs/exercises.md`` shows them behind an unfold.
"""
