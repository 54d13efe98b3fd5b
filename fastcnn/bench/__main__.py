"""``python -m fastcnn.bench``: ``fastcnn bench`` without the CLI; the fresh processes of
``--compile``, ``--malloc`` and the step memory run it."""

import sys

from fastcnn.bench import main

sys.exit(main())
