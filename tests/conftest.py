import os
import sys

# the tests import their NumPy references as a plain module
sys.path.insert(0, os.path.dirname(__file__))
