"""One compression run's steps: prepare a built-in model, select, materialize and fine-tune its
plan (``pipeline``), the same for a user's own model (``custom``), and what a run writes, prints
and tracks (``outputs``, ``report``, ``tracking``)."""
