"""gst-python plugin file for the `mmadinfer` element (the element itself: mmad.runtime.gst_element).

gst-python's plugin loader (libgstpython, 1.22) keeps a borrowed pointer to `sys.path` while it imports
the plugin files of each folder, and inserts the next folder into it afterwards. Importing OpenCV (which
the element needs) replaces `sys.path` with a copy (cv2's bootstrap ends with `sys.path = save_sys_path`),
so the loader's list would be freed and then written to: heap corruption that crashed gst-launch-1.0 later,
at random. The original list is kept, with the new contents, as `sys.path`.
"""

import sys

_LOADER_SYS_PATH = sys.path

from mmad.runtime.gst_element import __gstelementfactory__  # noqa: E402, F401  -- what gst-python's loader looks for

if sys.path is not _LOADER_SYS_PATH:
    _LOADER_SYS_PATH[:] = sys.path
    sys.path = _LOADER_SYS_PATH
