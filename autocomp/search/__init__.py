"""The search: the space of per-layer plans and its cost tensor (``space``), the action and
observation spaces agents see (``spaces``), the reward (``reward``), the plan format (``plan``),
the resumable search loop (``loop``) and the accuracy-latency front (``pareto``)."""
