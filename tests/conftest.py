import os
import sys
from pathlib import Path

# The program and its tests import `components` from the project root, as `pulumi up` does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Tests that import litellm must not try to download its model cost map (no internet here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
