"""The root of pushserver's own errors: one ``except PushserverError`` catches every refusal the server raises.

Beneath it, each where it is raised:

- ``config.ConfigError``: a setting that cannot work (exit status 2);
- ``auth.TokenError``: a subscription token that cannot be used;
- ``protocol.ProtocolError``: a client request the server refuses, with its error code;
- ``replay.ReplayError``: a replay that cannot start or go on, and beneath it
  ``replay.BadInput``: an input record that is not an event.
"""

from __future__ import annotations


class PushserverError(Exception):
    """Something pushserver refuses or cannot do; the message is one line meant for a person."""
