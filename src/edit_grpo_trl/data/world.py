"""The old name of :mod:`edit_grpo_trl.world` (the knowledge world moved out of ``data``: it is a test bed).

Kept so that ``edit_grpo_trl.data.world``, its modules ``.model`` and ``.world``, and
``python -m edit_grpo_trl.data.world`` keep working: they are the very same module objects.
"""

import sys

from edit_grpo_trl.world import *  # noqa: F403
from edit_grpo_trl.world import __all__, model, world  # noqa: F401

sys.modules["edit_grpo_trl.data.world.model"] = model
sys.modules["edit_grpo_trl.data.world.world"] = world

if __name__ == "__main__":
    from edit_grpo_trl.world.__main__ import main

    raise SystemExit(main())
