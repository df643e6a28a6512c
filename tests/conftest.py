import sys
from pathlib import Path

# The program and its tests import `components` from the project root, as `pulumi up` does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
