"""The survey tables: every technique at every ratio on every layer, for a built-in model
(``builtin``) or a user's own (``custom``)."""
