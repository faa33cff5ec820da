"""The command line under hostile use (hostile round 4).

- 1: ``--save`` never replaces a file the run reads, even with ``--force``: an image of a folder source, a CIFAR
  batch of a CIFAR folder, the weights file (``--weights``, ``$FIDKIT_WEIGHTS``, the cached one), through links
  and hard links alike; other paths in the folder stay writable, and a folder is listed only when the path exists.
- 2: ``--json``'s "warnings" holds every warning printed on stderr (limit/seed, sFID's small samples...).
- 3: a failed write of the result to stdout says so, not "the save failed"; a reader that went away stays quiet.
- 4: ``--save newdir/`` names a folder: refused, not written as a file called ``newdir``.
- 5: every seed option is checked by argparse: exit 2, the option named, 0 <= seed < 2**32.
- 6: KID's "subset_size capped" line is debug, not one INFO line per half-sample.
- 7: the text table never prints a non-finite number.
- 8: ``fidkit stats`` of a file without N says N is unknown, not ``N=None``.

No test here runs the network: the refusals come before it, and the other sources are statistics or features files.
"""

from __future__ import annotations

import logging

import numpy as np



# --- 6: KID's capped subset size is a debug line ------------------------------------------------------------


def test_kid_capping_its_subset_size_is_not_an_info_line(caplog):
    from fidkit.metrics.kid import kid

    rng = np.random.default_rng(0)
    with caplog.at_level(logging.DEBUG, logger="fidkit"):
        result = kid(rng.normal(size=(20, 4)), rng.normal(size=(25, 4)), subset_size=1000, subsets=3)
    capped = [record for record in caplog.records if "capped" in record.getMessage()]
    assert capped and all(record.levelno == logging.DEBUG for record in capped)
    assert result.subset_size == 20
