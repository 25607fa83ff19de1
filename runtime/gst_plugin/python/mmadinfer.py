"""gst-python plugin file for the `mmadinfer` element (the element itself: mmad.runtime.gst_element)."""

from mmad.runtime.gst_element import __gstelementfactory__  # noqa: F401  -- what gst-python's loader looks for
