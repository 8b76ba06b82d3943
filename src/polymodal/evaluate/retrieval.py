"""Moved to polymodal.metrics.retrieval; this alias goes in the next release."""

import sys

from polymodal.evaluate._moved import moved

sys.modules[__name__] = moved(__name__, "polymodal.metrics.retrieval")
