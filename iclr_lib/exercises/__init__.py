"""Self-checks for the book's coding exercises, one module per chapter.

``iclr_lib.exercises.<chapter module>.check_*`` (for example
``from iclr_lib.exercises.diva import check_dual_ridge`` for exercise ``ex-09-3``) takes the reader's
function, compares it with the package's reference on small random inputs and either returns ``True``
or raises ``AssertionError`` saying what is wrong. Nothing is imported here: each check loads only
its own chapter's module.
"""
