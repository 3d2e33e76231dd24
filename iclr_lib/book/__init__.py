"""The book's own tooling, kept apart from the papers' code.

- :mod:`iclr_lib.book.claims`: the claims protocol (BOOK.md section 9): declare a claim from per-seed
  numbers, compute its verdict with the one rule, run a function over seeds, show the ledger;
- :mod:`iclr_lib.book.results`: the ``RESULTS`` recorder that writes ``<chapter>.json``;
- :mod:`iclr_lib.book.dashboard`: the first page's tables and figure, generated from recorded runs;
- :mod:`iclr_lib.book.build`: the reader's build: executes the chapters with progress and a cache,
  writes the dashboard from that build's records, renders the book;
- :mod:`iclr_lib.book.instructor`: student copies of the chapters without solutions;
- :mod:`iclr_lib.book.sphinx_mathjax`: a Sphinx extension that serves MathJax with the book.
"""
