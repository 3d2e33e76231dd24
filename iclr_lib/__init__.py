"""iclr_lib: the companion package of "Amazon @ ICLR 2022, re-implemented".

The papers' code, one module per chapter: :mod:`~iclr_lib.cold_brew` (1), :mod:`~iclr_lib.giant` (2),
:mod:`~iclr_lib.grda` (3), :mod:`~iclr_lib.item_cf` (4), :mod:`~iclr_lib.rim` (5),
:mod:`~iclr_lib.psa_gan` (6), :mod:`~iclr_lib.deep_autoaugment` (7), :mod:`~iclr_lib.trans_encoder` (8),
:mod:`~iclr_lib.diva` (9), :mod:`~iclr_lib.in_domain` (10), :mod:`~iclr_lib.shapley` and
:mod:`~iclr_lib.trajectory` (11).

Helpers that chapters share:

- :mod:`iclr_lib.data`: the dataset registry and verified fetcher;
- :mod:`iclr_lib.runtime`: seeding, device choice, quick mode, timing;
- :mod:`iclr_lib.plotting`: the book's matplotlib style; :mod:`iclr_lib.nets`: a ResNet block;
- :mod:`iclr_lib.exercises`: self-checks for the coding exercises, one module per chapter.

The book's own tooling (the claims protocol, the results recorder, the dashboard, the instructor
kit, the MathJax extension) lives in :mod:`iclr_lib.book`.

Importing the package is cheap: submodules (and torch) load only when you import them.
"""
__version__ = "0.1.0"

#: Where the book's sources live; Colab install cells install ``git+REPOSITORY_URL@<ref>`` (iclr_lib.book.colab).
#: ``tests/test_colab_cells.py`` checks this against ``_config.yml`` and every chapter.
REPOSITORY_URL = "https://github.com/iclr-lib/amazon-iclr2022-book"

__all__ = ["__version__", "REPOSITORY_URL"]
