"""Errors about the data on disk, and the one-paragraph message to show a user for any error.

:class:`DataError` is what the data code raises when a file or folder is missing, unreadable,
corrupt or too large: a ``ValueError`` (so callers that catch bad input keep working) whose
message names the file and the fix.

With ``num_workers > 0`` an error raised while loading an item happens in a DataLoader worker
process. torch re-raises it in the main process as the same exception type, but with a message of
the form ``"Caught DataError in DataLoader worker process 0.\\nOriginal Traceback (most recent
call last): ..."``: our message comes last, after the worker's whole traceback.
:func:`user_message` recovers the message as written.

Example
-------
>>> from afno_repro.data.errors import DataError, user_message
>>> user_message(DataError("image file 'a.JPEG' is corrupt; delete it."))
"image file 'a.JPEG' is corrupt; delete it."
>>> wrapped = DataError(
...     "Caught DataError in DataLoader worker process 0.\\n"
...     "Original Traceback (most recent call last):\\n"
...     '  File "worker.py", line 1, in _worker_loop\\n'
...     "    data = fetcher.fetch(index)\\n"
...     "afno_repro.data.errors.DataError: image file 'a.JPEG' is corrupt; delete it.\\n"
... )
>>> user_message(wrapped)
"image file 'a.JPEG' is corrupt; delete it."
"""

from __future__ import annotations

import re

__all__ = ["DataError", "user_message"]

# torch.utils.data._utils.ExceptionWrapper.reraise writes "Caught <Type> <where>.\nOriginal
# <formatted traceback>"; the formatted traceback ends with the exception line "<Type>: <message>".
_WORKER_WRAPPER = re.compile(r"\ACaught \w+ in [^\n]*\.\nOriginal Traceback \(most recent call last\):\n")
_TRACEBACK_START = "Traceback (most recent call last):\n"
_EXCEPTION_LINE = re.compile(r"\A[\w.]+: ")


class DataError(ValueError):
    """A dataset file or folder cannot be used; the message names it and says how to fix it.

    The constructor takes just the message, like ``ValueError``: torch rebuilds the exception from
    a message when it re-raises a worker's error, and keeps the type only if that works.
    """


def user_message(error: BaseException) -> str:
    """The message of ``error`` without the DataLoader worker wrapper torch adds around it.

    Parameters
    ----------
    error: any exception; one re-raised from a DataLoader worker process has the worker's
        traceback in its message, which is removed.

    Returns
    -------
    ``str(error)`` for an exception raised in this process; for a worker's exception, the
    original message, without the ``"Caught ... in DataLoader worker process N"`` line, the
    traceback and the ``"<Type>: "`` prefix. A message that does not parse is returned whole.
    """
    message = str(error)
    if not _WORKER_WRAPPER.match(message):
        return message
    # The last traceback is the re-raised exception's own (earlier ones are its causes); its
    # frame lines are indented, the exception line is the first one that is not.
    frames_and_exception = message[message.rfind(_TRACEBACK_START) + len(_TRACEBACK_START) :].splitlines()
    for position, line in enumerate(frames_and_exception):
        if not line.startswith(" "):
            exception = "\n".join(frames_and_exception[position:]).strip()
            return _EXCEPTION_LINE.sub("", exception, count=1) if _EXCEPTION_LINE.match(exception) else exception
    return message
