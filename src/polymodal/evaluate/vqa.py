"""Moved to polymodal.metrics.vqa; this alias goes in the next release."""

import sys

from polymodal.evaluate._moved import moved

sys.modules[__name__] = moved(__name__, "polymodal.metrics.vqa")
